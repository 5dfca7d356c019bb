package spawn

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxFrame bounds one control message. The bootstrap carries the target's
// encoded arguments, so it is generous, but a corrupt length must not make
// the reader allocate gigabytes.
const MaxFrame = 1 << 30

// WriteFrame writes one length-prefixed message.
func WriteFrame(w io.Writer, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("spawn: control message of %d bytes exceeds the %d-byte limit", len(payload), MaxFrame)
	}
	buf := make([]byte, 4+len(payload))
	binary.LittleEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[4:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one message written by WriteFrame. It returns io.EOF if the
// stream ended cleanly before the message, and io.ErrUnexpectedEOF if it
// ended inside one.
func ReadFrame(r io.Reader) ([]byte, error) { return ReadFrameMax(r, MaxFrame) }

// ReadFrameMax is ReadFrame for a message of at most max bytes, as read
// from a peer that is not trusted with more.
func ReadFrameMax(r io.Reader, max int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if int64(n) > int64(min(max, MaxFrame)) {
		return nil, fmt.Errorf("spawn: control message claims %d bytes, over the %d-byte limit", n, min(max, MaxFrame))
	}
	// Grow as data arrives rather than trusting n up front.
	buf := make([]byte, 0, min(int(n), 64<<10))
	for len(buf) < int(n) {
		chunk := min(int(n)-len(buf), 1<<20)
		start := len(buf)
		buf = append(buf, make([]byte, chunk)...)
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

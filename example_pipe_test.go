package mp_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/multiproc/mp"
)

// TrySend does not wait for a reader: on a full pipe it returns ErrFull.
// SendContext waits, until its context ends.
func ExampleConn_TrySend() {
	r, w, _ := mp.Pipe(false)
	defer r.Close()
	defer w.Close()
	sent := 0
	for w.TrySend(sent) == nil {
		sent++
	}
	fmt.Println(sent == mp.PipeSize, errors.Is(w.TrySend(0), mp.ErrFull))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	fmt.Println(w.SendContext(ctx, 0))
	// Output:
	// true true
	// context deadline exceeded
}

// RecvBytesInto reads into the caller's buffer, allocating nothing; a
// message longer than the buffer stays in the pipe, and the error says
// how long a buffer it needs.
func ExampleConn_RecvBytesInto() {
	r, w, _ := mp.Pipe(false)
	defer r.Close()
	defer w.Close()
	w.SendBytes([]byte("hi"))
	w.SendBytes([]byte("a longer message"))
	ctx := context.Background()
	buf := make([]byte, 8)
	for range 2 {
		n, err := r.RecvBytesInto(ctx, buf)
		var short *mp.BufferTooShortError
		if errors.As(err, &short) {
			fmt.Println(err)
			buf = make([]byte, short.Needed)
			n, err = r.RecvBytesInto(ctx, buf)
		}
		fmt.Printf("%q %v\n", buf[:n], err)
	}
	// Output:
	// "hi" <nil>
	// mp: the message is 16 bytes, longer than the buffer
	// "a longer message" <nil>
}

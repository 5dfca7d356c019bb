package ring

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/wait"
)

var (
	// ErrFull is returned by TryPut when the ring holds capacity messages.
	ErrFull = errors.New("ring: full")
	// ErrEmpty is returned by TryGet when no message is ready.
	ErrEmpty = errors.New("ring: empty")
	// ErrClosed is returned by puts after Close, and by gets once the ring
	// is closed and drained.
	ErrClosed = errors.New("ring: closed")
	// ErrTooLarge is returned by puts of messages longer than MaxMessage.
	ErrTooLarge = errors.New("ring: message too large")
	// ErrCorrupt is returned (wrapped) by gets that find a cell whose
	// contents cannot be valid; the cell is consumed.
	ErrCorrupt = errors.New("ring: corrupt cell")
	// ErrBadRing is returned (wrapped) by Open for an offset that is not a
	// ring.
	ErrBadRing = errors.New("ring: not a ring")
)

const (
	// MaxMessage is the longest message a ring carries.
	MaxMessage = 64 << 20
	// DefaultInline is the longest message New's rings carry inline.
	DefaultInline = 96
	// MaxInline is the largest inline capacity NewSized accepts.
	MaxInline = 1 << 20
	// MaxCapacity is the largest capacity New accepts.
	MaxCapacity = 1 << 24

	magic = 0x31474e4952504d6d // "mMPRING1"

	// Header words (byte offsets in the ring's block).
	hdrMagic      = 0
	hdrCap        = 8  // uint32
	hdrCellSize   = 12 // uint32
	hdrClosed     = 16 // uint32
	hdrLost       = 24
	hdrSkipped    = 32
	hdrSpare      = 40 // uint64: bytes of the blocks kept as spares
	hdrTail       = 64
	hdrHead       = 128
	hdrNotEmpty   = 192 // uint32 futex word
	hdrGetWaiters = 196 // uint32
	hdrNotFull    = 256 // uint32 futex word
	hdrPutWaiters = 260 // uint32
	hdrSize       = 512

	cellHdr = 32

	flagOOL  = 1
	flagSkip = 2

	// How long a cell may stay claimed by the same owner before a waiter
	// checks that the owner is alive; also the futex wait's poll.
	poll = 50 * time.Millisecond
	// Spinning before parking: tries with runtime.Gosched in between.
	spinTries = 200

	// Out-of-line blocks of up to spareMax bytes are kept in their cell
	// for the next message, up to spareBudget bytes per ring.
	spareMax    = 64 << 10
	spareBudget = 8 << 20
)

// cell is the fixed part of a cell; the inline payload follows it.
type cell struct {
	state uint64
	len   uint32
	flags uint32
	ool   uint64
	spare uint64
}

// Ring is a process's handle on a ring in the arena. Its methods may be
// called concurrently from any number of goroutines.
type Ring struct {
	a   *shm.Arena
	off shm.Offset

	tail, head          *uint64
	lost, skipped       *uint64
	spare               *uint64
	closed              *uint32
	notEmpty, getWaiter *uint32
	notFull, putWaiter  *uint32

	cells    unsafe.Pointer
	cellSize uintptr
	capacity uint64
	mask     uint64
	limit    uint64 // see SetLimit; 0 for capacity
	inline   int

	me uint32 // owner tag of this process

	getGate, putGate chan struct{}
	getStuck         stuck
	idle             func()
	putStuck         stuck
}

// New creates a ring for up to capacity messages (rounded up to a power of
// two, at least 2) with cells holding DefaultInline bytes inline, and
// returns its offset, which any process of the tree can Open.
func New(a *shm.Arena, capacity int) (shm.Offset, error) {
	return NewSized(a, capacity, DefaultInline)
}

// NewSized is New with cells holding messages of up to inline bytes
// inline (rounded up so that cells are a multiple of 64 bytes); longer
// messages are stored in blocks allocated from the arena.
func NewSized(a *shm.Arena, capacity, inline int) (shm.Offset, error) {
	if capacity <= 0 || capacity > MaxCapacity {
		return 0, fmt.Errorf("ring: capacity %d out of range (1 to %d)", capacity, MaxCapacity)
	}
	if inline < 0 || inline > MaxInline {
		return 0, fmt.Errorf("ring: inline size %d out of range (0 to %d)", inline, MaxInline)
	}
	c := uint64(2)
	for c < uint64(capacity) {
		c <<= 1
	}
	cellSize := (uint64(cellHdr+inline) + 63) &^ 63
	off, err := a.Alloc(int(hdrSize + c*cellSize))
	if err != nil {
		return 0, fmt.Errorf("ring: %w", err)
	}
	mem := a.Bytes(off, int(hdrSize+c*cellSize))
	le := func(o int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[o])) }
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[hdrCap])), uint32(c))
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[hdrCellSize])), uint32(cellSize))
	for i := uint64(0); i < c; i++ {
		atomic.StoreUint64(le(int(hdrSize+i*cellSize)), i) // FREE for position i
	}
	atomic.StoreUint64(le(hdrMagic), magic)
	return off, nil
}

// Open returns a handle on the ring at off, created by New in this process
// or another of the tree. It fails with an error wrapping ErrBadRing if off
// does not hold a ring.
func Open(a *shm.Arena, off shm.Offset) (*Ring, error) {
	size, err := a.BlockSize(off)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRing, err)
	}
	if size < hdrSize {
		return nil, fmt.Errorf("%w: block of %d bytes at %#x", ErrBadRing, size, uint64(off))
	}
	mem := a.Bytes(off, size)
	if atomic.LoadUint64((*uint64)(unsafe.Pointer(&mem[hdrMagic]))) != magic {
		return nil, fmt.Errorf("%w: bad magic at %#x", ErrBadRing, uint64(off))
	}
	c := uint64(atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[hdrCap]))))
	cellSize := uint64(atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[hdrCellSize]))))
	if c < 2 || c > MaxCapacity || c&(c-1) != 0 || cellSize < 64 || cellSize%64 != 0 ||
		cellSize > cellHdr+MaxInline+64 || hdrSize+c*cellSize > uint64(size) {
		return nil, fmt.Errorf("%w: corrupt header at %#x (capacity %d, cell size %d, block %d bytes)",
			ErrBadRing, uint64(off), c, cellSize, size)
	}
	u32 := func(o int) *uint32 { return (*uint32)(unsafe.Pointer(&mem[o])) }
	u64 := func(o int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[o])) }
	return &Ring{
		a:         a,
		off:       off,
		tail:      u64(hdrTail),
		head:      u64(hdrHead),
		lost:      u64(hdrLost),
		skipped:   u64(hdrSkipped),
		spare:     u64(hdrSpare),
		closed:    u32(hdrClosed),
		notEmpty:  u32(hdrNotEmpty),
		getWaiter: u32(hdrGetWaiters),
		notFull:   u32(hdrNotFull),
		putWaiter: u32(hdrPutWaiters),
		cells:     unsafe.Pointer(&mem[hdrSize]),
		cellSize:  uintptr(cellSize),
		capacity:  c,
		mask:      c - 1,
		inline:    int(cellSize - cellHdr),
		me:        selfTag(),
		getGate:   make(chan struct{}, 1),
		putGate:   make(chan struct{}, 1),
	}, nil
}

// Offset returns the ring's offset in the arena.
func (r *Ring) Offset() shm.Offset { return r.off }

// Cap returns the ring's capacity in messages.
func (r *Ring) Cap() int { return int(r.capacity) }

// Inline returns the longest message the ring stores inline.
func (r *Ring) Inline() int { return r.inline }

// Len returns a snapshot of the number of messages queued (including those
// being put or got at this moment, and cells given back by puts that failed
// after claiming them, which gets pass over).
func (r *Ring) Len() int {
	h := atomic.LoadUint64(r.head)
	t := atomic.LoadUint64(r.tail)
	if t <= h {
		return 0
	}
	if r.limit != 0 {
		return int(min(t-h, r.limit))
	}
	return int(min(t-h, r.capacity))
}

// Lost returns how many messages were taken by a consumer that died before
// it had finished taking them: they were never delivered.
func (r *Ring) Lost() int { return int(atomic.LoadUint64(r.lost)) }

// Skipped returns how many puts by producers that died before finishing
// them were discarded: their Put never returned, their message is never
// delivered.
func (r *Ring) Skipped() int { return int(atomic.LoadUint64(r.skipped)) }

// Closed reports whether Close has been called.
func (r *Ring) Closed() bool { return atomic.LoadUint32(r.closed) != 0 }

// Close makes further puts fail with ErrClosed; gets return the messages
// still queued, then ErrClosed. Blocked callers are woken. A Put that
// overlaps Close either succeeds, and its message is delivered, or returns
// ErrClosed. Close is idempotent.
func (r *Ring) Close() {
	atomic.StoreUint32(r.closed, 1)
	atomic.AddUint32(r.notEmpty, 1)
	atomic.AddUint32(r.notFull, 1)
	wait.Wake(r.notEmpty, math.MaxInt32)
	wait.Wake(r.notFull, math.MaxInt32)
	r.Trim()
}

// SetLimit makes puts through r treat the ring as full once n messages
// are in it, counting those being put or taken, for 0 < n < Cap: a maxsize
// that is not a power of two. It reads only the ring's cells, so it is as
// exact under SIGKILL as the ring itself: a message being put by a
// process killed before it published counts until the ring skips it, one
// being taken by a process killed until it is counted lost. Every handle
// of the ring must be given the same limit before it is used.
func (r *Ring) SetLimit(n int) {
	if n > 0 && uint64(n) < r.capacity {
		r.limit = uint64(n)
	}
}

func (r *Ring) cell(pos uint64) *cell {
	return (*cell)(unsafe.Add(r.cells, uintptr(pos&r.mask)*r.cellSize))
}

func (r *Ring) payload(c *cell) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(c), cellHdr)), r.inline)
}

func mkState(seq, owner uint32) uint64 { return uint64(seq) | uint64(owner)<<32 }

// status of an attempt that did not complete.
type status int

const (
	done   status = iota
	full          // no free cell (put) or no ready cell (get)
	busy          // the cell at the position is claimed by someone else: st tells who
	closed        // the ring is closed (and, for gets, drained)
)

// TryPut queues msg if there is room, without blocking. It returns nil,
// ErrFull, ErrClosed, ErrTooLarge, or an error wrapping shm.ErrNoSpace if
// the message is too long to be inline and the arena has no room for it.
func (r *Ring) TryPut(msg []byte) error { return r.TryPutPair(msg, nil) }

// TryPutPair is TryPut of the message head followed by body, without
// joining them first.
func (r *Ring) TryPutPair(head, body []byte) error {
	if err := checkLen(head, body); err != nil {
		return err
	}
	if ok, err := r.putOnce(head, body); ok {
		return err
	}
	return ErrFull
}

// Put queues msg, blocking while the ring is full. It returns nil, ctx's
// error, or the errors of TryPut except ErrFull.
func (r *Ring) Put(ctx context.Context, msg []byte) error { return r.PutPair(ctx, msg, nil) }

// PutPair is Put of the message head followed by body, without joining
// them first.
func (r *Ring) PutPair(ctx context.Context, head, body []byte) error {
	if err := checkLen(head, body); err != nil {
		return err
	}
	ok, err := r.putOnce(head, body)
	if ok {
		return err
	}
	if werr := r.park(ctx, r.putGate, r.notFull, r.putWaiter, func() bool {
		ok, err = r.putOnce(head, body)
		return ok
	}); werr != nil {
		return werr
	}
	return err
}

func checkLen(head, body []byte) error {
	if n := len(head) + len(body); n > MaxMessage {
		return fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, n, MaxMessage)
	}
	return nil
}

// putOnce makes one attempt at queueing head+body, recovering the cell in
// the way if its claimer has been dead for a poll interval. ok is false if
// the ring is full; otherwise err is the outcome.
func (r *Ring) putOnce(head, body []byte) (ok bool, err error) {
	s, pos, st, err := r.tryPut(head, body)
	if s == busy && r.putStuck.due(pos, st) && r.recoverPut(pos, st) {
		s, _, _, err = r.tryPut(head, body)
	}
	switch s {
	case done:
		return true, err
	case closed:
		return true, ErrClosed
	}
	return false, nil
}

// tryPut makes one attempt at queueing the message head+body. It returns done (with an error
// if the out-of-line block could not be allocated: the cell was given back
// as a skip), closed, full, or busy when the ring is full because of a
// claimed cell of the previous lap, with that cell's position and state.
//
// A message too long to be inline is copied into an arena block allocated
// once the cell is claimed, and the block is recorded in the cell right
// away: a producer killed while holding the cell leaks nothing (bar the
// few instructions between the allocator's commit and the record), and one
// blocked on a full ring holds no block.
func (r *Ring) tryPut(head, body []byte) (status, uint64, uint64, error) {
	n := len(head) + len(body)
	pos := atomic.LoadUint64(r.tail)
	for {
		c := r.cell(pos)
		st := atomic.LoadUint64(&c.state)
		seq, owner := uint32(st), uint32(st>>32)
		d := int32(seq - uint32(pos))
		switch {
		case d == 0 && owner == 0:
			if atomic.LoadUint32(r.closed) != 0 {
				return closed, 0, 0, nil
			}
			if r.limit != 0 && pos >= r.limit {
				// Full unless the message limit places back has been
				// taken: its cell has moved on to its next lap.
				q := pos - r.limit
				qst := atomic.LoadUint64(&r.cell(q).state)
				if int32(uint32(qst)-uint32(q+r.capacity)) < 0 {
					if t := atomic.LoadUint64(r.tail); t != pos {
						pos = t
						continue
					}
					if uint32(qst>>32) != 0 {
						return busy, q, qst, nil
					}
					return full, 0, 0, nil
				}
			}
			if !atomic.CompareAndSwapUint64(&c.state, st, mkState(seq, r.me)) {
				pos = atomic.LoadUint64(r.tail)
				continue
			}
			hook(hookPutClaimed)
			atomic.CompareAndSwapUint64(r.tail, pos, pos+1)
			var err error
			c.len = uint32(n)
			if n > r.inline {
				c.flags = flagOOL
				var off shm.Offset
				if off, err = r.oolBlock(c, n); err == nil {
					copy(r.a.Bytes(off, n)[copy(r.a.Bytes(off, n), head):], body)
				} else {
					err = fmt.Errorf("ring: out-of-line message of %d bytes: %w", n, err)
					c.flags = flagSkip
					atomic.StoreUint64(&c.ool, 0)
				}
			} else {
				c.flags = 0
				atomic.StoreUint64(&c.ool, 0) // 0 already, unless the cell was corrupt
				p := r.payload(c)
				copy(p[copy(p, head):], body)
			}
			hook(hookPutWritten)
			s := done
			if err == nil && atomic.LoadUint32(r.closed) != 0 {
				// Close came between the check above and the claim: a
				// consumer may have seen the ring drained. Give the cell
				// back as a skip.
				c.flags = flagSkip
				if off := atomic.SwapUint64(&c.ool, 0); off != 0 {
					r.a.Free(shm.Offset(off))
				}
				s = closed
			}
			atomic.StoreUint64(&c.state, mkState(seq+1, 0)) // READY
			if atomic.LoadUint32(r.getWaiter) != 0 {
				atomic.AddUint32(r.notEmpty, 1)
				wait.Wake(r.notEmpty, 1)
			}
			return s, 0, 0, err
		case d >= 0:
			// Claimed at pos already (or tail is stale): move tail on.
			atomic.CompareAndSwapUint64(r.tail, pos, pos+1)
			pos = atomic.LoadUint64(r.tail)
		default:
			// The cell is still in the previous lap: full, if tail has not
			// moved meanwhile.
			t := atomic.LoadUint64(r.tail)
			if t != pos {
				pos = t
				continue
			}
			if atomic.LoadUint32(r.closed) != 0 {
				return closed, 0, 0, nil
			}
			if owner != 0 {
				return busy, pos, st, nil
			}
			return full, 0, 0, nil
		}
	}
}

// TryGet takes the next message without blocking and returns it appended
// to dst[:0]. It returns ErrEmpty if no message is ready, ErrClosed if the
// ring is closed and drained, or an error wrapping ErrCorrupt.
func (r *Ring) TryGet(dst []byte) ([]byte, error) { return r.TryGetWith(dst, nil) }

// CopyOut copies a message out of shared memory: it is given the message
// in place, valid only until it returns (and which a faulty process could
// be writing to, so it must not trust it twice), and dst, and returns what
// Get is to return. Nil means append(dst[:0], msg...).
type CopyOut func(dst, msg []byte) []byte

// TryGetWith is TryGet with the message copied out by copyOut.
func (r *Ring) TryGetWith(dst []byte, copyOut CopyOut) ([]byte, error) {
	for {
		msg, s, pos, st, err := r.tryGet(dst, copyOut)
		if s == busy && r.getStuck.due(pos, st) && r.recoverGet(pos, st) {
			continue
		}
		switch s {
		case done:
			return msg, err
		case closed:
			return nil, ErrClosed
		}
		return nil, ErrEmpty
	}
}

// Get takes the next message, blocking while the ring is empty, and
// returns it appended to dst[:0]. It returns ctx's error, ErrClosed once the
// ring is closed and drained, or an error wrapping ErrCorrupt.
func (r *Ring) Get(ctx context.Context, dst []byte) ([]byte, error) {
	return r.GetWith(ctx, dst, nil)
}

// GetWith is Get with the message copied out by copyOut.
func (r *Ring) GetWith(ctx context.Context, dst []byte, copyOut CopyOut) ([]byte, error) {
	msg, err := r.TryGetWith(dst, copyOut)
	if err != ErrEmpty {
		return msg, err
	}
	if werr := r.waitGet(ctx, func() bool {
		msg, err = r.TryGetWith(dst, copyOut)
		return err != ErrEmpty
	}); werr != nil {
		return nil, werr
	}
	return msg, err
}

// WaitReady blocks until a message is ready to be taken or the ring is
// closed (and drained), without taking anything. It returns nil or ctx's
// error. With several consumers, the message may be gone by the time the
// caller tries to take it.
func (r *Ring) WaitReady(ctx context.Context) error {
	if r.Ready() {
		return nil
	}
	return r.waitGet(ctx, r.Ready)
}

// Ready reports whether a Get would not block now: a message is ready at
// the head, or the ring is closed and drained.
func (r *Ring) Ready() bool {
	isClosed := atomic.LoadUint32(r.closed) != 0
	pos := atomic.LoadUint64(r.head)
	st := atomic.LoadUint64(&r.cell(pos).state)
	seq, owner := uint32(st), uint32(st>>32)
	if seq == uint32(pos+1) && owner == 0 {
		return true
	}
	return isClosed && r.Len() == 0
}

// park waits, as a blocked putter or getter (gate, futex word and waiter
// count of that direction), until attempt reports success or ctx ends. It
// returns ctx's error, or nil (the attempt keeps its own result). It spins
// first; then one goroutine per process registers as a waiter, re-checks,
// and sleeps on the word, which the other side bumps only when it sees a
// waiter registered.
func (r *Ring) park(ctx context.Context, gate chan struct{}, word, waiters *uint32, attempt func() bool) error {
	for range spinTries {
		runtime.Gosched()
		if attempt() {
			return nil
		}
	}
	select {
	case gate <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-gate }()
	for {
		v := atomic.LoadUint32(word)
		atomic.AddUint32(waiters, 1)
		if attempt() {
			atomic.AddUint32(waiters, ^uint32(0))
			return nil
		}
		werr := wait.Wait(ctx, word, v, poll)
		atomic.AddUint32(waiters, ^uint32(0))
		if werr != nil {
			// Pass on a wake-up this waiter may have absorbed.
			atomic.AddUint32(word, 1)
			wait.Wake(word, 1)
			return werr
		}
		r.runIdle()
	}
}

func (r *Ring) waitGet(ctx context.Context, attempt func() bool) error {
	return r.park(ctx, r.getGate, r.notEmpty, r.getWaiter, attempt)
}

// SetIdle installs f, which blocked Gets, Puts and WaitReadys of this
// handle call each time they wake without having succeeded (at least
// every poll interval while they wait). It lets the owner of the handle
// check for conditions the ring cannot see, such as a peer that died, and
// Close the ring to end the wait. It must be called before the handle is
// used concurrently.
func (r *Ring) SetIdle(f func()) { r.idle = f }

func (r *Ring) runIdle() {
	if r.idle != nil {
		r.idle()
	}
}

// tryGet makes one attempt at taking a message. When the cell at head is
// being written, it returns busy with its position and state.
func (r *Ring) tryGet(dst []byte, copyOut CopyOut) ([]byte, status, uint64, uint64, error) {
	isClosed := atomic.LoadUint32(r.closed) != 0
	pos := atomic.LoadUint64(r.head)
	for {
		c := r.cell(pos)
		st := atomic.LoadUint64(&c.state)
		seq, owner := uint32(st), uint32(st>>32)
		d := int32(seq - uint32(pos+1))
		switch {
		case d == 0 && owner == 0:
			if !atomic.CompareAndSwapUint64(&c.state, st, mkState(seq, r.me)) {
				pos = atomic.LoadUint64(r.head)
				continue
			}
			hook(hookGetClaimed)
			atomic.CompareAndSwapUint64(r.head, pos, pos+1)
			msg, skip, err := r.read(c, dst, copyOut)
			hook(hookGetFreed)
			atomic.StoreUint64(&c.state, mkState(uint32(pos+r.capacity), 0)) // FREE, next lap
			r.wakePutter()
			if skip {
				pos = atomic.LoadUint64(r.head)
				continue
			}
			return msg, done, 0, 0, err
		case d >= 0:
			// Claimed by another consumer already (or head is stale).
			atomic.CompareAndSwapUint64(r.head, pos, pos+1)
			pos = atomic.LoadUint64(r.head)
		default:
			h := atomic.LoadUint64(r.head)
			if h != pos {
				pos = h
				continue
			}
			if owner != 0 {
				// d == -1: being written; d < -1: the previous lap is
				// still being read, so there is nothing to get.
				if d < -1 && isClosed {
					return nil, closed, 0, 0, nil
				}
				return nil, busy, pos, st, nil
			}
			if isClosed {
				return nil, closed, 0, 0, nil
			}
			return nil, full, 0, 0, nil
		}
	}
}

func (r *Ring) wakePutter() {
	if atomic.LoadUint32(r.putWaiter) != 0 {
		atomic.AddUint32(r.notFull, 1)
		wait.Wake(r.notFull, 1)
	}
}

// read copies the message of a cell this process has claimed, validating
// everything it reads, and frees its out-of-line block.
func (r *Ring) read(c *cell, dst []byte, copyOut CopyOut) (msg []byte, skip bool, err error) {
	n, flags := c.len, c.flags
	if dst == nil {
		dst = []byte{}
	}
	switch {
	case flags == flagSkip:
		return nil, true, nil
	case flags == 0:
		if int64(n) > int64(r.inline) {
			return nil, false, fmt.Errorf("%w: inline length %d, cells hold %d", ErrCorrupt, n, r.inline)
		}
		return copyOut.run(dst, r.payload(c)[:n]), false, nil
	case flags == flagOOL:
		ool := shm.Offset(atomic.LoadUint64(&c.ool))
		if n > MaxMessage {
			atomic.StoreUint64(&c.ool, 0)
			return nil, false, fmt.Errorf("%w: length %d", ErrCorrupt, n)
		}
		size, err := r.a.BlockSize(ool)
		if err != nil || size < int(n) || n == 0 {
			atomic.StoreUint64(&c.ool, 0)
			return nil, false, fmt.Errorf("%w: out-of-line block %#x of %d bytes for a %d-byte message (%v)",
				ErrCorrupt, uint64(ool), size, n, err)
		}
		msg = copyOut.run(dst, r.a.Bytes(ool, int(n)))
		hook(hookGetRead)
		if off := atomic.SwapUint64(&c.ool, 0); off != 0 {
			r.keepOrFree(c, shm.Offset(off), size)
		}
		return msg, false, nil
	default:
		atomic.StoreUint64(&c.ool, 0)
		return nil, false, fmt.Errorf("%w: flags %#x", ErrCorrupt, flags)
	}
}

func (f CopyOut) run(dst, msg []byte) []byte {
	if f == nil {
		return append(dst[:0], msg...)
	}
	return f(dst, msg)
}

// oolBlock returns a block of at least n bytes for the cell c, which this
// process has claimed, and records it in the cell: the cell's spare if it
// is big enough, else a new one. The spare is forgotten before it is
// recorded as the message's block, so that no block is ever recorded
// twice (a producer killed in between leaks it).
func (r *Ring) oolBlock(c *cell, n int) (shm.Offset, error) {
	if sp := shm.Offset(atomic.SwapUint64(&c.spare, 0)); sp != 0 {
		size, err := r.a.BlockSize(sp)
		if err == nil {
			atomic.AddUint64(r.spare, ^uint64(size-1))
			if size >= n {
				atomic.StoreUint64(&c.ool, uint64(sp))
				return sp, nil
			}
			r.a.Free(sp)
		}
	}
	off, err := r.a.Alloc(n)
	if errors.Is(err, shm.ErrNoSpace) && atomic.LoadUint64(r.spare) != 0 {
		// This ring's own spares may be what fills the arena.
		r.Trim()
		off, err = r.a.Alloc(n)
	}
	if err != nil {
		return 0, err
	}
	atomic.StoreUint64(&c.ool, uint64(off))
	return off, nil
}

// keepOrFree disposes of the out-of-line block off, of size bytes, whose
// message this process has just taken from the cell c: it becomes the
// cell's spare for the next lap's message if it is small, the cell has
// none, and the ring's spares are within budget; otherwise it is freed.
// Reusing the block saves two arena operations per message, which for
// messages of a few KiB are most of the cost.
func (r *Ring) keepOrFree(c *cell, off shm.Offset, size int) {
	if size <= spareMax && atomic.LoadUint64(&c.spare) == 0 && atomic.LoadUint32(r.closed) == 0 &&
		atomic.LoadUint64(r.spare)+uint64(size) <= spareBudget {
		atomic.AddUint64(r.spare, uint64(size))
		atomic.StoreUint64(&c.spare, uint64(off))
		return
	}
	r.a.Free(off)
}

// Trim frees the blocks kept in cells for reuse. It may be called at any
// time; Close calls it, and a closed ring keeps no more blocks.
func (r *Ring) Trim() {
	for i := uint64(0); i < r.capacity; i++ {
		c := r.cell(i)
		if sp := shm.Offset(atomic.SwapUint64(&c.spare, 0)); sp != 0 {
			if size, err := r.a.BlockSize(sp); err == nil {
				atomic.AddUint64(r.spare, ^uint64(size-1))
				r.a.Free(sp)
			}
		}
	}
}

// recoverGet is called by a consumer that has found the cell at head
// position pos claimed, with state st, for a poll interval; recoverPut by a
// producer that has found the cell at tail position pos claimed in the
// previous lap for a poll interval. If the owner is dead, the cell is
// taken over and released for the next lap.
func (r *Ring) recoverGet(pos, st uint64) bool { return r.recoverCell(r.cell(pos), st) }
func (r *Ring) recoverPut(pos, st uint64) bool { return r.recoverCell(r.cell(pos), st) }

// Reclaim looks at every cell and releases those claimed by processes that
// have died, counting their messages in Lost or Skipped, and returns how
// many it released. Puts and gets do this by themselves for the cells they
// wait on; Reclaim is for an owner that learns a process died and wants the
// counters to be exact at once (or the ring is closed and nobody waits).
func (r *Ring) Reclaim() int {
	n := 0
	for i := range r.capacity {
		c := r.cell(i)
		if st := atomic.LoadUint64(&c.state); st>>32 != 0 && r.recoverCell(c, st) {
			n++
		}
	}
	return n
}

// recoverCell takes over a cell claimed with state st by a process that
// has died, and releases it for the next lap without delivering its
// message. The cell's index tells the phase: a WRITING cell for position
// p has seq p, a READING one seq p+1, and p is the cell's index modulo the
// capacity (which is at least 2).
func (r *Ring) recoverCell(c *cell, st uint64) bool {
	owner := uint32(st >> 32)
	if owner == 0 || owner == r.me || ownerAlive(owner) {
		return false
	}
	idx := uint64(uintptr(unsafe.Pointer(c))-uintptr(r.cells)) / uint64(r.cellSize)
	seq := uint32(st)
	reading := uint64(seq)&r.mask != idx
	p32 := seq
	if reading {
		p32--
	}
	if !atomic.CompareAndSwapUint64(&c.state, st, mkState(seq, r.me)) {
		return false // someone else moved first
	}
	hook(hookRecovering)
	// The position as a 64-bit counter value, from head (it is within a
	// lap of it); the CASes below only move counters that are exactly there.
	h := atomic.LoadUint64(r.head)
	pos := h + uint64(int64(int32(p32-uint32(h))))
	atomic.CompareAndSwapUint64(r.tail, pos, pos+1)
	atomic.CompareAndSwapUint64(r.head, pos, pos+1)
	if off := atomic.SwapUint64(&c.ool, 0); off != 0 {
		// Only a block the dead process recorded itself is freed; check
		// it is one, in case the cell is corrupt.
		if _, err := r.a.BlockSize(shm.Offset(off)); err == nil {
			r.a.Free(shm.Offset(off))
		}
	}
	if reading {
		atomic.AddUint64(r.lost, 1)
	} else {
		atomic.AddUint64(r.skipped, 1)
	}
	atomic.StoreUint64(&c.state, mkState(p32+uint32(r.capacity), 0))
	r.wakePutter()
	// Consumers may be parked behind this cell.
	atomic.AddUint32(r.notEmpty, 1)
	wait.Wake(r.notEmpty, math.MaxInt32)
	return true
}

// stuck remembers the claimed cell a process has been waiting on, to check
// its owner's liveness only once the same claim has lasted a poll interval.
type stuck struct {
	mu    sync.Mutex
	pos   uint64
	st    uint64
	since time.Time
}

// due records that the cell of position pos is claimed with state st and
// reports whether it has been so for a poll interval (restarting the
// interval if so).
func (s *stuck) due(pos, st uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.pos != pos || s.st != st || s.since.IsZero() {
		s.pos, s.st, s.since = pos, st, now
		return false
	}
	if now.Sub(s.since) < poll {
		return false
	}
	s.since = now
	return true
}

// Owner tags: pid in the low 22 bits (Linux's PID_MAX_LIMIT is 2^22), the
// low 10 bits of the start time above; 0 start bits mean "not checked".
const (
	pidBits  = 22
	pidMask  = 1<<pidBits - 1
	startLow = 1<<(32-pidBits) - 1
)

var selfTag = sync.OnceValue(func() uint32 {
	id := proc.Self()
	return uint32(id.Pid)&pidMask | uint32(id.Start&startLow)<<pidBits
})

// ownerAlive reports whether the process a tag names may still run.
func ownerAlive(tag uint32) bool {
	return proc.AliveStartBits(int(tag&pidMask), uint64(tag>>pidBits), 32-pidBits)
}

// Test hooks: points where a test may kill the process.
type hookPoint int

const (
	hookPutClaimed hookPoint = iota + 1 // producer holds a WRITING cell, tail not yet moved
	hookPutWritten                      // message written, not yet published
	hookGetClaimed                      // consumer holds a READING cell, head not yet moved
	hookGetRead                         // out-of-line message copied, block not yet freed
	hookGetFreed                        // message copied and block freed, cell not yet released
	hookRecovering                      // a recoverer holds a dead process's cell
)

var testHook func(hookPoint)

// SetTestHook installs f (nil removes it) to run at each of the ring's kill
// points, numbered 1 (a WRITING cell claimed) to 6 (a dead process's cell
// being recovered) as above, for the kill tests of packages built on the
// ring. It must be called before the process uses a ring.
func SetTestHook(f func(point int)) {
	if f == nil {
		testHook = nil
		return
	}
	testHook = func(p hookPoint) { f(int(p)) }
}

func hook(p hookPoint) {
	if testHook != nil {
		testHook(p)
	}
}

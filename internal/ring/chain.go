package ring

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/wait"
)

// Ring is a process's handle on a ring in the arena. Its methods may be
// called concurrently from any number of goroutines.
//
// A ring is a chain of segments, each a bounded ring of its own; a ring
// made by New has one. Producers put into the last segment; when it is
// full and the ring may grow, one of them makes a segment twice as big,
// links it after the last, and seals the last, so that further puts go to
// the new one. Consumers drain a sealed segment before they move on to the
// next, so every producer's messages are taken in the order it put them.
// Segments are freed by Destroy.
type Ring struct {
	a     *shm.Arena
	root  *seg
	limit uint64 // the limit of a NewGrowing ring (0: unbounded), or the one segment's capacity

	// The segments this process puts into and gets from. older, for a
	// bounded ring that grew, is the first of the sealed segments before
	// put whose messages may not all have been taken yet: they count
	// against the limit.
	put, get, older atomic.Pointer[seg]

	idle func()

	// How long this process's blocked Puts and Gets spin.
	putSpin, getSpin spinner
}

// idleScan is how many cells behind head a blocked Get looks at each poll
// interval for messages a corrupt head left behind.
const idleScan = 4096

// maxSegments bounds the walk along a chain, against a corrupt link that
// makes a cycle: no arena holds that many segments.
const maxSegments = 1 << 12

// Open returns a handle on the ring at off, created by New, NewSized or
// NewGrowing in this process or another of the tree. It fails with an
// error wrapping ErrBadRing if off does not hold a ring.
func Open(a *shm.Arena, off shm.Offset) (*Ring, error) {
	root, err := openSeg(a, off, nil)
	if err != nil {
		return nil, err
	}
	r := &Ring{a: a, root: root, limit: root.limit}
	// Find the first segment not yet drained and the last.
	get, last := root, root
	for i := 0; ; i++ {
		if i == maxSegments {
			return nil, fmt.Errorf("%w: more than %d segments at %#x", ErrBadRing, maxSegments, uint64(off))
		}
		n, err := r.nextOf(last)
		if err != nil && !errors.Is(err, errNotReady) {
			return nil, err
		}
		if n == nil {
			break
		}
		if get == last && last.drained() {
			get = n
		}
		last = n
	}
	r.get.Store(get)
	r.put.Store(last)
	if get != last && r.root.limit != 0 {
		r.older.Store(get)
	}
	return r, nil
}

// growable reports whether the ring the segment belongs to may grow: a
// NewGrowing ring, whose limit is 0 (unbounded) or above the capacity of
// its first segment. A NewSized ring records its capacity as its limit.
func (r *seg) growable() bool { return r.limit == 0 || r.limit > r.capacity }

// drained reports whether the segment is sealed and empty.
func (r *seg) drained() bool { return r.Closed() && r.Len() == 0 }

// nextOf returns the segment after s, nil if there is none yet, or
// errNotReady if it is being made.
func (r *Ring) nextOf(s *seg) (*seg, error) {
	if n := s.nextSeg.Load(); n != nil {
		return n, nil
	}
	off := shm.Offset(atomic.LoadUint64(s.next))
	if off == 0 {
		return nil, nil
	}
	if off == s.off || off == r.root.off {
		return nil, fmt.Errorf("%w: segment %#x links back to %#x", ErrCorrupt, uint64(s.off), uint64(off))
	}
	n, err := openSeg(r.a, off, r.root)
	if err != nil {
		if errors.Is(err, errNotReady) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: next segment of %#x: %v", ErrCorrupt, uint64(s.off), err)
	}
	if n.capacity < s.capacity {
		return nil, fmt.Errorf("%w: segment %#x of %d cells after one of %d", ErrCorrupt, uint64(off), n.capacity, s.capacity)
	}
	if !s.nextSeg.CompareAndSwap(nil, n) {
		n = s.nextSeg.Load()
	}
	return n, nil
}

// segments calls f for every segment this process can open, first to
// last.
func (r *Ring) segments(f func(*seg)) {
	s := r.root
	for i := 0; s != nil && i < maxSegments; i++ {
		f(s)
		s, _ = r.nextOf(s)
	}
}

// Offset returns the ring's offset in the arena.
func (r *Ring) Offset() shm.Offset { return r.root.off }

// Cap returns the ring's capacity in messages: the most it holds (for a
// growing ring, the most it grows to hold), or 0 for a ring without limit.
func (r *Ring) Cap() int { return int(r.limit) }

// SetLimit makes puts treat a ring made by New as full while the message
// n places before the next one is not yet taken (queued, or being put, or
// being taken), for 0 < n < Cap: a maxsize that is not a power of two. At
// most n messages are then ever queued or being put. It reads only the
// ring's cells, so it is as exact under SIGKILL as the ring itself: a
// message being put by a process killed before it published counts until
// the ring skips it, one being taken by a process killed until the ring
// counts it lost. Every handle of the ring must be given the same limit
// before it is used. It does nothing for a growing ring.
func (r *Ring) SetLimit(n int) {
	s := r.root
	if n > 0 && uint64(n) < s.capacity && r.limit == s.capacity && atomic.LoadUint64(s.next) == 0 {
		s.exact = uint64(n)
	}
}

// Inline returns the longest message the ring stores inline.
func (r *Ring) Inline() int { return r.root.inline }

// Len returns a snapshot of the number of messages queued (including those
// being put or got at this moment, and cells given back by puts that failed
// after claiming them, which gets pass over).
func (r *Ring) Len() int {
	s := r.get.Load()
	n := s.Len()
	for i := 0; i < maxSegments; i++ {
		if s, _ = r.nextOf(s); s == nil {
			break
		}
		n += s.Len()
	}
	return n
}

// Lost returns how many messages were taken by a consumer that died before
// it had finished taking them: they were never delivered.
func (r *Ring) Lost() int {
	if r.root.nextSeg.Load() == nil && atomic.LoadUint64(r.root.next) == 0 {
		return r.root.Lost()
	}
	n := 0
	r.segments(func(s *seg) { n += s.Lost() })
	return n
}

// Skipped returns how many puts by producers that died before finishing
// them were discarded: their Put never returned, their message is never
// delivered.
func (r *Ring) Skipped() int {
	n := 0
	r.segments(func(s *seg) { n += s.Skipped() })
	return n
}

// Closed reports whether Close has been called.
func (r *Ring) Closed() bool { return atomic.LoadUint32(r.root.chainClosed) != 0 }

// Close makes further puts fail with ErrClosed; gets return the messages
// still queued, then ErrClosed. Blocked callers are woken. A Put that
// overlaps Close either succeeds, and its message is delivered, or returns
// ErrClosed. Close is idempotent.
func (r *Ring) Close() {
	atomic.StoreUint32(r.root.chainClosed, 1)
	// A segment being made when this walk ends is sealed by its maker,
	// which checks chainClosed after linking it (see grow).
	r.segments((*seg).Close)
}

// Trim frees the blocks kept in cells for reuse. It may be called at any
// time; Close calls it, and a closed ring keeps no more blocks.
func (r *Ring) Trim() { r.segments((*seg).Trim) }

// Reclaim looks at every cell and releases those claimed by processes that
// have died, counting their messages in Lost or Skipped, and returns how
// many it released. Puts and gets do this by themselves for the cells they
// wait on; Reclaim is for an owner that learns a process died and wants the
// counters to be exact at once (or the ring is closed and nobody waits).
func (r *Ring) Reclaim() int {
	n := 0
	r.segments(func(s *seg) { n += s.Reclaim() })
	return n
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

// TryPut queues msg if there is room, without blocking. It returns nil,
// ErrFull, ErrClosed, ErrTooLarge, or an error wrapping shm.ErrNoSpace if
// the message is too long to be inline, or the ring must grow, and the
// arena has no room for it.
func (r *Ring) TryPut(msg []byte) error { return r.TryPutPair(msg, nil) }

// TryPutPair is TryPut of the message head followed by body, without
// joining them first.
func (r *Ring) TryPutPair(head, body []byte) error {
	if err := checkLen(head, body); err != nil {
		return err
	}
	if r.older.Load() == nil {
		if ok, err := r.put.Load().putOnce(head, body); ok && err != ErrClosed {
			return err
		}
	}
	var deadline time.Time
	for {
		ok, err, _, growing := r.putSlow(head, body)
		switch {
		case ok:
			return err
		case !growing:
			return ErrFull
		}
		// Another process is making the next segment, which takes it
		// well under a poll interval unless it is stopped.
		if deadline.IsZero() {
			deadline = time.Now().Add(poll)
		} else if time.Now().After(deadline) {
			return ErrFull
		}
		runtime.Gosched()
	}
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
	if r.older.Load() == nil {
		if ok, err := r.put.Load().putOnce(head, body); ok && err != ErrClosed {
			return err
		}
	}
	for {
		ok, err, w, _ := r.putSlow(head, body)
		if ok {
			return err
		}
		var checked time.Time
		if werr := r.park(ctx, &r.putSpin, w.putGate, w.notFull, w.putWaiter, func(spinning bool) bool {
			ok, err, _, _ = r.putSlow(head, body)
			if !ok && !spinning {
				// Waiting on the futex: look for corrupt indices that
				// would keep the ring full for good, once a poll interval.
				if now := time.Now(); now.Sub(checked) >= poll {
					checked = now
					if cerr := w.checkStalled(idleScan); cerr != nil {
						ok, err = true, cerr
					}
				}
			}
			return ok || r.putTarget() != w
		}); werr != nil {
			return werr
		}
		if ok {
			return err
		}
	}
}

// putTarget returns the segment whose space a full put waits for: put's,
// or while a bounded ring is growing, the first segment not drained, from
// which consumers take.
func (r *Ring) putTarget() *seg {
	if o := r.older.Load(); o != nil {
		return o
	}
	return r.put.Load()
}

// queuedBefore returns the messages in the segments before s, which
// consumers take first, for a bounded ring that grew: from older, which it
// moves past the segments it finds drained, to s. It returns the first
// segment not drained, nil if that is s.
func (r *Ring) queuedBefore(s *seg) (int, *seg) {
	o := r.older.Load()
	if o == nil {
		return 0, nil
	}
	n := 0
	var first *seg
	for x, i := o, 0; x != nil && x != s && i < maxSegments; i++ {
		if first == nil && !x.drained() {
			first = x
		}
		if first != nil {
			n += x.Len()
		}
		x, _ = r.nextOf(x)
	}
	return n, first
}

// putSlow makes one attempt at putting, moving on to the next segment if
// the last is sealed and growing the ring if it is full and may grow. ok
// is false if the ring is full, and w is then the segment whose space the
// put is to wait for; or if another process is making the next segment
// (growing), which seals w once it is done.
func (r *Ring) putSlow(head, body []byte) (ok bool, err error, w *seg, growing bool) {
	for {
		s := r.put.Load()
		full := false
		if o := r.older.Load(); o != nil && !s.Closed() {
			// The messages of the segments grown from still count.
			n, first := r.queuedBefore(s)
			if first != o {
				r.older.CompareAndSwap(o, first)
			}
			full = first != nil && uint64(n+s.Len()) >= s.capacity
		}
		if !full {
			ok, err := s.putOnce(head, body)
			if ok && err != ErrClosed {
				return true, err, nil, false
			}
			full = !ok
		}
		if full && !s.growable() {
			return false, nil, r.putTarget(), false
		}
		// Sealed, or full and the ring may grow.
		n, err := r.advance(s)
		if err != nil {
			return true, err, nil, false
		}
		if n == nil {
			return false, nil, s, true // the maker of the next segment is at work
		}
		if r.put.CompareAndSwap(s, n) && r.root.limit != 0 && !s.drained() {
			r.older.CompareAndSwap(nil, s)
		}
	}
}

// advance returns the segment after s for a producer that found s sealed
// or full, making it if need be. It returns nil if another process is
// making it, or ErrClosed if the ring is closed.
func (r *Ring) advance(s *seg) (*seg, error) {
	n, err := r.nextOf(s)
	switch {
	case err == nil && n != nil:
		// Whoever made n may have died before sealing s; no put must go
		// to s once one has gone to n.
		s.Close()
		if atomic.LoadUint32(s.chainClosed) != 0 {
			n.Close()
		}
		return n, nil
	case err != nil && !errors.Is(err, errNotReady):
		return nil, err
	}
	if cl := atomic.LoadUint32(s.chainClosed); cl == 1 {
		return nil, ErrClosed
	} else if cl != 0 {
		return nil, fmt.Errorf("%w: ring closed word %#x", ErrCorrupt, cl)
	}
	if err == nil && s.Closed() {
		// Sealed without a next segment: only Close does that, and it
		// sets chainClosed first.
		return nil, fmt.Errorf("%w: segment %#x sealed with no next segment", ErrCorrupt, uint64(s.off))
	}
	if r.root.limit != 0 && s.capacity >= r.root.limit {
		return nil, nil
	}
	return r.grow(s)
}

// grow makes the segment after s, twice its size (up to the limit, or
// MaxCapacity), links it from s, and seals s. Only one process does it,
// the one whose tag is in s's grow word, which anyone may take over from
// a dead process (and then finishes its work: initSeg may be repeated on
// a segment not in use yet). It returns nil if another live process holds
// the word.
func (r *Ring) grow(s *seg) (*seg, error) {
	for {
		g := atomic.LoadUint32(s.grow)
		if g == s.me {
			return nil, nil // another goroutine of this process is at it
		}
		if g != 0 && ownerAlive(g) {
			return nil, nil
		}
		if atomic.CompareAndSwapUint32(s.grow, g, s.me) {
			break
		}
	}
	// The word stays ours once the segment is made: a process that takes
	// it over from us after we died finds the segment made.
	if n, err := r.nextOf(s); n != nil || (err != nil && !errors.Is(err, errNotReady)) {
		if n != nil {
			hook(hookGrowSeal)
			s.Close()
			if atomic.LoadUint32(s.chainClosed) != 0 {
				n.Close()
			}
		}
		return n, err
	}
	c := s.capacity * 2
	if r.root.limit != 0 {
		c = min(c, r.root.limit)
	}
	c = min(c, MaxCapacity)
	cellSize := uint64(s.cellSize)
	off := shm.Offset(atomic.LoadUint64(s.next))
	if off == 0 {
		hook(hookGrowAlloc)
		var err error
		// AllocTo records the block in s's next word in the same step:
		// a process killed here leaves it allocated and linked, or
		// neither.
		if off, err = r.a.AllocTo(segBytes(c, cellSize), s.off+hdrNext); err != nil {
			atomic.StoreUint32(s.grow, 0)
			return nil, fmt.Errorf("ring: grow to %d messages: %w", c, err)
		}
	} else if size, err := r.a.BlockSize(off); err != nil || size < segBytes(c, cellSize) {
		return nil, fmt.Errorf("%w: next segment %#x of %d bytes (%v)", ErrCorrupt, uint64(off), size, err)
	}
	hook(hookGrowInit)
	initSeg(r.a.Bytes(off, segBytes(c, cellSize)), c, cellSize, r.root.limit)
	n, err := r.nextOf(s)
	if err != nil || n == nil {
		return nil, fmt.Errorf("%w: segment %#x after it was made: %v", ErrCorrupt, uint64(off), err)
	}
	hook(hookGrowSeal)
	s.Close()
	if atomic.LoadUint32(s.chainClosed) != 0 {
		n.Close()
	}
	return n, nil
}

// finishGrowth makes the segment after s that a process killed while it
// was growing the ring left allocated but not made, if no live process is
// at it, and reports whether it did. Consumers do it as well as producers:
// after Close no producer would, and the messages queued after s would
// never be reached.
func (r *Ring) finishGrowth(s *seg) bool {
	if g := atomic.LoadUint32(s.grow); g == 0 || g == s.me || ownerAlive(g) {
		return false
	}
	n, err := r.grow(s)
	return n != nil && err == nil
}

// TryGet takes the next message without blocking and returns it appended
// to dst[:0]. It returns ErrEmpty if no message is ready, ErrClosed if the
// ring is closed and drained, or an error wrapping ErrCorrupt.
func (r *Ring) TryGet(dst []byte) ([]byte, error) { return r.TryGetWith(dst, nil) }

// TryGetWith is TryGet with the message copied out by copyOut.
func (r *Ring) TryGetWith(dst []byte, copyOut CopyOut) ([]byte, error) {
	return r.tryGetWith(dst, copyOut, -1)
}

// TryGetInto is TryGet into buf: it copies the next message into buf and
// returns its length, without allocating. A message longer than buf is
// left in the ring: TryGetInto then returns its length and ErrShortBuffer.
func (r *Ring) TryGetInto(buf []byte) (int, error) {
	msg, err := r.tryGetWith(buf[:0], nil, len(buf))
	return into(msg, err)
}

// GetInto is Get into buf, as TryGetInto.
func (r *Ring) GetInto(ctx context.Context, buf []byte) (int, error) {
	msg, err := r.getWith(ctx, buf[:0], nil, len(buf))
	return into(msg, err)
}

func into(msg []byte, err error) (int, error) {
	if err != nil {
		if se, ok := err.(*shortError); ok {
			return se.n, ErrShortBuffer
		}
		return 0, err
	}
	return len(msg), nil
}

func (r *Ring) tryGetWith(dst []byte, copyOut CopyOut, limit int) ([]byte, error) {
	for {
		s := r.get.Load()
		msg, err := s.tryGetWith(dst, copyOut, limit)
		if err != ErrClosed {
			return msg, err
		}
		// s is sealed and drained: the messages put since are in the
		// next segment, if the ring is not closed.
		n, nerr := r.nextOf(s)
		switch {
		case nerr != nil && errors.Is(nerr, errNotReady):
			if r.finishGrowth(s) {
				continue
			}
			return nil, ErrEmpty
		case nerr != nil:
			return nil, nerr
		case n == nil:
			// Only Close seals the last segment, and it marks the ring
			// closed first.
			if cl := atomic.LoadUint32(s.chainClosed); cl != 1 || atomic.LoadUint32(s.closed) != 1 {
				return nil, fmt.Errorf("%w: segment %#x sealed (%#x), ring closed %#x", ErrCorrupt, uint64(s.off),
					atomic.LoadUint32(s.closed), cl)
			}
			return nil, ErrClosed
		}
		r.get.CompareAndSwap(s, n)
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
	return r.getWith(ctx, dst, copyOut, -1)
}

func (r *Ring) getWith(ctx context.Context, dst []byte, copyOut CopyOut, limit int) ([]byte, error) {
	msg, err := r.tryGetWith(dst, copyOut, limit)
	for err == ErrEmpty {
		s := r.get.Load()
		var scanned time.Time
		if werr := r.park(ctx, &r.getSpin, s.getGate, s.notEmpty, s.getWaiter, func(spinning bool) bool {
			msg, err = r.tryGetWith(dst, copyOut, limit)
			if err == ErrEmpty && !spinning {
				// Waiting on the futex: look for corrupt indices (and
				// messages a corrupt head left behind), once a poll
				// interval.
				if now := time.Now(); now.Sub(scanned) >= poll {
					scanned = now
					if serr := s.checkStalled(idleScan); serr != nil {
						msg, err = nil, serr
					}
				}
			}
			return err != ErrEmpty || r.get.Load() != s
		}); werr != nil {
			return nil, werr
		}
	}
	return msg, err
}

// WaitReady blocks until a message is ready to be taken or the ring is
// closed (and drained), without taking anything. It returns nil or ctx's
// error. With several consumers, the message may be gone by the time the
// caller tries to take it.
func (r *Ring) WaitReady(ctx context.Context) error {
	for !r.Ready() {
		s := r.get.Load()
		if werr := r.park(ctx, &r.getSpin, s.getGate, s.notEmpty, s.getWaiter, func(bool) bool {
			return r.Ready() || r.get.Load() != s
		}); werr != nil {
			return werr
		}
	}
	return nil
}

// Ready reports whether a Get would not block now: a message is ready at
// the head, or the ring is closed and drained.
func (r *Ring) Ready() bool {
	for range maxSegments {
		s := r.get.Load()
		msg, drained := s.ready()
		if msg || !drained {
			return msg
		}
		n, err := r.nextOf(s)
		if errors.Is(err, errNotReady) && r.finishGrowth(s) {
			continue
		}
		if err != nil {
			return !errors.Is(err, errNotReady) // a corrupt ring: Get reports it
		}
		if n == nil {
			return true
		}
		r.get.CompareAndSwap(s, n)
	}
	return true
}

// park waits, as a blocked putter or getter (gate, futex word and waiter
// count of that direction in one segment), until attempt reports success
// or ctx ends. It returns ctx's error, or nil (the attempt keeps its own
// result). It spins first, as sp decides (attempt is told it is spinning);
// then one goroutine per process registers as a waiter, re-checks, and
// sleeps on the word, which the other side bumps only when it sees a waiter
// registered.
func (r *Ring) park(ctx context.Context, sp *spinner, gate chan struct{}, word, waiters *uint32, attempt func(spinning bool) bool) error {
	if sp.spin(attempt) {
		return nil
	}
	start := time.Now()
	select {
	case gate <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-gate }()
	for {
		v := atomic.LoadUint32(word)
		atomic.AddUint32(waiters, 1)
		if attempt(false) {
			atomic.AddUint32(waiters, ^uint32(0))
			sp.waited(time.Since(start))
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

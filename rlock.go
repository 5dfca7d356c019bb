package mp

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
)

// RLock is a reentrant lock shared by every process of the tree, Python's
// multiprocessing.RLock: the goroutine that holds it may acquire it again,
// and must release it as many times.
//
// The owner is a goroutine of a process (its pid and goroutine id), which
// stays the same when the Go scheduler moves the goroutine between OS
// threads. Finding the calling goroutine's id costs about a microsecond, so
// an RLock is slower than a Lock.
//
// As with Lock, if the owning process dies holding it, the next acquirer gets
// it with ErrOwnerDied.
//
// The zero RLock is not usable: make one with NewRLock. Its methods panic
// with an error wrapping ErrInvalidHandle; Close does nothing.
type RLock struct {
	h     handle
	m     mutex
	owner *uint64 // goroutine id of the owner, when held
	count *uint32 // how many times the owner holds it
}

// NewRLock returns a new, unlocked RLock.
func NewRLock() (*RLock, error) {
	h, err := alloc(kindRLock, 64)
	if err != nil {
		return nil, err
	}
	return newRLock(h), nil
}

func newRLock(h handle) *RLock {
	return &RLock{h: h, m: mutex{state: h.u64(0), loc: h.loc}, owner: h.u64(8), count: h.u32(16)}
}

// Acquire takes the lock, or takes it once more if the calling goroutine
// holds it already. It blocks until then or until ctx ends, and returns nil,
// ErrOwnerDied (the caller holds the lock once; the dead owner's count is
// gone), or ctx.Err().
func (r *RLock) Acquire(ctx context.Context) error {
	r.check()
	g := goid()
	if r.reenter(g) {
		return nil
	}
	err := r.m.lock(ctx)
	if err != nil && err != ErrOwnerDied {
		return err
	}
	atomic.StoreUint64(r.owner, g)
	atomic.StoreUint32(r.count, 1)
	return err
}

// TryAcquire is Acquire without blocking; it reports whether the caller now
// holds the lock.
func (r *RLock) TryAcquire() bool {
	r.check()
	g := goid()
	if r.reenter(g) {
		return true
	}
	if !r.m.tryLock() {
		return false
	}
	atomic.StoreUint64(r.owner, g)
	atomic.StoreUint32(r.count, 1)
	return true
}

// reenter counts one more acquisition if goroutine g holds the lock.
func (r *RLock) reenter(g uint64) bool {
	if r.m.ownedHere() && atomic.LoadUint64(r.owner) == g {
		atomic.AddUint32(r.count, 1)
		return true
	}
	return false
}

// Release releases the lock once; the last release unlocks it. It returns
// ErrNotAcquired if the calling goroutine does not hold the lock.
func (r *RLock) Release() error {
	r.check()
	if !r.m.ownedHere() || atomic.LoadUint64(r.owner) != goid() {
		return fmt.Errorf("%w: RLock released by a goroutine that does not hold it", ErrNotAcquired)
	}
	if atomic.AddUint32(r.count, ^uint32(0)) > 0 {
		return nil
	}
	atomic.StoreUint64(r.owner, 0)
	return r.m.unlock()
}

// Lock is Acquire with no deadline, for sync.Locker. Like Lock.Lock, it
// swallows ErrOwnerDied: use Acquire to learn of a holder's death.
func (r *RLock) Lock() { r.Acquire(context.Background()) }

// Unlock is Release; it panics if the caller does not hold the lock.
func (r *RLock) Unlock() {
	if err := r.Release(); err != nil {
		panic(err)
	}
}

func (r *RLock) check() {
	if !r.h.valid() {
		panic(fmt.Errorf("%w: an RLock must be made with NewRLock", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the lock's handle.
func (r *RLock) MarshalBinary() ([]byte, error) { return r.h.marshal() }

// UnmarshalBinary makes r refer to the RLock that data encodes.
func (r *RLock) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindRLock, data); err != nil {
		return err
	}
	*r = *newRLock(h)
	return nil
}

// goid returns the calling goroutine's id, from the first line of its
// stack trace ("goroutine 18 [running]:"). Go hides goroutine ids on
// purpose; an RLock's owner is the one place where a stable identity for
// "the calling thread of execution" is the documented semantics.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

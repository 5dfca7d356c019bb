package mp

import (
	"context"
	"fmt"
)

// Lock is a mutual-exclusion lock shared by the goroutines of every process
// of the tree, Python's multiprocessing.Lock. It lives in the tree's shared
// memory; pass it to child processes as an argument (or inside a struct, or
// through a queue) and every copy refers to the same lock.
//
// A Lock is not reentrant: a second Acquire by its holder blocks, as in
// Python (see RLock). It may be released by any goroutine of any process.
//
// Unlike Python's, a Lock survives the death of its holder: if a process
// holding it is killed, the next acquirer gets the lock together with
// ErrOwnerDied. Waiters park without holding OS threads.
//
// Beware: Lock, the sync.Locker method, swallows ErrOwnerDied. A goroutine
// that takes the lock with Lock after its holder was killed gets it as if
// nothing had happened, though what the lock protects may be half changed.
// Where that matters, use Acquire, the robust form:
//
//	if err := l.Acquire(ctx); errors.Is(err, mp.ErrOwnerDied) {
//		// We hold the lock; its previous holder died holding it:
//		// check or repair what it protects.
//	} else if err != nil {
//		return err // ctx ended: we do not hold the lock
//	}
//	defer l.Release()
//
// The zero Lock is not usable: make one with NewLock. Its methods panic with
// an error wrapping ErrInvalidHandle; Close does nothing.
type Lock struct {
	h handle
	m mutex
}

// NewLock returns a new, unlocked Lock. It fails only if the tree's shared
// memory cannot be created or is full.
func NewLock() (*Lock, error) {
	h, err := alloc(kindLock, lockBlock)
	if err != nil {
		return nil, err
	}
	return newLock(h), nil
}

// lockBlock is the size of a Lock's block.
const lockBlock = 64

func newLock(h handle) *Lock { return &Lock{h: h, m: mutex{state: h.u64(0), loc: h.loc}} }

// Acquire blocks until it holds the lock, or ctx ends. It returns nil, or
// ErrOwnerDied if the previous holder died holding the lock (the caller then
// holds it), or ctx.Err() (the caller does not hold it). A context that ends
// while waiting leaves the lock as it was.
func (l *Lock) Acquire(ctx context.Context) error {
	l.check()
	return l.m.lock(ctx)
}

// TryAcquire takes the lock if it is free, without blocking, and reports
// whether it did.
func (l *Lock) TryAcquire() bool {
	l.check()
	return l.m.tryLock()
}

// Release unlocks the lock. Releasing an unlocked Lock returns
// ErrNotAcquired, as Python raises ValueError.
func (l *Lock) Release() error {
	l.check()
	return l.m.unlock()
}

// Lock acquires the lock, blocking as long as it takes; with Unlock it makes
// a Lock a sync.Locker. It swallows ErrOwnerDied: the death of the previous
// holder, which may have left what the lock protects half changed, is not
// reported. Use Acquire to learn of it (see Lock).
func (l *Lock) Lock() { l.Acquire(context.Background()) }

// Unlock releases the lock; it panics if the lock is not held, as
// sync.Mutex does.
func (l *Lock) Unlock() {
	if err := l.Release(); err != nil {
		panic(err)
	}
}

func (l *Lock) check() {
	if !l.h.valid() {
		panic(fmt.Errorf("%w: a Lock must be made with NewLock", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the handle of the lock (not its state), so that the
// lock can travel to another process of the tree.
func (l *Lock) MarshalBinary() ([]byte, error) { return l.h.marshal() }

// UnmarshalBinary makes l refer to the lock that data encodes. It returns an
// error wrapping ErrInvalidHandle if data is not a Lock's handle of this
// process tree.
func (l *Lock) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindLock, data); err != nil {
		return err
	}
	*l = *newLock(h)
	return nil
}

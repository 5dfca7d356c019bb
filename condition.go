package mp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/wait"
)

// Locker is a lock a Condition can be built on: *Lock and *RLock implement
// it. (NewCondition accepts only those two, because the condition keeps a
// reference to its lock in shared memory so that both travel together to
// other processes.)
type Locker interface {
	sync.Locker
	Acquire(ctx context.Context) error
	Release() error
}

var (
	_ Locker = (*Lock)(nil)
	_ Locker = (*RLock)(nil)
)

// ErrTooManyWaiters is returned by Condition.Wait when MaxConditionWaiters
// goroutines, in all processes together, are already waiting on the
// condition.
var ErrTooManyWaiters = errors.New("mp: too many waiters on the condition")

// MaxConditionWaiters is how many goroutines (of all processes together)
// can wait on one Condition at the same time.
const MaxConditionWaiters = 1020

// MaxConditionWaiters must be the number of slots in a Condition's block (this
// does not compile otherwise).
const _ = uint(MaxConditionWaiters-condSlots) + uint(condSlots-MaxConditionWaiters)

// Condition is a condition variable shared by every process of the tree,
// Python's multiprocessing.Condition: goroutines holding its lock Wait until
// another goroutine, in any process, calls Notify or NotifyAll.
//
// Notify(n) wakes exactly min(n, number of waiters) of the goroutines that
// were waiting when it was called, the longest-waiting first; a goroutine
// that starts to wait afterwards cannot take one of those wake-ups. For
// that guarantee Notify must be called with the lock held, as Python
// requires (without it, a waiter that is just starting to wait may or may
// not be counted).
//
// At most MaxConditionWaiters goroutines can wait at once; beyond that,
// Wait returns ErrTooManyWaiters.
//
// A process killed while waiting leaves its registration behind. Notify
// checks, cheaply (kill(pid, 0)), that a waiter of another process still
// exists before notifying it, and drops the registrations of processes that
// do not, so a dead waiter does not absorb a notification. A process that
// was killed but not yet reaped by its parent still exists for this check;
// as with any waiter that dies after being woken, its notification is then
// lost. When the table of waiters is full, Wait first frees the entries of
// dead processes.
//
// The zero Condition is not usable: make one with NewCondition. Its methods
// panic with an error wrapping ErrInvalidHandle; Close does nothing.
type Condition struct {
	h     handle
	lock  Locker
	l     *Lock  // the lock, if a Lock
	r     *RLock // the lock, if an RLock
	own   bool   // the lock's handle was made for the Condition (decoded), not given
	tick  *uint32
	hw    *uint32
	nwait *uint32
}

// Block layout: a 64-byte header, then the waiter slots.
const (
	condLockKind = 0  // u32: kind of the lock
	condLockOff  = 8  // u64: arena offset of the lock
	condTicket   = 16 // u32: last ticket handed out
	condHigh     = 20 // u32: slots ever used (Notify scans no further)
	condWaiting  = 24 // u32: slots in state waiting (a hint for Notify)
	condLockRef  = 32 // u64: the reference to the lock the Condition holds

	condHeader    = 64
	condSlotSize  = 16 // state, ticket, pid, start32 (all u32)
	condBlockSize = 16 << 10
	condSlots     = (condBlockSize - condHeader) / condSlotSize // 1020

	slotFree     = 0
	slotClaiming = 1 // being filled in by its waiter
	slotWaiting  = 2
	slotNotified = 3
)

// NewCondition returns a new Condition using lock, which must be a *Lock
// or an *RLock; a nil lock means a new RLock, as in Python.
func NewCondition(lock Locker) (*Condition, error) {
	if lock == nil {
		r, err := NewRLock()
		if err != nil {
			return nil, err
		}
		lock = r
	}
	var lh handle
	switch l := lock.(type) {
	case *Lock:
		if l == nil || !l.h.valid() {
			return nil, fmt.Errorf("%w: a Condition's Lock must be made with NewLock", ErrInvalidHandle)
		}
		lh = l.h
	case *RLock:
		if l == nil || !l.h.valid() {
			return nil, fmt.Errorf("%w: a Condition's RLock must be made with NewRLock", ErrInvalidHandle)
		}
		lh = l.h
	default:
		return nil, fmt.Errorf("%w: a Condition's lock must be a *mp.Lock or an *mp.RLock, not %T", ErrBadArguments, lock)
	}
	h, err := alloc(kindCondition, condBlockSize)
	if err != nil {
		return nil, err
	}
	atomic.StoreUint32(h.u32(condLockKind), uint32(lh.kind))
	atomic.StoreUint64(h.u64(condLockOff), uint64(lh.off))
	if err := h.contain(condLockRef, &lh); err != nil {
		h.close()
		return nil, err
	}
	return openCondition(h, lock), nil
}

func openCondition(h handle, lock Locker) *Condition {
	c := &Condition{h: h, lock: lock, tick: h.u32(condTicket), hw: h.u32(condHigh), nwait: h.u32(condWaiting)}
	switch l := lock.(type) {
	case *Lock:
		c.l = l
	case *RLock:
		c.r = l
	}
	return c
}

// slot returns the words of waiter slot i.
func (c *Condition) slot(i int) (state, ticket, pid, start *uint32) {
	off := uintptr(condHeader + i*condSlotSize)
	return c.h.u32(off), c.h.u32(off + 4), c.h.u32(off + 8), c.h.u32(off + 12)
}

// Acquire acquires the underlying lock (see Lock.Acquire, RLock.Acquire).
func (c *Condition) Acquire(ctx context.Context) error {
	c.check()
	return c.lock.Acquire(ctx)
}

// Release releases the underlying lock.
func (c *Condition) Release() error {
	c.check()
	return c.lock.Release()
}

// Lock acquires the underlying lock; with Unlock it makes a Condition a
// sync.Locker. Like Lock.Lock, it swallows ErrOwnerDied: use Acquire to
// learn of a holder's death.
func (c *Condition) Lock() {
	c.check()
	c.lock.Lock()
}

// Unlock releases the underlying lock, panicking if it is not held.
func (c *Condition) Unlock() {
	c.check()
	c.lock.Unlock()
}

// Wait releases the lock, which the caller must hold, waits until a Notify
// or NotifyAll wakes it or ctx ends, and acquires the lock again before it
// returns, whatever the outcome (even after ctx ended: as in Python, it
// then blocks until it has the lock back). An RLock is released completely
// however many times the caller holds it, and held as many times again
// afterwards.
//
// It returns nil when notified; ctx.Err() when ctx ended first; an error
// wrapping ErrOwnerDied if, while it waited, a process died holding the
// lock (the caller holds the lock, and should repair what it protects);
// ErrTooManyWaiters if MaxConditionWaiters goroutines are waiting already;
// and ErrNotAcquired, without waiting, if the caller does not hold the lock.
// Python allows spurious wake-ups; this Wait returns nil only when
// notified, but callers should still re-check their condition in a loop
// (or use WaitFor), since other goroutines may run between the
// notification and the re-acquisition of the lock.
func (c *Condition) Wait(ctx context.Context) error {
	c.check()
	if !c.held() {
		return fmt.Errorf("%w: Condition.Wait without holding the lock", ErrNotAcquired)
	}
	i, err := c.claim()
	if err != nil {
		return err
	}
	state, _, _, _ := c.slot(i)
	saved, err := c.releaseAll()
	if err != nil {
		c.leave(state)
		return fmt.Errorf("mp: Condition.Wait: %w", err)
	}
	var werr error
	for atomic.LoadUint32(state) == slotWaiting {
		if err := wait.Wait(ctx, state, slotWaiting, 0); err != nil {
			if atomic.CompareAndSwapUint32(state, slotWaiting, slotFree) {
				atomic.AddUint32(c.nwait, ^uint32(0))
				werr = err
			}
			// Otherwise a Notify got there first: take its wake-up.
			break
		}
	}
	if werr == nil {
		atomic.StoreUint32(state, slotFree) // consume the notification
	}
	if err := c.restore(saved); err != nil {
		if werr != nil {
			return errors.Join(werr, err)
		}
		return err
	}
	return werr
}

// WaitFor waits until pred returns true, as Python's wait_for: the caller
// holds the lock, pred is called with the lock held, first before waiting
// at all and then after each wake-up. ctx bounds the whole wait. It returns
// nil once pred is true (even if ctx ended meanwhile: pred is checked one
// last time), or the error of Wait.
func (c *Condition) WaitFor(ctx context.Context, pred func() bool) error {
	for !pred() {
		if err := c.Wait(ctx); err != nil {
			if ctx.Err() != nil && !errors.Is(err, ErrOwnerDied) && pred() {
				return nil
			}
			return err
		}
	}
	return nil
}

// Notify wakes up to n goroutines waiting on the condition, the ones that
// have waited longest first: exactly min(n, number waiting) of those that
// were waiting when it was called. The caller must hold the lock: it
// returns an error wrapping ErrNotAcquired, waking nobody, if the lock is
// not held by the calling process (an RLock: by the calling goroutine), as
// Python raises.
func (c *Condition) Notify(n int) error {
	c.check()
	if !c.held() {
		return fmt.Errorf("%w: Condition.Notify without holding the lock", ErrNotAcquired)
	}
	c.notify(n)
	return nil
}

// notify is Notify without the check that the caller holds the lock.
func (c *Condition) notify(n int) {
	if n <= 0 || atomic.LoadUint32(c.nwait) == 0 {
		return
	}
	type cand struct {
		i      int
		ticket uint32
	}
	var buf [16]cand
	cands := buf[:0]
	hw := min(int(atomic.LoadUint32(c.hw)), condSlots)
	for i := 0; i < hw; i++ {
		state, ticket, _, _ := c.slot(i)
		if atomic.LoadUint32(state) == slotWaiting {
			cands = append(cands, cand{i, atomic.LoadUint32(ticket)})
		}
	}
	if len(cands) > n {
		// Oldest first; tickets wrap around, so compare differences.
		slices.SortFunc(cands, func(a, b cand) int { return int(int32(a.ticket - b.ticket)) })
	}
	me := uint32(proc.Self().Pid)
	woken := 0
	for _, x := range cands {
		if woken == n {
			break
		}
		state, _, pid, _ := c.slot(x.i)
		if p := atomic.LoadUint32(pid); p != me && p != 0 && unix.Kill(int(p), 0) == unix.ESRCH {
			// A waiter of a process that is gone: free its slot.
			if atomic.CompareAndSwapUint32(state, slotWaiting, slotFree) {
				atomic.AddUint32(c.nwait, ^uint32(0))
			}
			continue
		}
		if atomic.CompareAndSwapUint32(state, slotWaiting, slotNotified) {
			atomic.AddUint32(c.nwait, ^uint32(0))
			wait.Wake(state, math.MaxInt32)
			woken++
		}
		// A failed CAS is a waiter whose ctx ended: it is not waiting.
	}
}

// NotifyAll wakes every goroutine waiting on the condition, in every
// process. The caller must hold the lock, as for Notify.
func (c *Condition) NotifyAll() error { return c.Notify(math.MaxInt) }

// held reports whether the caller holds the lock, as the lock records its
// owner: for an RLock, whether the calling goroutine owns it; for a Lock,
// which records only the owning process, whether this process holds it.
func (c *Condition) held() bool {
	if c.r != nil {
		return heldHere(c.r.m) && atomic.LoadUint64(c.r.owner) == goid()
	}
	return heldHere(c.l.m)
}

// heldHere reports whether this process holds m: the owner word names its
// pid and start time (a dead process that had this pid is not this one).
func heldHere(m mutex) bool {
	return atomic.LoadUint64(m.state)&^contended == self64()
}

// claim registers the caller as a waiter, in state waiting, and returns its
// slot.
func (c *Condition) claim() (int, error) {
	for attempt := 0; attempt < 2; attempt++ {
		for i := 0; i < condSlots; i++ {
			state, ticket, pid, start := c.slot(i)
			if atomic.LoadUint32(state) != slotFree || !atomic.CompareAndSwapUint32(state, slotFree, slotClaiming) {
				continue
			}
			me := self64()
			atomic.StoreUint32(ticket, atomic.AddUint32(c.tick, 1))
			atomic.StoreUint32(pid, uint32(me))
			atomic.StoreUint32(start, uint32(me>>32))
			for {
				hw := atomic.LoadUint32(c.hw)
				if int(hw) > i || atomic.CompareAndSwapUint32(c.hw, hw, uint32(i+1)) {
					break
				}
			}
			atomic.AddUint32(c.nwait, 1)
			atomic.StoreUint32(state, slotWaiting)
			return i, nil
		}
		if !c.sweep() {
			break
		}
	}
	return -1, fmt.Errorf("%w: %d goroutines are waiting already", ErrTooManyWaiters, condSlots)
}

// sweep frees the slots of dead processes, reporting whether it freed any.
func (c *Condition) sweep() bool {
	freed := false
	me := uint32(proc.Self().Pid)
	for i := 0; i < condSlots; i++ {
		state, _, pid, start := c.slot(i)
		s := atomic.LoadUint32(state)
		p := atomic.LoadUint32(pid)
		if s == slotFree || p == me || proc.AliveStart32(int(p), atomic.LoadUint32(start)) {
			continue
		}
		if atomic.CompareAndSwapUint32(state, s, slotFree) {
			if s == slotWaiting {
				atomic.AddUint32(c.nwait, ^uint32(0))
			}
			freed = true
		}
	}
	return freed
}

// leave withdraws a registration that did not wait.
func (c *Condition) leave(state *uint32) {
	if atomic.CompareAndSwapUint32(state, slotWaiting, slotFree) {
		atomic.AddUint32(c.nwait, ^uint32(0))
		return
	}
	// Notified already (by a Notify made without the lock): pass it on.
	atomic.StoreUint32(state, slotFree)
	c.notify(1)
}

// releaseAll releases the lock completely and returns what restore needs
// to take it back: an RLock's recursion count.
func (c *Condition) releaseAll() (uint32, error) {
	if c.r != nil {
		r := c.r
		if !heldHere(r.m) || atomic.LoadUint64(r.owner) != goid() {
			return 0, fmt.Errorf("%w: the RLock is not held by the caller", ErrNotAcquired)
		}
		n := atomic.SwapUint32(r.count, 0)
		atomic.StoreUint64(r.owner, 0)
		return n, r.m.unlock()
	}
	return 0, c.l.m.unlock()
}

// restore takes the lock back after Wait, without a deadline.
func (c *Condition) restore(count uint32) error {
	if c.r != nil {
		err := c.r.m.lock(context.Background())
		atomic.StoreUint64(c.r.owner, goid())
		atomic.StoreUint32(c.r.count, count)
		return err
	}
	return c.l.m.lock(context.Background())
}

func (c *Condition) check() {
	if !c.h.valid() {
		panic(fmt.Errorf("%w: a Condition must be made with NewCondition", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the condition's handle, which also identifies its
// lock.
func (c *Condition) MarshalBinary() ([]byte, error) { return c.h.marshal() }

// UnmarshalBinary makes c refer to the Condition that data encodes, and to
// its lock.
func (c *Condition) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindCondition, data); err != nil {
		return err
	}
	lk := kind(atomic.LoadUint32(h.u32(condLockKind)))
	lh, err := h.contained(condLockRef, lk, shm.Offset(atomic.LoadUint64(h.u64(condLockOff))))
	if err != nil {
		return fmt.Errorf("mp: the lock of a Condition: %w", err)
	}
	var lock Locker
	switch lk {
	case kindLock:
		lock = newLock(lh)
	case kindRLock:
		lock = newRLock(lh)
	default:
		return fmt.Errorf("%w: a Condition with a lock of kind %s", ErrInvalidHandle, lk)
	}
	*c = *openCondition(h, lock)
	c.own = true
	return nil
}

package mp

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/wait"
)

// Semaphore is a counter of permits shared by every process of the tree,
// Python's multiprocessing.Semaphore: Acquire takes a permit, waiting while
// there is none; Release returns one.
//
// Permits held by a process that dies are recovered: each process's net
// acquisitions are recorded beside the counter, and a waiter that finds no
// permit checks for dead holders and gives their permits back. (A process
// killed in the few instructions between taking a permit and recording it
// loses that one permit.) Up to holderSlots processes are tracked per
// semaphore; beyond that, permits of further processes are not recovered.
type Semaphore struct {
	h       handle
	count   *uint32 // permits available; the futex word
	bound   *uint32 // the initial value for a bounded semaphore, 0 otherwise
	waiters *uint32 // processes' goroutines currently parked
	holders holders // what each process holds, to recover a dead one's permits
}

// Block layout: counter words, then the holder table.
const (
	semTableOff  = 64
	semBlockSize = semTableOff + holdersSize
)

// NewSemaphore returns a semaphore with n permits.
func NewSemaphore(n int) (*Semaphore, error) { return newSemaphore(n, false) }

// NewBoundedSemaphore returns a semaphore with n permits whose Release
// fails with ErrNotAcquired if it would take the count above n, Python's
// BoundedSemaphore.
func NewBoundedSemaphore(n int) (*Semaphore, error) { return newSemaphore(n, true) }

func newSemaphore(n int, bounded bool) (*Semaphore, error) {
	if n < 0 || n >= math.MaxInt32 {
		return nil, fmt.Errorf("%w: semaphore value %d", ErrBadArguments, n)
	}
	if bounded && n == 0 {
		return nil, fmt.Errorf("%w: a bounded semaphore of 0 could never be released", ErrBadArguments)
	}
	h, err := alloc(kindSemaphore, semBlockSize)
	if err != nil {
		return nil, err
	}
	s := openSemaphore(h)
	atomic.StoreUint32(s.count, uint32(n))
	if bounded {
		atomic.StoreUint32(s.bound, uint32(n))
	}
	return s, nil
}

func openSemaphore(h handle) *Semaphore {
	s := &Semaphore{h: h, count: h.u32(0), bound: h.u32(4), waiters: h.u32(8)}
	s.holders.base = unsafe.Add(h.base, semTableOff)
	return s
}

// Acquire takes a permit, blocking until one is available or ctx ends. It
// returns nil or ctx.Err(); a cancelled Acquire takes nothing.
func (s *Semaphore) Acquire(ctx context.Context) error {
	s.check()
	if s.take() {
		return nil
	}
	return s.acquireSlow(ctx)
}

// TryAcquire takes a permit if one is available, without blocking, and
// reports whether it did.
func (s *Semaphore) TryAcquire() bool {
	s.check()
	return s.take()
}

func (s *Semaphore) take() bool {
	for {
		c := atomic.LoadUint32(s.count)
		if c == 0 {
			return false
		}
		if atomic.CompareAndSwapUint32(s.count, c, c-1) {
			s.holders.add(1)
			s.h.loc.raceAcquire()
			return true
		}
	}
}

func (s *Semaphore) acquireSlow(ctx context.Context) error {
	g := s.h.loc.gate
	select {
	case g <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g }()
	reclaimed := time.Now() // look for dead holders only after a poll interval
	for i := 0; ; i++ {
		if s.take() {
			return nil
		}
		if i < spins {
			continue
		}
		if time.Since(reclaimed) >= ownerPoll {
			reclaimed = time.Now()
			if s.reclaim() {
				continue
			}
		}
		atomic.AddUint32(s.waiters, 1)
		err := wait.Wait(ctx, s.count, 0, ownerPoll)
		atomic.AddUint32(s.waiters, ^uint32(0))
		if err != nil {
			// Pass on a wake-up this waiter may have absorbed.
			if atomic.LoadUint32(s.count) > 0 {
				wait.Wake(s.count, 1)
			}
			return err
		}
	}
}

// Release returns a permit, waking a waiter if there is one. For a bounded
// semaphore it returns ErrNotAcquired, and changes nothing, if the count is
// already at its initial value.
func (s *Semaphore) Release() error {
	s.check()
	s.h.loc.raceRelease()
	bound := atomic.LoadUint32(s.bound)
	for {
		c := atomic.LoadUint32(s.count)
		if bound != 0 && c >= bound {
			return fmt.Errorf("%w: BoundedSemaphore(%d) released too many times", ErrNotAcquired, bound)
		}
		if atomic.CompareAndSwapUint32(s.count, c, c+1) {
			break
		}
	}
	s.holders.add(-1)
	if atomic.LoadUint32(s.waiters) > 0 {
		wait.Wake(s.count, 1)
	}
	return nil
}

// Value returns the number of permits available: a snapshot.
func (s *Semaphore) Value() int {
	s.check()
	return int(atomic.LoadUint32(s.count))
}

// reclaim gives back the permits of dead holders, reporting whether it
// recovered any.
func (s *Semaphore) reclaim() bool {
	n := s.holders.reclaim()
	if n == 0 {
		return false
	}
	atomic.AddUint32(s.count, uint32(n))
	wait.Wake(s.count, math.MaxInt32)
	return true
}

func (s *Semaphore) check() {
	if !s.h.valid() {
		panic(fmt.Errorf("%w: a Semaphore must be made with NewSemaphore or NewBoundedSemaphore", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the semaphore's handle.
func (s *Semaphore) MarshalBinary() ([]byte, error) { return s.h.marshal() }

// UnmarshalBinary makes s refer to the semaphore that data encodes.
func (s *Semaphore) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindSemaphore, data); err != nil {
		return err
	}
	o := openSemaphore(h)
	s.h, s.count, s.bound, s.waiters = o.h, o.count, o.bound, o.waiters
	s.holders.base = o.holders.base
	s.holders.mine.Store(0)
	return nil
}

package mp

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/multiproc/mp/internal/ring"
	"github.com/multiproc/mp/internal/wait"
)

// JoinableQueue is a Queue whose consumers report, with TaskDone, that they
// have finished with each item they took, so that Join can wait until every
// item put has been dealt with: Python's multiprocessing.JoinableQueue.
//
// Beyond Python: if a consumer dies holding items it took but had not
// marked done (or dies in the middle of a Get, or a producer in the middle
// of a Put), Join does not wait for them forever. It counts them as lost
// and returns an error wrapping ErrTasksLost once everything else is done.
// Items a Get drops as corrupt count as lost in the same way. Each
// process's items taken and not yet done are recorded beside the queue for
// this, so TaskDone should be called in the process that took the item.
// Up to MaxHolders live processes can be recorded; an entry is freed
// once its process has ended. Beyond that, Put and Get return an error
// wrapping ErrTooManyProcesses rather than hand an item to a process Join
// could not account for. A process killed within the few instructions
// between two of these records can make Join return one item early, never
// late.
//
// The zero JoinableQueue is not usable: make one with NewJoinableQueue. Its
// methods panic with an error wrapping ErrInvalidHandle, Close included.
type JoinableQueue[T any] struct {
	*Queue[T]
}

// joinState is the shared bookkeeping of a JoinableQueue.
type joinState struct {
	unfinished *uint32 // items put and not yet done; the futex word Join waits on
	lost       *uint32 // items given up as lost
	ringLost   *uint32 // the ring's losses already counted in lost
	holders    holders // per process: items taken (or being put), not yet done
	r          *ring.Ring

	reclaimFunc func() // reclaimLost, as holders.own's full func
}

// own makes sure this process's holdings are recorded before it takes or
// puts an item, reclaiming dead processes' entries if the table is full.
func (j *joinState) own() error {
	if j.holders.own(j.reclaimFunc) {
		return nil
	}
	return fmt.Errorf("%w: %d processes, all alive, hold entries", ErrTooManyProcesses, holderMax)
}

// drop counts as lost and done an item that a Get dropped as corrupt;
// taken tells whether it had been recorded as this process's.
func (j *joinState) drop(taken bool) {
	atomic.AddUint32(j.lost, 1)
	j.done(1)
	if taken {
		// After done: a kill in between counts the item twice (Join
		// returns early) rather than never (Join waits forever).
		j.holders.add(-1)
	}
}

// done marks n items finished, waking Join when none is left. It never
// takes the count below zero: a loss counted twice (a process killed in
// the few instructions between two bookkeeping steps) makes Join return
// early rather than never.
func (j *joinState) done(n uint32) {
	for {
		u := atomic.LoadUint32(j.unfinished)
		left := u - min(u, n)
		if atomic.CompareAndSwapUint32(j.unfinished, u, left) {
			if left == 0 && u != 0 {
				wait.Wake(j.unfinished, math.MaxInt32)
			}
			return
		}
	}
}

// NewJoinableQueue returns an empty joinable queue holding at most maxsize
// items (maxsize <= 0 means no limit, as for NewQueue).
func NewJoinableQueue[T any](maxsize int) (*JoinableQueue[T], error) {
	q, err := newQueue[T](maxsize, qJoinable)
	if err != nil {
		return nil, err
	}
	return &JoinableQueue[T]{q}, nil
}

// TaskDone marks one item taken from the queue as finished. It returns
// ErrTaskDone if every item put is already marked done.
func (q *JoinableQueue[T]) TaskDone() error {
	q.check()
	j := q.join
	for {
		u := atomic.LoadUint32(j.unfinished)
		if u == 0 {
			return ErrTaskDone
		}
		if atomic.CompareAndSwapUint32(j.unfinished, u, u-1) {
			if u == 1 {
				wait.Wake(j.unfinished, math.MaxInt32)
			}
			j.holders.add(-1)
			return nil
		}
	}
}

// Join blocks until every item put on the queue has been marked done with
// TaskDone, or ctx ends. It returns nil, ctx.Err(), or an error wrapping
// ErrTasksLost if some items can never be marked done because the process
// that had them died, or because a Get dropped them as corrupt.
func (q *JoinableQueue[T]) Join(ctx context.Context) error {
	q.check()
	j := q.join
	last := time.Now()
	for {
		u := atomic.LoadUint32(j.unfinished)
		if u == 0 {
			break
		}
		if time.Since(last) >= ownerPoll {
			last = time.Now()
			if j.reclaimLost() {
				continue
			}
		}
		if err := wait.Wait(ctx, j.unfinished, u, ownerPoll); err != nil {
			return err
		}
	}
	if n := atomic.LoadUint32(j.lost); n > 0 {
		return fmt.Errorf("%w: %d items", ErrTasksLost, n)
	}
	return nil
}

// reclaimLost counts as done the items that dead processes had taken, and
// those the ring lost with a dead consumer or producer. It reports whether
// it found any. Any number of processes may run it at once: each dead
// process's items, and each of the ring's losses, are counted by one.
func (j *joinState) reclaimLost() bool {
	j.r.Reclaim()
	// A dead process's balance is what it put but had not yet placed in
	// the ring plus what it took and had not marked done; an item that a
	// consumer died in the middle of taking is the ring's Lost. (A
	// producer's half-put item, the ring's Skipped, is already in its
	// balance.)
	n := uint32(j.holders.reclaim())
	n += takeNew(j.ringLost, uint32(j.r.Lost()))
	if n == 0 {
		return false
	}
	atomic.AddUint32(j.lost, n)
	j.done(n)
	return true
}

// MarshalBinary encodes the queue's handle.
func (q *JoinableQueue[T]) MarshalBinary() ([]byte, error) {
	if q.Queue == nil {
		return nil, fmt.Errorf("%w: zero value", ErrInvalidHandle)
	}
	return q.Queue.MarshalBinary()
}

// UnmarshalBinary makes q refer to the joinable queue that data encodes.
func (q *JoinableQueue[T]) UnmarshalBinary(data []byte) error {
	var inner Queue[T]
	if err := inner.UnmarshalBinary(data); err != nil {
		return err
	}
	if inner.join == nil {
		return fmt.Errorf("%w: a Queue, not a JoinableQueue", ErrInvalidHandle)
	}
	q.Queue = &inner
	return nil
}

// SimpleQueue is Python's multiprocessing.SimpleQueue: a Queue with only
// Put, Get, Empty and Close.
//
// The zero SimpleQueue is not usable: make one with NewSimpleQueue. Its
// methods panic with an error wrapping ErrInvalidHandle, Close included.
type SimpleQueue[T any] struct {
	q *Queue[T]
}

// NewSimpleQueue returns an empty, unbounded SimpleQueue.
func NewSimpleQueue[T any]() (*SimpleQueue[T], error) {
	q, err := NewQueue[T](0)
	if err != nil {
		return nil, err
	}
	return &SimpleQueue[T]{q}, nil
}

// Put is Queue.Put.
func (s *SimpleQueue[T]) Put(ctx context.Context, v T) error { return s.q.Put(ctx, v) }

// Get is Queue.Get.
func (s *SimpleQueue[T]) Get(ctx context.Context) (T, error) { return s.q.Get(ctx) }

// Empty is Queue.Empty.
func (s *SimpleQueue[T]) Empty() bool { return s.q.Empty() }

// Close is Queue.Close.
func (s *SimpleQueue[T]) Close() { s.q.Close() }

// MarshalBinary encodes the queue's handle.
func (s *SimpleQueue[T]) MarshalBinary() ([]byte, error) {
	if s.q == nil {
		return nil, fmt.Errorf("%w: zero value", ErrInvalidHandle)
	}
	return s.q.MarshalBinary()
}

// UnmarshalBinary makes s refer to the queue that data encodes.
func (s *SimpleQueue[T]) UnmarshalBinary(data []byte) error {
	var q Queue[T]
	if err := q.UnmarshalBinary(data); err != nil {
		return err
	}
	s.q = &q
	return nil
}

package mp

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/wait"
)

// ErrOwnerDied is returned by Acquire when the process that held the lock
// died holding it. The caller now holds the lock, as with a robust pthread
// mutex's EOWNERDEAD: it should repair whatever the lock protects, which the
// dead owner may have left half-updated, before releasing it.
var ErrOwnerDied = errors.New("mp: the lock's previous owner died holding it")

// ErrNotAcquired is returned by Release of a lock that is not held, of an
// RLock by a goroutine that does not own it, and of a BoundedSemaphore above
// its initial value: Python's "released too many times".
var ErrNotAcquired = errors.New("mp: released more times than acquired")

// mutex is the robust, process-shared mutual exclusion under Lock and
// RLock: one 64-bit word in the arena. Its low half is the futex word:
// the owner's pid, with the top bit set when someone may be waiting. Its high
// half is the low 32 bits of the owner's start time, which tells a dead
// owner's pid apart from a new process that reused it.
//
// Goroutines of one process contend through a process-local gate first, so
// at most one goroutine per process waits on the shared word: ten thousand
// blocked goroutines are ten thousand parked goroutines, not threads, and
// not a herd woken on every release.
type mutex struct {
	state *uint64
	loc   *local
}

const (
	contended = 1 << 31
	// How often a waiter checks that the owner is alive.
	ownerPoll = 50 * time.Millisecond
	spins     = 64
)

// selfWord is this process's owner word: pid, and the low half of its start
// time above. It is computed once at start-up rather than on first use so
// that the lock fast paths read a plain variable.
var selfWord = func() uint64 {
	id := proc.Self()
	return uint64(uint32(id.Pid)) | uint64(uint32(id.Start))<<32
}()

func self64() uint64 { return selfWord }

func (m mutex) futexWord() *uint32 { return (*uint32)(unsafe.Pointer(m.state)) } // little-endian: the low half

func (m mutex) tryLock() bool {
	if atomic.CompareAndSwapUint64(m.state, 0, self64()) {
		m.loc.raceAcquire()
		return true
	}
	return false
}

// ownedHere reports whether a process with this pid holds the mutex.
func (m mutex) ownedHere() bool {
	return uint32(atomic.LoadUint64(m.state))&^contended == uint32(self64())
}

func (m mutex) lock(ctx context.Context) error {
	if m.tryLock() {
		return nil
	}
	err := m.lockSlow(ctx)
	if err == nil || err == ErrOwnerDied {
		m.loc.raceAcquire()
	}
	return err
}

func (m mutex) lockSlow(ctx context.Context) error {
	g := m.loc.gate
	select {
	case g <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g }()

	me := self64()
	parked := false
	// The owner's liveness costs a /proc read: check it only once a wait
	// has lasted a poll interval, not on every contended acquisition.
	checked := time.Now()
	var member uint64 // an owner word found to name a process of the tree
	for i := 0; ; i++ {
		s := atomic.LoadUint64(m.state)
		if s == 0 {
			n := me
			if parked {
				n |= contended // others may be waiting: our release must wake them
			}
			if atomic.CompareAndSwapUint64(m.state, 0, n) {
				return nil
			}
			continue
		}
		if i < spins {
			continue
		}
		if time.Since(checked) >= ownerPoll {
			checked = time.Now()
			if !ownerAlive(s) || !ownerInTree(s, &member) {
				if atomic.CompareAndSwapUint64(m.state, s, me|contended) {
					noteOwnerDied(m.state, s)
					return ErrOwnerDied
				}
				continue
			}
		}
		if uint32(s)&contended == 0 {
			if !atomic.CompareAndSwapUint64(m.state, s, s|contended) {
				continue
			}
			s |= contended
		}
		parked = true
		if err := wait.Wait(ctx, m.futexWord(), uint32(s), ownerPoll); err != nil {
			// This waiter may have been the one a release woke: pass the
			// wake-up on so that no other waiter sleeps on a free lock.
			wait.Wake(m.futexWord(), 1)
			return err
		}
	}
}

// ownerAlive reports whether the owner recorded in state s can still run.
func ownerAlive(s uint64) bool {
	return proc.AliveStart32(int(uint32(s)&^contended), uint32(s>>32))
}

// ownerInTree reports whether the live owner recorded in state s is a
// process of this tree, one that maps the tree's arena: a word naming pid
// 0, init or an unrelated process can only have been scribbled there, and
// waiting for such an owner would never end. It reads /proc, so it is for
// slow paths; *member remembers the last owner found to be one of ours
// (pid and start time), which stays one as long as it lives.
func ownerInTree(s uint64, member *uint64) bool {
	owner := s &^ contended
	pid := int(uint32(owner))
	if !proc.Possible(pid) {
		return false
	}
	if owner == *member {
		return true
	}
	if pid == os.Getpid() {
		return owner == self64()
	}
	// A process of the tree records its start time; a word without one
	// names a process that has one only if scribbled.
	if start, ok := proc.StartTime(pid); ok && uint32(owner>>32) == 0 && uint32(start) != 0 {
		return false
	}
	a, err := treeArena()
	if err != nil || a.MappedBy(pid) {
		*member = owner
		return true
	}
	return false
}

func (m mutex) unlock() error {
	m.loc.raceRelease()
	if atomic.CompareAndSwapUint64(m.state, self64(), 0) {
		return nil
	}
	for {
		s := atomic.LoadUint64(m.state)
		if s == 0 {
			return ErrNotAcquired
		}
		if atomic.CompareAndSwapUint64(m.state, s, 0) {
			if uint32(s)&contended != 0 {
				wait.Wake(m.futexWord(), 1)
			}
			return nil
		}
	}
}

// Package wait parks goroutines on futex words in shared memory without
// holding an OS thread per goroutine.
//
// A goroutine blocked in FUTEX_WAIT holds its OS thread, and a Go program
// dies at 10,000 threads. So a parked goroutine waits on a Go channel, and
// a few "waiter" threads per process wait in the kernel on its behalf: each
// waits with futex_waitv on up to 127 distinct words (all goroutines parked
// on the same word share one slot) plus a private control word through which
// parkers tell it that its set changed. When a word is woken, or found
// changed, every goroutine parked on it in this process is released to
// re-check its condition. Ten thousand goroutines parked on one lock are
// one slot of one thread.
//
// On kernels without futex_waitv (before 5.16) each distinct word gets a
// thread of its own, which is still one thread per word, not per goroutine.
//
// Lost wake-ups are avoided the futex way: a caller reads the word, checks
// its condition, and parks with the value it read; the kernel compares that
// value atomically when the waiter thread goes to sleep, so a change made in
// between makes the wait return at once.
package wait

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/futex"
)

// Wait parks the calling goroutine while *addr == val: it returns nil once
// the word has been woken or has changed, or after poll if poll is positive
// (the caller re-checks its condition; spurious returns are possible), or
// ctx.Err() if ctx ends first.
func Wait(ctx context.Context, addr *uint32, val uint32, poll time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if atomic.LoadUint32(addr) != val {
		return nil
	}
	if direct.Add(1) <= maxDirect {
		defer direct.Add(-1)
		return waitDirect(ctx, addr, val, poll)
	}
	direct.Add(-1)
	p := park(addr, val)
	if p == nil {
		return nil // the word changed while registering
	}
	var timeout <-chan time.Time
	if poll > 0 {
		t := time.NewTimer(poll)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-p.ch:
		return nil
	case <-timeout:
		p.cancel()
		return nil
	case <-ctx.Done():
		if p.cancel() {
			return ctx.Err()
		}
		return nil // released at the same time: report the wake-up
	}
}

// A few goroutines per process wait in the kernel on their own threads:
// that is the fastest wake-up there is (one futex wake, one context switch).
// Past maxDirect, goroutines park behind the shared waiter threads.
const maxDirect = 32

var direct atomic.Int32

func waitDirect(ctx context.Context, addr *uint32, val uint32, poll time.Duration) error {
	if ctx.Done() == nil {
		futex.Wait(addr, val, poll)
		return nil
	}
	// On cancellation, wake the word (and with it, spuriously, its other
	// waiters) until this waiter has left: a single wake could come just
	// before the thread enters the kernel and be lost.
	left := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			futex.Wake(addr, math.MaxInt32)
			select {
			case <-left:
				return
			case <-t.C:
			}
		}
	})
	futex.Wait(addr, val, poll)
	close(left)
	if !stop() && atomic.LoadUint32(addr) == val {
		return ctx.Err()
	}
	return nil
}

// Wake wakes up to n waiter threads (in any process of the tree) parked on
// addr; a shared waiter thread releases all of its process's goroutines
// parked there. Use math.MaxInt32 to wake every waiter.
func Wake(addr *uint32, n int) { futex.Wake(addr, n) }

// parker is one parked goroutine.
type parker struct {
	ch   chan struct{}
	slot *slot
}

// cancel unregisters p, reporting whether it was still parked.
func (p *parker) cancel() bool {
	shardsMu.Lock()
	defer shardsMu.Unlock()
	sl := p.slot
	s := sl.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := sl.parkers[p]; !ok {
		return false // released, or its slot replaced
	}
	delete(sl.parkers, p)
	if len(sl.parkers) == 0 {
		s.remove(sl, true)
		if byAddr[sl.addr] == sl {
			delete(byAddr, sl.addr)
		}
	}
	return true
}

// slot is one word a shard's thread waits on, with the goroutines parked
// on it.
type slot struct {
	shard   *shard
	addr    *uint32
	val     uint32
	parkers map[*parker]struct{}
}

// shard is one waiter thread and the words it waits on.
type shard struct {
	mu    sync.Mutex
	slots []*slot
	ctl   uint32 // private futex word: bumped to make the thread rebuild its set
}

const perShard = futex.MaxWaitv - 1 // one entry is the control word

var (
	shardsMu sync.Mutex
	shards   []*shard
	byAddr   = map[*uint32]*slot{} // guarded by shardsMu
	noWaitv  atomic.Bool           // the kernel lacks futex_waitv
)

// park registers a parker for (addr, val), or returns nil if the word no
// longer holds val.
func park(addr *uint32, val uint32) *parker {
	shardsMu.Lock()
	defer shardsMu.Unlock()
	if atomic.LoadUint32(addr) != val {
		return nil
	}
	p := &parker{ch: make(chan struct{})}
	if sl, ok := byAddr[addr]; ok {
		s := sl.shard
		s.mu.Lock()
		if sl.val != val {
			// Those parked earlier saw an older value: the word has
			// changed since, so they are due for a re-check anyway.
			sl.releaseLocked()
			sl.parkers = map[*parker]struct{}{}
			sl.val = val
			s.poke()
		}
		p.slot = sl
		sl.parkers[p] = struct{}{}
		s.mu.Unlock()
		return p
	}
	s := freeShard()
	sl := &slot{shard: s, addr: addr, val: val, parkers: map[*parker]struct{}{p: {}}}
	p.slot = sl
	s.mu.Lock()
	s.slots = append(s.slots, sl)
	s.poke()
	s.mu.Unlock()
	byAddr[addr] = sl
	return p
}

// freeShard returns a shard with room for one more word, starting a new
// waiter thread if needed. shardsMu is held.
func freeShard() *shard {
	limit := perShard
	if noWaitv.Load() {
		limit = 1
	}
	for _, s := range shards {
		s.mu.Lock()
		n := len(s.slots)
		s.mu.Unlock()
		if n < limit {
			return s
		}
	}
	s := &shard{}
	shards = append(shards, s)
	go s.run()
	return s
}

// poke makes the shard's thread rebuild its set of words. s.mu is held.
func (s *shard) poke() {
	atomic.AddUint32(&s.ctl, 1)
	futex.WakePrivate(&s.ctl, 1)
	if noWaitv.Load() {
		// The thread may be waiting on its one word directly: wake it
		// there (and, spuriously, that word's other waiters).
		for _, sl := range s.slots {
			futex.Wake(sl.addr, math.MaxInt32)
		}
	}
}

// releaseLocked releases every goroutine parked on sl. Its shard's mu is
// held.
func (sl *slot) releaseLocked() {
	for p := range sl.parkers {
		close(p.ch)
	}
	sl.parkers = nil
}

// remove drops sl from its shard, poking the thread unless it is the
// caller. s.mu is held.
func (s *shard) remove(sl *slot, poke bool) {
	for i, x := range s.slots {
		if x == sl {
			s.slots = append(s.slots[:i], s.slots[i+1:]...)
			break
		}
	}
	sl.parkers = nil
	if poke {
		s.poke()
	}
}

// run is a waiter thread's loop.
func (s *shard) run() {
	// The thread sleeps in the kernel for long stretches; locking it keeps
	// the runtime from handing it other goroutines in between.
	runtime.LockOSThread()
	ws := make([]futex.Waiter, 0, futex.MaxWaitv)
	slots := make([]*slot, 0, futex.MaxWaitv)
	for {
		s.mu.Lock()
		ctl := atomic.LoadUint32(&s.ctl)
		ws, slots = ws[:0], slots[:0]
		ws = append(ws, futex.Waiter{})
		ws[0].Set(&s.ctl, ctl, true)
		var addr0 *uint32 // the one word, in the fallback mode
		var val0 uint32
		for _, sl := range s.slots {
			var w futex.Waiter
			w.Set(sl.addr, sl.val, false)
			ws = append(ws, w)
			slots = append(slots, sl)
			if addr0 == nil {
				addr0, val0 = sl.addr, sl.val
			}
		}
		s.mu.Unlock()

		woken := -1
		if noWaitv.Load() {
			if addr0 == nil {
				futex.WaitPrivate(&s.ctl, ctl)
			} else {
				futex.Wait(addr0, val0, 0)
			}
		} else {
			var err error
			woken, err = futex.WaitV(ws)
			if errors.Is(err, unix.ENOSYS) {
				noWaitv.Store(true)
				s.releaseAll()
				continue
			}
		}

		s.settle(slots, woken-1)
	}
}

// settle releases the goroutines of every slot that was woken or whose
// word changed, and forgets those slots.
func (s *shard) settle(slots []*slot, woken int) {
	shardsMu.Lock()
	defer shardsMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, sl := range slots {
		if sl.parkers == nil {
			continue // cancelled meanwhile
		}
		if i == woken || atomic.LoadUint32(sl.addr) != sl.val {
			sl.releaseLocked()
			s.remove(sl, false)
			if byAddr[sl.addr] == sl {
				delete(byAddr, sl.addr)
			}
		}
	}
}

// releaseAll releases every goroutine of the shard, on switching to the
// one-word-per-thread mode; they re-park and are spread over new shards.
func (s *shard) releaseAll() {
	shardsMu.Lock()
	defer shardsMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.slots {
		sl.releaseLocked()
		if byAddr[sl.addr] == sl {
			delete(byAddr, sl.addr)
		}
	}
	s.slots = nil
}

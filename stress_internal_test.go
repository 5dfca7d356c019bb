package mp

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/shm"
)

// The stress test's shared counters live in a raw arena block, updated
// with plain (non-atomic) read-modify-writes under the primitives: if a
// primitive fails to exclude or to wake, a count comes out wrong or the
// test hangs.
const (
	stCounter  = 0  // under lock: +1 per iteration
	stInside   = 8  // atomic: goroutines holding the semaphore
	stMaxIn    = 16 // atomic: the most seen inside
	stItems    = 24 // under cond's lock: produced - consumed
	stConsumed = 32 // under cond's lock
	stRounds   = 40 // atomic: barrier actions run
)

type stressKit struct {
	Block     uint64
	Lock      *Lock
	Sem       *Semaphore
	Cond      *Condition
	Barrier   *Barrier
	Iters     int
	Every     int // barrier every this many iterations
	SemLimit  int
	Goroutine int
}

// stressBlock is where this process's barrier action counts rounds.
var stressBlock atomic.Uint64

func stressAction() {
	a, _ := treeArena()
	atomic.AddUint64(a.Uint64(shm.Offset(stressBlock.Load())+stRounds), 1)
}

func stressWorker(k stressKit) error {
	a, err := treeArena()
	if err != nil {
		return err
	}
	stressBlock.Store(k.Block)
	word := func(off uintptr) *uint64 { return a.Uint64(shm.Offset(k.Block) + shm.Offset(off)) }
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i := 0; i < k.Iters; i++ {
		if err := k.Lock.Acquire(ctx); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		runtime.Gosched()
		c := word(stCounter)
		v := *c
		*c = v + 1
		k.Lock.Release()

		if err := k.Sem.Acquire(ctx); err != nil {
			return fmt.Errorf("semaphore: %w", err)
		}
		in := atomic.AddUint64(word(stInside), 1)
		for {
			m := atomic.LoadUint64(word(stMaxIn))
			if in <= m || atomic.CompareAndSwapUint64(word(stMaxIn), m, in) {
				break
			}
		}
		atomic.AddUint64(word(stInside), ^uint64(0))
		k.Sem.Release()

		// Produce one item, then consume one: never more consumed than
		// produced, so a waiter always has a producer to come.
		k.Cond.Lock()
		*word(stItems)++
		k.Cond.Notify(1)
		k.Cond.Unlock()
		k.Cond.Lock()
		if err := k.Cond.WaitFor(ctx, func() bool { return *word(stItems) > 0 }); err != nil {
			k.Cond.Unlock()
			return fmt.Errorf("condition: %w", err)
		}
		*word(stItems)--
		*word(stConsumed)++
		k.Cond.Unlock()

		if (i+1)%k.Every == 0 {
			if _, err := k.Barrier.Wait(ctx); err != nil {
				return fmt.Errorf("barrier: %w", err)
			}
		}
	}
	return nil
}

// stressProcess runs goroutines workers in one process.
func stressProcess(k stressKit) error {
	var wg sync.WaitGroup
	errs := make(chan error, k.Goroutine)
	for g := 0; g < k.Goroutine; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stressWorker(k); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(func() []error {
		var es []error
		for e := range errs {
			es = append(es, e)
		}
		return es
	}()...)
}

func init() { Register(stressProcess, stressAction) }

// TestStressAcrossProcesses: three child processes and the parent, four
// goroutines each, all hammering one Lock, Semaphore, Condition and Barrier.
func TestStressAcrossProcesses(t *testing.T) {
	const procs, goroutines, iters, every, limit = 3, 4, 3000, 50, 3
	a, err := treeArena()
	if err != nil {
		t.Fatal(err)
	}
	block, err := a.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Free(block)
	lock := Must(NewLock())
	k := stressKit{
		Block:     uint64(block),
		Lock:      lock,
		Sem:       Must(NewSemaphore(limit)),
		Cond:      Must(NewCondition(Must(NewLock()))),
		Barrier:   Must(NewBarrier((procs+1)*goroutines, stressAction)),
		Iters:     iters,
		Every:     every,
		SemLimit:  limit,
		Goroutine: goroutines,
	}
	ps := make([]*Process, procs)
	for i := range ps {
		ps[i] = NewProcess(stressProcess, k)
		if err := ps[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := stressProcess(k); err != nil {
		t.Error(err)
	}
	for _, p := range ps {
		if err := p.Join(context.Background()); err != nil {
			t.Error(err)
		}
	}
	word := func(off uintptr) uint64 { return atomic.LoadUint64(a.Uint64(block + shm.Offset(off))) }
	total := uint64((procs + 1) * goroutines * iters)
	if got := word(stCounter); got != total {
		t.Errorf("counter = %d, want %d: the Lock let updates be lost", got, total)
	}
	if got := word(stMaxIn); got > limit || got == 0 {
		t.Errorf("at most %d inside the Semaphore(%d)", got, limit)
	}
	if word(stInside) != 0 || word(stItems) != 0 || word(stConsumed) != total {
		t.Errorf("inside %d, items left %d, consumed %d of %d", word(stInside), word(stItems), word(stConsumed), total)
	}
	if got, want := word(stRounds), uint64(iters/every); got != want {
		t.Errorf("barrier action ran %d times, want %d", got, want)
	}
}

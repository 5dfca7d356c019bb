package mp_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// condConsumer is a child process's part in TestConditionAcrossProcesses:
// it waits on c until tickets (a counter guarded by c's lock) is positive,
// takes one ticket and counts itself in done.
func condConsumer(c *mp.Condition, entered, tickets, done *mp.Semaphore) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Acquire(ctx); err != nil {
		return err
	}
	defer c.Release()
	entered.Release() // under the lock: once the parent holds it and sees us, we wait
	if err := c.WaitFor(ctx, func() bool { return tickets.Value() > 0 }); err != nil {
		return fmt.Errorf("WaitFor: %w", err)
	}
	if !tickets.TryAcquire() {
		return errors.New("no ticket after WaitFor returned")
	}
	done.Release()
	return nil
}

// condWaitForever waits on c until it is killed.
func condWaitForever(c *mp.Condition, entered *mp.Semaphore) error {
	c.Lock()
	entered.Release()
	err := c.Wait(context.Background())
	c.Unlock()
	return err
}

func init() { mp.Register(condConsumer, condWaitForever) }

// eventually polls cond until it holds, failing the test after a minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// underLock evaluates f with c's lock held.
func underLock(c *mp.Condition, f func() bool) bool {
	c.Lock()
	defer c.Unlock()
	return f()
}

func minuteCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// condWaiters starts k goroutines that each take c's lock, count
// themselves in entered (under the lock, so that a notifier holding the
// lock who sees k knows all k are waiting), Wait(ctx), count themselves in
// woke and send Wait's result.
func condWaiters(ctx context.Context, c *mp.Condition, k int, entered, woke *atomic.Int64) chan error {
	errs := make(chan error, k)
	for range k {
		go func() {
			c.Lock()
			entered.Add(1)
			err := c.Wait(ctx)
			woke.Add(1)
			c.Unlock()
			errs <- err
		}()
	}
	return errs
}

func TestConditionNotifyCounts(t *testing.T) {
	for _, tc := range []struct {
		name string
		lock mp.Locker
	}{{"Lock", mp.Must(mp.NewLock())}, {"RLock", mp.Must(mp.NewRLock())}, {"default", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			c := mp.Must(mp.NewCondition(tc.lock))
			const k = 8
			var entered, woke atomic.Int64
			errs := condWaiters(minuteCtx(t), c, k, &entered, &woke)
			eventually(t, "all waiters", func() bool { return underLock(c, func() bool { return entered.Load() == k }) })
			const all = -1
			for _, step := range []struct{ n, total int }{{1, 1}, {2, 3}, {0, 3}, {-7, 3}, {all, k}} {
				c.Lock()
				if step.n == all {
					c.NotifyAll()
				} else {
					c.Notify(step.n) // 0 and negative: no-ops
				}
				c.Unlock()
				eventually(t, fmt.Sprintf("%d wake-ups", step.total), func() bool { return woke.Load() >= int64(step.total) })
				// The others are still waiting: the next step wakes exactly
				// the next ones. (An extra wake-up would show as a count above
				// the total here or at a later step;
				// TestConditionNotifyWakesExactly proves exactness without
				// depending on timing.)
				if got := woke.Load(); got != int64(step.total) {
					t.Fatalf("after Notify(%d): %d wake-ups, want %d", step.n, got, step.total)
				}
			}
			for range k {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestConditionNotifyWakesExactly proves exactness with cancellation: a
// waiter whose ctx ends returns nil if it had been notified and ctx.Err()
// otherwise, so after Notify(n) and cancelling everyone, exactly min(n, k)
// Waits return nil.
func TestConditionNotifyWakesExactly(t *testing.T) {
	c := mp.Must(mp.NewCondition(mp.Must(mp.NewLock())))
	const k = 5
	for _, n := range []int{0, 1, 2, k - 1, k, k + 3} {
		ctx, cancel := context.WithCancel(minuteCtx(t))
		var entered, woke atomic.Int64
		errs := condWaiters(ctx, c, k, &entered, &woke)
		eventually(t, "all waiters", func() bool { return underLock(c, func() bool { return entered.Load() == k }) })
		c.Lock()
		c.Notify(n)
		c.Unlock()
		cancel()
		notified, cancelled := 0, 0
		for range k {
			switch err := <-errs; {
			case err == nil:
				notified++
			case errors.Is(err, context.Canceled):
				cancelled++
			default:
				t.Fatal(err)
			}
		}
		if want := min(n, k); notified != want || cancelled != k-want {
			t.Fatalf("Notify(%d) with %d waiters: %d notified, %d cancelled", n, k, notified, cancelled)
		}
	}
}

// TestConditionNotifyOrderAndLateWaiters: Notify wakes the longest waiting
// first, and a goroutine that starts to wait after a Notify does not take
// that notification.
func TestConditionNotifyOrderAndLateWaiters(t *testing.T) {
	c := mp.Must(mp.NewCondition(mp.Must(mp.NewLock())))
	ctx, cancel := context.WithCancel(minuteCtx(t))
	defer cancel()
	type result struct {
		who int
		err error
	}
	results := make(chan result, 3)
	var entered atomic.Int64
	start := func(who int) {
		go func() {
			c.Lock()
			entered.Add(1)
			err := c.Wait(ctx)
			c.Unlock()
			results <- result{who, err}
		}()
		eventually(t, fmt.Sprintf("waiter %d", who), func() bool { return underLock(c, func() bool { return entered.Load() == int64(who+1) }) })
	}
	start(0)
	start(1)
	c.Lock()
	c.Notify(1)
	c.Unlock()
	start(2) // waits after the Notify
	if r := <-results; r.who != 0 || r.err != nil {
		t.Fatalf("Notify(1) woke waiter %d (%v), want the first", r.who, r.err)
	}
	cancel()
	for range 2 {
		if r := <-results; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("waiter %d: %v, want it still waiting until cancelled", r.who, r.err)
		}
	}
}

// Data guarded by an mp lock is kept in atomics in these tests: the race
// detector does not see the happens-before edges that atomic operations on
// the shared arena create (it ignores atomics outside Go's own memory), so
// plain variables guarded by an mp.Lock would be reported. The tests still
// check mutual exclusion: they read, test and write under the lock.

func TestConditionWaitFor(t *testing.T) {
	c := mp.Must(mp.NewCondition(nil))
	ctx := minuteCtx(t)
	var value, calls, entered atomic.Int64 // guarded by c's lock
	done := make(chan error)
	go func() {
		c.Lock()
		entered.Store(1)
		err := c.WaitFor(ctx, func() bool { calls.Add(1); return value.Load() >= 3 })
		if err == nil && value.Load() < 3 {
			err = fmt.Errorf("WaitFor returned with value %d", value.Load())
		}
		c.Unlock()
		done <- err
	}()
	eventually(t, "the waiter", func() bool { return underLock(c, func() bool { return entered.Load() == 1 }) })
	for i := 1; i <= 3; i++ {
		c.Lock()
		value.Store(int64(i))
		c.NotifyAll()
		c.Unlock()
		// Wait for the predicate to have seen this value before the next.
		eventually(t, "the predicate", func() bool { return underLock(c, func() bool { return calls.Load() == int64(i+1) }) })
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A deadline: the predicate never holds.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	c.Lock()
	err := c.WaitFor(short, func() bool { return value.Load() > 100 })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor with an unreachable predicate: %v", err)
	}
	if err := c.Release(); err != nil {
		t.Fatalf("lock not held after WaitFor: %v", err)
	}
	// A predicate that already holds returns at once, without waiting.
	c.Lock()
	if err := c.WaitFor(short, func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	c.Unlock()
}

func TestConditionWaitDeadlineHoldsLockAgain(t *testing.T) {
	l := mp.Must(mp.NewLock())
	c := mp.Must(mp.NewCondition(l))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	c.Lock()
	if err := c.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v, want DeadlineExceeded", err)
	}
	held := make(chan bool)
	go func() { held <- !l.TryAcquire() }()
	if !<-held {
		t.Fatal("the lock was free after Wait returned")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	// The timed-out waiter left nothing behind: a Notify with no waiter
	// is not kept for a later one.
	c.Lock()
	c.Notify(1)
	c.Unlock()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	c.Lock()
	if err := c.Wait(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait after an unheard Notify: %v, want DeadlineExceeded", err)
	}
	c.Unlock()
}

func TestConditionRLockRestoresCount(t *testing.T) {
	r := mp.Must(mp.NewRLock())
	c := mp.Must(mp.NewCondition(r))
	ctx := minuteCtx(t)
	for range 3 {
		if err := r.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Another goroutine can take the lock only if Wait released all three
	// levels.
	go func() {
		c.Lock()
		c.Notify(1)
		c.Unlock()
	}()
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := r.Release(); err != nil {
			t.Fatalf("release %d after Wait: %v", i+1, err)
		}
	}
	if err := r.Release(); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("fourth release: %v, want ErrNotAcquired", err)
	}

	// The same after a timeout.
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	r.Lock()
	r.Lock()
	if err := c.Wait(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	r.Unlock()
	r.Unlock()
	if err := r.Release(); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("third release: %v, want ErrNotAcquired", err)
	}
}

// localLocker implements mp.Locker, but is no lock of the package.
type localLocker struct{ sync.Mutex }

func (l *localLocker) Acquire(context.Context) error { l.Lock(); return nil }
func (l *localLocker) Release() error                { l.Unlock(); return nil }

func TestConditionMisuse(t *testing.T) {
	c := mp.Must(mp.NewCondition(mp.Must(mp.NewLock())))
	if err := c.Wait(context.Background()); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("Wait without the lock: %v", err)
	}
	rc := mp.Must(mp.NewCondition(nil))
	if err := rc.Wait(context.Background()); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("Wait without the RLock: %v", err)
	}
	if _, err := mp.NewCondition(&localLocker{}); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("NewCondition(a Locker of another type): %v", err)
	}
	if _, err := mp.NewCondition(&mp.Lock{}); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("NewCondition(zero Lock): %v", err)
	}
	var bad mp.Condition
	if err := bad.UnmarshalBinary([]byte("nope")); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	lb := mp.Must(mp.Must(mp.NewLock()).MarshalBinary())
	if err := bad.UnmarshalBinary(lb); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("UnmarshalBinary of a Lock: %v", err)
	}
}

// A decoded Condition shares the waiters and the lock of the original.
func TestConditionMarshalRoundTrip(t *testing.T) {
	for _, lock := range []mp.Locker{mp.Must(mp.NewLock()), nil} {
		c := mp.Must(mp.NewCondition(lock))
		var d mp.Condition
		if err := d.UnmarshalBinary(mp.Must(c.MarshalBinary())); err != nil {
			t.Fatal(err)
		}
		ctx := minuteCtx(t)
		var entered, woke atomic.Int64
		errs := condWaiters(ctx, c, 1, &entered, &woke)
		eventually(t, "the waiter", func() bool { return underLock(&d, func() bool { return entered.Load() == 1 }) })
		d.Lock()
		d.Notify(1)
		d.Unlock()
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestConditionAcrossProcesses(t *testing.T) {
	for _, tc := range []struct {
		name string
		lock mp.Locker
	}{{"Lock", mp.Must(mp.NewLock())}, {"RLock", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			c := mp.Must(mp.NewCondition(tc.lock))
			entered := mp.Must(mp.NewSemaphore(0))
			tickets := mp.Must(mp.NewSemaphore(0))
			done := mp.Must(mp.NewSemaphore(0))
			const k = 3
			var ps []*mp.Process
			for range k {
				p := mp.NewProcess(condConsumer, c, entered, tickets, done)
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
				ps = append(ps, p)
			}
			eventually(t, "the children to wait", func() bool { return underLock(c, func() bool { return entered.Value() == k }) })
			for i := 1; i <= k; i++ {
				c.Lock()
				tickets.Release()
				c.Notify(1)
				c.Unlock()
				eventually(t, fmt.Sprintf("%d children done", i), func() bool { return done.Value() >= i })
				if got := underLock(c, func() bool { return done.Value() == i && tickets.Value() == 0 }); !got {
					t.Fatalf("after %d notifications: %d done, %d tickets left", i, done.Value(), tickets.Value())
				}
			}
			for _, p := range ps {
				if err := join(t, p); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// A process killed while it waits does not absorb a notification.
func TestConditionKilledWaiterSkipped(t *testing.T) {
	c := mp.Must(mp.NewCondition(mp.Must(mp.NewLock())))
	entered := mp.Must(mp.NewSemaphore(0))
	p := mp.NewProcess(condWaitForever, c, entered)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the child to wait", func() bool { return underLock(c, func() bool { return entered.Value() == 1 }) })
	// A local waiter, registered after the child: the child is older, so
	// Notify(1) would pick it if it did not check.
	var localIn, woke atomic.Int64
	errs := condWaiters(minuteCtx(t), c, 1, &localIn, &woke)
	eventually(t, "the local waiter", func() bool { return underLock(c, func() bool { return localIn.Load() == 1 }) })
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err == nil {
		t.Fatal("the killed child reported success")
	}
	c.Lock()
	c.Notify(1)
	c.Unlock()
	if err := <-errs; err != nil {
		t.Fatalf("local waiter: %v", err)
	}
}

func TestConditionTooManyWaiters(t *testing.T) {
	c := mp.Must(mp.NewCondition(mp.Must(mp.NewLock())))
	ctx, cancel := context.WithCancel(minuteCtx(t))
	var entered, woke atomic.Int64
	errs := condWaiters(ctx, c, mp.MaxConditionWaiters, &entered, &woke)
	eventually(t, "all waiters", func() bool {
		return underLock(c, func() bool { return entered.Load() == mp.MaxConditionWaiters })
	})
	c.Lock()
	err := c.Wait(ctx)
	c.Unlock()
	if !errors.Is(err, mp.ErrTooManyWaiters) {
		t.Fatalf("Wait on a full condition: %v", err)
	}
	c.Lock()
	c.NotifyAll()
	c.Unlock()
	cancel()
	for range mp.MaxConditionWaiters {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Every slot is free again.
	errs = condWaiters(minuteCtx(t), c, 1, &entered, &woke)
	eventually(t, "a new waiter", func() bool {
		return underLock(c, func() bool { return entered.Load() == mp.MaxConditionWaiters+1 })
	})
	c.Lock()
	c.Notify(1)
	c.Unlock()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// TestConditionStress: producers and consumers on one condition, and
// rounds of Notify(n) against cancellation, under -race.
func TestConditionStress(t *testing.T) {
	t.Run("producers-consumers", func(t *testing.T) {
		c := mp.Must(mp.NewCondition(mp.Must(mp.NewLock())))
		ctx := minuteCtx(t)
		const producers, consumers, perProducer = 4, 8, 500
		// Guarded by c's lock: consumers test and take under it, so a
		// lock or condition that let two consumers take the same item
		// would drive pending below zero.
		var pending, consumed atomic.Int64
		var closed atomic.Bool
		var wg sync.WaitGroup
		errs := make(chan error, consumers)
		for range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perProducer {
					c.Lock()
					pending.Add(1)
					c.Notify(1)
					c.Unlock()
				}
			}()
		}
		var cwg sync.WaitGroup
		for range consumers {
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				c.Lock()
				defer c.Unlock()
				for {
					if err := c.WaitFor(ctx, func() bool { return pending.Load() > 0 || closed.Load() }); err != nil {
						errs <- err
						return
					}
					if pending.Load() == 0 {
						return // closed, and nothing left
					}
					if n := pending.Add(-1); n < 0 {
						errs <- fmt.Errorf("pending = %d: an item was taken twice", n)
						return
					}
					consumed.Add(1)
				}
			}()
		}
		wg.Wait()
		c.Lock()
		closed.Store(true)
		c.NotifyAll()
		c.Unlock()
		cwg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := consumed.Load(); n != producers*perProducer || pending.Load() != 0 {
			t.Fatalf("%d consumed, %d pending; want %d, 0", n, pending.Load(), producers*perProducer)
		}
	})
	t.Run("exact-notify", func(t *testing.T) {
		c := mp.Must(mp.NewCondition(nil))
		const k = 12
		for round := range 40 {
			n := round % (k + 3)
			ctx, cancel := context.WithCancel(minuteCtx(t))
			var entered, woke atomic.Int64
			errs := condWaiters(ctx, c, k, &entered, &woke)
			eventually(t, "all waiters", func() bool { return underLock(c, func() bool { return entered.Load() == k }) })
			c.Lock()
			c.Notify(n)
			c.Unlock()
			cancel()
			notified := 0
			for range k {
				if err := <-errs; err == nil {
					notified++
				} else if !errors.Is(err, context.Canceled) {
					t.Fatal(err)
				}
			}
			if notified != min(n, k) {
				t.Fatalf("round %d: Notify(%d) woke %d of %d", round, n, notified, k)
			}
		}
	})
}

// TestConditionLockHeldByAnotherProcess: Wait and Notify on a Condition
// whose Lock another process holds fail with ErrNotAcquired at once, and
// leave that process's lock alone (Wait used to unlock it, wait out its
// deadline, and keep the lock).
func TestConditionLockHeldByAnotherProcess(t *testing.T) {
	l := mp.Must(mp.NewLock())
	c := mp.Must(mp.NewCondition(l))
	flag := filepath.Join(t.TempDir(), "held")
	p := mp.NewProcess(holdLock, l, flag)
	p.Daemon = true
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.Kill()
		join(t, p)
	}()
	awaitFile(t, flag)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Wait(ctx); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("Wait on another process's lock = %v, want ErrNotAcquired", err)
	}
	if err := c.Notify(1); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("Notify on another process's lock = %v, want ErrNotAcquired", err)
	}
	if err := c.NotifyAll(); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("NotifyAll on another process's lock = %v, want ErrNotAcquired", err)
	}
	if l.TryAcquire() {
		t.Fatal("the other process's lock was released")
	}
}

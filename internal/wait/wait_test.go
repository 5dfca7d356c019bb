package wait

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/leakcheck"
)

// waitFor parks until *word != val, re-checking after every return.
func waitFor(ctx context.Context, word *uint32, val uint32) error {
	for atomic.LoadUint32(word) == val {
		if err := Wait(ctx, word, val, 0); err != nil {
			return err
		}
	}
	return nil
}

func TestTenThousandWaitersFewThreads(t *testing.T) {
	var word uint32
	const n = 10000
	var parked, done sync.WaitGroup
	parked.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			parked.Done()
			if err := waitFor(context.Background(), &word, 0); err != nil {
				t.Error(err)
			}
		}()
	}
	parked.Wait()
	// Let them reach the kernel or a shard; the assertion below holds at
	// any moment, this only makes it meaningful.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && direct.Load() < maxDirect {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if th := leakcheck.Threads(); th > 200 {
		t.Fatalf("%d OS threads with %d goroutines waiting", th, n)
	}
	atomic.StoreUint32(&word, 1)
	Wake(&word, math.MaxInt32)
	done.Wait()
	t.Logf("threads after: %d", leakcheck.Threads())
}

func TestCancelAndDeadline(t *testing.T) {
	var word uint32
	const n = 200 // enough to use both the direct and the shared path
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errs <- waitFor(ctx, &word, 0) }()
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	for i := 0; i < n; i++ {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatalf("waiter %d: %v", i, err)
		}
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer tcancel()
	if err := waitFor(tctx, &word, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed wait: %v", err)
	}
	shardsMu.Lock()
	left := len(byAddr)
	shardsMu.Unlock()
	if left != 0 {
		t.Fatalf("%d slots left registered after every waiter left", left)
	}
}

// TestPingPong hands a turn back and forth many times between goroutines,
// through both paths: a lost wake-up hangs it.
func TestPingPong(t *testing.T) { pingPong(t) }

// TestPingPongWithoutWaitv runs the same game on the fallback for kernels
// without futex_waitv: one waiter thread per word.
func TestPingPongWithoutWaitv(t *testing.T) {
	noWaitv.Store(true)
	defer noWaitv.Store(false)
	pingPong(t)
}

func pingPong(t *testing.T) {
	for _, extra := range []int{0, maxDirect + 8} {
		// extra goroutines parked on another word push the players onto
		// the shared waiter threads.
		var other uint32
		var wg sync.WaitGroup
		for i := 0; i < extra; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); waitFor(context.Background(), &other, 0) }()
		}
		var turn uint32
		const rounds = 20000
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		play := func(me uint32) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				for {
					v := atomic.LoadUint32(&turn)
					if v%2 == me {
						break
					}
					if err := Wait(ctx, &turn, v, 0); err != nil {
						t.Errorf("player %d round %d: %v", me, i, err)
						return
					}
				}
				atomic.AddUint32(&turn, 1)
				Wake(&turn, math.MaxInt32)
			}
		}
		wg.Add(2)
		go play(0)
		go play(1)
		// Release the extras once the players are done.
		go func() {
			for atomic.LoadUint32(&turn) < 2*rounds && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			atomic.StoreUint32(&other, 1)
			Wake(&other, math.MaxInt32)
		}()
		wg.Wait()
		cancel()
		if got := atomic.LoadUint32(&turn); got != 2*rounds {
			t.Fatalf("extra=%d: turn = %d, want %d", extra, got, 2*rounds)
		}
	}
}

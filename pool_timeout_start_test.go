package mp_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

func slowInitializer(d time.Duration) { time.Sleep(d) }

// sleepThrough sleeps for d, ignoring any context: only a kill stops it.
func sleepThrough(d time.Duration) int {
	time.Sleep(d)
	return 1
}

func init() { mp.Register(slowInitializer, sleepThrough) }

// TestTaskTimeoutCountsFromStart: a task's time limit counts from when
// its worker can run it, not from when it was handed to a worker still in
// its initializer, and a task whose limit ran out is never run again
// unwatched. (Before: the limit ran out during the initializer, the worker
// was killed, the task went to the next worker marked as expired, and
// there it was never timed out again: a task that ignores its context ran
// for as long as it liked.)
func TestTaskTimeoutCountsFromStart(t *testing.T) {
	const limit = 200 * time.Millisecond
	p, err := mp.NewPool(1, mp.WithInitializer(slowInitializer, 3*limit), mp.WithTaskTimeout(limit))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Terminate()
	ctx := within(t)
	// Handed to the worker while it starts, and too slow for its limit: it
	// times out once the worker runs it, rather than running to its end.
	start := time.Now()
	_, err = mp.Apply[int](ctx, p, sleepThrough, time.Hour)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a task past its limit: %v, want DeadlineExceeded", err)
	}
	t.Logf("timed out after %v", time.Since(start))
	// Quick enough for its limit once the (new, again slowly starting)
	// worker runs it: it succeeds.
	if v, err := mp.Apply[int](ctx, p, sleepThrough, time.Duration(0)); err != nil || v != 1 {
		t.Fatalf("a quick task on a slowly starting worker: %d, %v", v, err)
	}
	closeAndJoin(t, p)
}

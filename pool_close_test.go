package mp_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// gateThenSquare tells started that it runs, waits for go, and squares x:
// it holds a Map in progress for as long as the test needs.
func gateThenSquare(started *mp.Queue[int], gate *mp.Event, x int) (int, error) {
	if err := started.Put(context.Background(), x); err != nil {
		return 0, err
	}
	if err := gate.Wait(context.Background()); err != nil {
		return 0, err
	}
	return x * x, nil
}

func init() { mp.Register(gateThenSquare) }

// checkOnce checks that each of n tasks delivered exactly once.
func checkOnce(t *testing.T, what string, counts []atomic.Int32) {
	t.Helper()
	bad := 0
	for i := range counts {
		if c := counts[i].Load(); c != 1 {
			if bad < 5 {
				t.Errorf("%s: task %d delivered %d times, want once", what, i, c)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d tasks not delivered exactly once", what, bad, len(counts))
	}
}

// TestPoolCloseRunsQueuedWork: Close right after ApplyAsync (the seeds'
// pattern) runs every queued task once, delivers every callback before
// Join returns, and starts no more workers than the pool's own plus what
// WithMaxTasksPerChild retirements require.
func TestPoolCloseRunsQueuedWork(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		opts  []mp.PoolOption
		quota int // tasks per child, 0: no limit
	}{
		{"Pool(2)", 3000, nil, 0},
		// One worker per task: 3,000 worker starts, whose pipes go back
		// to the arena as the retired workers are collected.
		{"MaxTasksPerChild(1)", 3000, []mp.PoolOption{mp.WithMaxTasksPerChild(1)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t, 2, tc.opts...)
			counts := make([]atomic.Int32, tc.n)
			results := make([]*mp.AsyncResult[int], tc.n)
			for i := range results {
				results[i] = mp.ApplyAsync[int](p, square, []any{i}, mp.WithCallback(func(v int) {
					if v != i*i {
						t.Errorf("callback of %d got %d", i, v)
					}
					counts[i].Add(1)
				}), mp.WithErrorCallback(func(err error) { t.Errorf("task %d: %v", i, err) }))
			}
			p.Close()
			// A bound against a hang only: 3,000 worker starts take a
			// while under the race detector on a busy machine.
			jctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			if err := p.Join(jctx); err != nil {
				t.Fatalf("Join: %v", err)
			}
			// Join returned: every callback has run.
			checkOnce(t, "callbacks", counts)
			ctx := within(t)
			for i, r := range results {
				if v, err := r.Get(ctx); err != nil || v != i*i {
					t.Fatalf("Get %d = %d, %v", i, v, err)
				}
			}
			started := mp.PoolWorkersStarted(p)
			limit := 2
			if tc.quota > 0 {
				// One worker per quota of tasks, and at most one start
				// wasted per worker slot when two retire at once for the
				// last task.
				limit = (tc.n+tc.quota-1)/tc.quota + 2
			}
			if started > limit {
				t.Errorf("%d worker starts for %d tasks, want at most %d", started, tc.n, limit)
			}
		})
	}
}

// TestPoolCloseAfterMapAsync: MapAsync, then Close, then Get works.
func TestPoolCloseAfterMapAsync(t *testing.T) {
	p := newPool(t, 2)
	items := ints(3000)
	r1 := mp.MapAsync[int](p, square, items, mp.WithChunkSize(1))
	r2 := mp.MapAsync[int](p, square, items) // batched chunks
	p.Close()
	ctx := within(t)
	for _, r := range []*mp.AsyncResult[[]int]{r1, r2} {
		got, err := r.Get(ctx)
		if err != nil || len(got) != len(items) {
			t.Fatalf("MapAsync then Close: %d results, %v", len(got), err)
		}
		for i, v := range got {
			if v != i*i {
				t.Fatalf("result %d = %d", i, v)
			}
		}
	}
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if n := mp.PoolWorkersStarted(p); n != 2 {
		t.Errorf("%d workers started, want 2", n)
	}
	if r := mp.MapAsync[int](p, square, items); !errors.Is(wait(t, r), mp.ErrPoolClosed) {
		t.Errorf("MapAsync after Close = %v, want ErrPoolClosed", wait(t, r))
	}
}

func wait[R any](t *testing.T, r *mp.AsyncResult[R]) error {
	t.Helper()
	_, err := r.Get(within(t))
	return err
}

// TestPoolCloseDuringMap: a Map running in another goroutine when Close
// is called completes, every item once.
func TestPoolCloseDuringMap(t *testing.T) {
	p := newPool(t, 2)
	started, err := mp.NewQueue[int](0)
	if err != nil {
		t.Fatal(err)
	}
	defer started.Close()
	gate, err := mp.NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	ctx := within(t)
	args := make([][]any, 3000)
	for i := range args {
		args[i] = []any{started, gate, i}
	}
	var wg sync.WaitGroup
	var got []int
	var mapErr error
	wg.Go(func() { got, mapErr = mp.Starmap[int](ctx, p, gateThenSquare, args, mp.WithChunkSize(1)) })
	// The Map is in progress: its first task runs, held at the gate.
	if _, err := started.Get(ctx); err != nil {
		t.Fatal(err)
	}
	p.Close()
	gate.Set()
	wg.Wait()
	if mapErr != nil || len(got) != len(args) {
		t.Fatalf("Map across Close: %d results, %v", len(got), mapErr)
	}
	for i, v := range got {
		if v != i*i {
			t.Fatalf("result %d = %d", i, v)
		}
	}
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if n := mp.PoolWorkersStarted(p); n != 2 {
		t.Errorf("%d workers started, want 2", n)
	}
}

// TestPoolCloseDuringImap: Close while an Imap is being iterated lets it
// go on to the end of its input.
func TestPoolCloseDuringImap(t *testing.T) {
	for _, ordered := range []bool{true, false} {
		t.Run(fmt.Sprint("ordered=", ordered), func(t *testing.T) {
			p := newPool(t, 2)
			ctx := within(t)
			imap := mp.ImapUnordered[int, int]
			if ordered {
				imap = mp.Imap[int, int]
			}
			seen := make([]atomic.Int32, 500)
			first := true
			for v, err := range imap(ctx, p, square, intSeq(len(seen))) {
				if err != nil {
					t.Fatalf("Imap across Close: %v", err)
				}
				if first {
					p.Close()
					first = false
				}
				i := 0
				for i*i < v {
					i++
				}
				seen[i].Add(1)
			}
			checkOnce(t, "Imap", seen)
			if err := p.Join(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func intSeq(n int) iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range n {
			if !yield(i) {
				return
			}
		}
	}
}

// TestPoolCloseThreadPool: the same promise for a thread pool.
func TestPoolCloseThreadPool(t *testing.T) {
	p, err := mp.NewThreadPool(2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Terminate()
	var n atomic.Int32
	rs := make([]*mp.AsyncResult[int], 1000)
	for i := range rs {
		rs[i] = mp.ApplyAsync[int](p, func(x int) int { return x + 1 }, []any{i}, mp.WithCallback(func(int) { n.Add(1) }))
	}
	m := mp.MapAsync[int](p, func(x int) int { time.Sleep(time.Microsecond); return x }, ints(1000), mp.WithChunkSize(1))
	p.Close()
	ctx := within(t)
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Load() != int32(len(rs)) {
		t.Fatalf("%d callbacks ran before Join returned, want %d", n.Load(), len(rs))
	}
	if got, err := m.Get(ctx); err != nil || len(got) != 1000 {
		t.Fatalf("MapAsync then Close on a thread pool: %d, %v", len(got), err)
	}
}

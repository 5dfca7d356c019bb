package mp_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/multiproc/mp"
)

func killSelf() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }

func exitZero() { os.Exit(0) }

func init() { mp.Register(killSelf, exitZero) }

// TestPoolNoRestartStorm: workers that die before they are ready (killed
// at start, or exiting from the initializer) are not restarted in a loop:
// after a bounded number the pool is broken and the waiting tasks fail
// saying why.
func TestPoolNoRestartStorm(t *testing.T) {
	for name, tc := range map[string]struct {
		init any
		why  string
	}{
		"killed at start":       {killSelf, "killed by signal 9"},
		"exit 0 in initializer": {exitZero, "exited with status 0"},
		"initializer fails":     {failInit, "no database"},
	} {
		t.Run(name, func(t *testing.T) {
			const n = 2
			p := newPool(t, n, mp.WithInitializer(tc.init))
			ctx := within(t)
			var rs []*mp.AsyncResult[int]
			for i := range 20 {
				rs = append(rs, mp.ApplyAsync[int](p, square, []any{i}))
			}
			for i, r := range rs {
				_, err := r.Get(ctx)
				if !errors.Is(err, mp.ErrPoolBroken) || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("task %d: %v, want ErrPoolBroken saying %q", i, err, tc.why)
				}
			}
			if _, err := mp.Apply[int](ctx, p, square, 1); !errors.Is(err, mp.ErrPoolBroken) {
				t.Fatalf("a task submitted later: %v, want ErrPoolBroken", err)
			}
			// The pool's workers, then at most 2n+1 failed starts in all.
			if started := mp.PoolWorkersStarted(p); started > 2*n+1+n {
				t.Errorf("%d workers started", started)
			}
			p.Close()
			if err := p.Join(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// pidThenDieOnTwo reports its pid for x == 0 and kills its process for
// x == 2.
func pidThenDieOnTwo(q *mp.Queue[int], x int) (int, error) {
	switch x {
	case 0:
		if err := q.Put(context.Background(), os.Getpid()); err != nil {
			return 0, err
		}
	case 2:
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	return x * x, nil
}

func init() { mp.Register(pidThenDieOnTwo) }

// TestPoolResultsBeforeADeathArrive: the result a worker sent just
// before it died is delivered, not lost with it (the parent closed the
// pipe under its receiver, which then dropped what was left in it). The
// receiver is held, by Map's WithProgress function, until the worker is gone,
// with the last result still in the pipe.
func TestPoolResultsBeforeADeathArrive(t *testing.T) {
	p := newPool(t, 1)
	ctx := within(t)
	q, err := mp.NewQueue[int](0)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	args := [][]any{{q, 0}, {q, 1}, {q, 2}}
	for round := range 20 {
		hold := func(done, total int) {
			if done != 1 {
				return
			}
			// Task 0 is done; task 1 answers and task 2 kills the worker
			// meanwhile.
			id, err := q.Get(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			waitGone(t, ctx, []int{id})
		}
		got, err := mp.Starmap[int](ctx, p, pidThenDieOnTwo, args, mp.WithChunkSize(1), mp.WithProgress(hold))
		me := mapFailures(t, err, []int{2})
		if !errors.Is(me.Errs[0], mp.ErrWorkerLost) || got[1] != 1 {
			t.Fatalf("round %d: %v, %v", round, got, err)
		}
	}
	closeAndJoin(t, p)
}

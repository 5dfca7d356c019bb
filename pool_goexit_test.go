package mp_test

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/multiproc/mp"
)

func goexitTarget() { runtime.Goexit() }

// goexitOnThree calls runtime.Goexit for 3, as t.FailNow would.
func goexitOnThree(x int) int {
	if x == 3 {
		runtime.Goexit()
	}
	return x * x
}

func init() { mp.Register(goexitTarget, goexitOnThree) }

func isGoexit(err error) bool { return err != nil && strings.Contains(err.Error(), "runtime.Goexit") }

// TestGoexitIsAnError: runtime.Goexit in a process's target, a thread's
// function or a pool task fails it, saying so, instead of hanging (a
// child) or crashing the program (a thread pool).
func TestGoexitIsAnError(t *testing.T) {
	ctx := within(t)
	t.Run("process", func(t *testing.T) {
		p := mp.NewProcess(goexitTarget)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		var pe *mp.ProcessError
		if err := p.Join(ctx); !errors.As(err, &pe) || !isGoexit(err) || pe.ExitCode != 1 {
			t.Fatalf("Join = %v, want a *ProcessError about Goexit", err)
		}
	})
	t.Run("thread", func(t *testing.T) {
		th := mp.NewThread(goexitTarget)
		if err := th.Start(); err != nil {
			t.Fatal(err)
		}
		if err := th.Join(ctx); !isGoexit(err) {
			t.Fatalf("Join = %v, want an error about Goexit", err)
		}
	})
	check := func(t *testing.T, p *mp.Pool) {
		t.Helper()
		if _, err := mp.Apply[int](ctx, p, goexitOnThree, 3); !isGoexit(err) {
			t.Fatalf("Apply = %v, want an error about Goexit", err)
		}
		items := ints(10)
		for _, opts := range [][]mp.CallOption{{mp.WithChunkSize(1)}, {mp.WithChunkSize(5)}} {
			got, err := mp.Map[int](ctx, p, goexitOnThree, items, opts...)
			if me := mapFailures(t, err, []int{3}); !isGoexit(me.Errs[0]) {
				t.Fatalf("Map %v: %v", opts, err)
			}
			for i, v := range got {
				if i != 3 && v != i*i {
					t.Fatalf("Map %v: item %d = %d", opts, i, v)
				}
			}
		}
		args := make([][]any, 10)
		for i := range args {
			args[i] = []any{i}
		}
		_, err := mp.Starmap[int](ctx, p, goexitOnThree, args, mp.WithChunkSize(5))
		mapFailures(t, err, []int{3})
		if v, err := mp.Apply[int](ctx, p, square, 4); err != nil || v != 16 {
			t.Fatalf("afterwards Apply = %d, %v", v, err)
		}
	}
	t.Run("process pool", func(t *testing.T) {
		p := newPool(t, 2)
		check(t, p)
		if n := mp.PoolWorkersStarted(p); n != 2 {
			t.Errorf("%d workers started: a Goexit cost a worker", n)
		}
		closeAndJoin(t, p)
	})
	t.Run("thread pool", func(t *testing.T) {
		p, err := mp.NewThreadPool(2)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Terminate()
		check(t, p)
		closeAndJoin(t, p)
	})
	t.Run("initializer", func(t *testing.T) {
		p := newPool(t, 1, mp.WithInitializer(goexitTarget))
		if _, err := mp.Apply[int](ctx, p, square, 2); !errors.Is(err, mp.ErrPoolBroken) || !isGoexit(err) {
			t.Fatalf("process pool: %v", err)
		}
		tp, err := mp.NewThreadPool(1, mp.WithInitializer(goexitTarget))
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Terminate()
		if _, err := mp.Apply[int](ctx, tp, square, 2); !isGoexit(err) {
			t.Fatalf("thread pool: %v", err)
		}
		closeAndJoin(t, tp)
	})
}

package mp_test

import (
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

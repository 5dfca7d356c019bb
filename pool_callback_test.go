package mp_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// bounded is the context calls inside callbacks get: if one deadlocked,
// it fails the test rather than hanging it.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestPoolCallbacksMayUseThePool: a callback may Get its own and other
// results, submit tasks and wait for them, Close, Join and Terminate,
// without deadlock.
func TestPoolCallbacksMayUseThePool(t *testing.T) {
	for _, threads := range []bool{false, true} {
		mk := func(t *testing.T) *mp.Pool {
			if !threads {
				return newPool(t, 2)
			}
			p, err := mp.NewThreadPool(2)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Terminate)
			return p
		}
		t.Run(fmt.Sprint("threads=", threads, "/get and submit"), func(t *testing.T) {
			p := mk(t)
			ctx := bounded(t)
			start := make(chan [2]*mp.AsyncResult[int], 1)
			report := make(chan error, 1)
			first := mp.ApplyAsync[int](p, square, []any{3}, mp.WithCallback(func(v int) {
				rs := <-start
				report <- func() error {
					if got, err := rs[0].Get(ctx); err != nil || got != 9 {
						return fmt.Errorf("Get of its own result = %d, %v", got, err)
					}
					if err := rs[0].Wait(ctx); err != nil {
						return fmt.Errorf("Wait of its own result = %v", err)
					}
					// Its callback is queued behind this one.
					if got, err := rs[1].Get(ctx); err != nil || got != 16 {
						return fmt.Errorf("Get of a result whose callback is queued = %d, %v", got, err)
					}
					if got, err := mp.Apply[int](ctx, p, square, 5); err != nil || got != 25 {
						return fmt.Errorf("Apply = %d, %v", got, err)
					}
					r := mp.ApplyAsync[int](p, square, []any{6}, mp.WithCallback(func(int) {}))
					if got, err := r.Get(ctx); err != nil || got != 36 {
						return fmt.Errorf("ApplyAsync with a callback, then Get = %d, %v", got, err)
					}
					if got, err := mp.Map[int](ctx, p, square, ints(100)); err != nil || len(got) != 100 {
						return fmt.Errorf("Map = %d results, %v", len(got), err)
					}
					if got, err := mp.MapAsync[int](p, square, ints(10)).Get(ctx); err != nil || len(got) != 10 {
						return fmt.Errorf("MapAsync = %d results, %v", len(got), err)
					}
					return nil
				}()
			}))
			second := mp.ApplyAsync[int](p, square, []any{4}, mp.WithCallback(func(int) {}))
			start <- [2]*mp.AsyncResult[int]{first, second}
			if err := <-report; err != nil {
				t.Fatal(err)
			}
			for _, r := range []*mp.AsyncResult[int]{first, second} {
				if _, err := r.Get(ctx); err != nil {
					t.Fatal(err)
				}
			}
			closeAndJoin(t, p)
		})
		t.Run(fmt.Sprint("threads=", threads, "/close and join"), func(t *testing.T) {
			p := mk(t)
			ctx := bounded(t)
			joined := make(chan error, 1)
			var later []*mp.AsyncResult[int]
			mp.ApplyAsync[int](p, squareOrFail, []any{1}, mp.WithErrorCallback(func(error) {
				p.Close()
				joined <- p.Join(ctx)
			}))
			for i := range 50 {
				later = append(later, mp.ApplyAsync[int](p, square, []any{i}, mp.WithCallback(func(int) {})))
			}
			if err := <-joined; err != nil {
				t.Fatalf("Join from an error callback = %v", err)
			}
			for i, r := range later {
				if err := r.Wait(ctx); err != nil && !errors.Is(err, mp.ErrPoolClosed) {
					t.Fatalf("task %d: %v", i, err)
				}
			}
			if err := p.Join(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("terminate", func(t *testing.T) {
		p := newPool(t, 2)
		ctx := bounded(t)
		done := make(chan struct{})
		hung := mp.ApplyAsync[int](p, hang, []any{0}, mp.WithErrorCallback(func(error) {}))
		mp.ApplyAsync[int](p, square, []any{2}, mp.WithCallback(func(int) {
			p.Terminate()
			close(done)
		}))
		<-done
		if _, err := hung.Get(ctx); !errors.Is(err, mp.ErrPoolTerminated) {
			t.Fatalf("task running at Terminate from a callback = %v", err)
		}
		if err := p.Join(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

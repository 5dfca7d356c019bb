package mp_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// outcomes counts the callbacks a call ran, and what they got.
type outcomes[R any] struct {
	mu      sync.Mutex
	results []R
	errs    []error
}

func (o *outcomes[R]) opts() []mp.CallOption {
	return []mp.CallOption{
		mp.WithCallback(func(v R) { o.mu.Lock(); o.results = append(o.results, v); o.mu.Unlock() }),
		mp.WithErrorCallback(func(err error) { o.mu.Lock(); o.errs = append(o.errs, err); o.mu.Unlock() }),
	}
}

func (o *outcomes[R]) counts() (results, errs int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.results), len(o.errs)
}

func eachPool(t *testing.T, f func(t *testing.T, p *mp.Pool)) {
	t.Run("processes", func(t *testing.T) { f(t, newPool(t, 2)) })
	t.Run("threads", func(t *testing.T) {
		p, err := mp.NewThreadPool(2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Terminate)
		f(t, p)
	})
}

// TestStarmapAsyncAndMapAsyncCallbacks: the callback gets the whole slice
// of results once, the error callback the *MapError once, before Get
// returns; exactly one of them runs per call.
func TestStarmapAsyncAndMapAsyncCallbacks(t *testing.T) {
	eachPool(t, func(t *testing.T, p *mp.Pool) {
		ctx := within(t)
		args := [][]any{{1, 2, 3}, {4, 5, 6}, {0, 0, 1}}
		var star outcomes[[]int]
		r := mp.StarmapAsync[int](p, addMul, args, star.opts()...)
		got, err := r.Get(ctx)
		if want := []int{9, 54, 0}; err != nil || !slices.Equal(got, want) {
			t.Fatalf("StarmapAsync = %v, %v; want %v", got, err, want)
		}
		if n, e := star.counts(); n != 1 || e != 0 || !slices.Equal(star.results[0], got) {
			t.Fatalf("StarmapAsync ran %d callbacks (with %v) and %d error callbacks", n, star.results, e)
		}

		var ok outcomes[[]int]
		got, err = mp.MapAsync[int](p, square, ints(50), append(ok.opts(), mp.WithChunkSize(3))...).Get(ctx)
		if err != nil || len(got) != 50 || got[7] != 49 {
			t.Fatalf("MapAsync = %v, %v", got, err)
		}
		if n, e := ok.counts(); n != 1 || e != 0 || !slices.Equal(ok.results[0], got) {
			t.Fatalf("MapAsync ran %d callbacks and %d error callbacks", n, e)
		}

		var bad outcomes[[]int]
		_, err = mp.MapAsync[int](p, squareOrFail, ints(10), bad.opts()...).Get(ctx)
		var me *mp.MapError
		if !errors.As(err, &me) || len(me.Indexes) != 5 {
			t.Fatalf("MapAsync with odd items = %v", err)
		}
		if n, e := bad.counts(); n != 0 || e != 1 || !errors.As(bad.errs[0], &me) || !errors.Is(bad.errs[0], errOdd) {
			t.Fatalf("failing MapAsync ran %d callbacks and %d error callbacks (%v)", n, e, bad.errs)
		}

		var starBad outcomes[[]int]
		_, err = mp.StarmapAsync[int](p, addMul, [][]any{{1, 2}}, starBad.opts()...).Get(ctx)
		if !errors.Is(err, mp.ErrBadArguments) {
			t.Fatalf("StarmapAsync with too few arguments = %v", err)
		}
		if n, e := starBad.counts(); n != 0 || e != 1 {
			t.Fatalf("StarmapAsync with too few arguments ran %d callbacks and %d error callbacks", n, e)
		}
	})
}

// TestAsyncCancelRunsNoCallback: a call given up with Cancel runs neither
// callback, for ApplyAsync, MapAsync and StarmapAsync; a call that was
// done before Cancel has run its own.
func TestAsyncCancelRunsNoCallback(t *testing.T) {
	eachPool(t, func(t *testing.T, p *mp.Pool) {
		ctx := within(t)
		var apply outcomes[time.Duration]
		var maps, stars outcomes[[]time.Duration]
		// Tasks that run until their context ends: a thread pool's
		// goroutine cannot be killed.
		a := mp.ApplyAsync[time.Duration](p, sleepFor, []any{time.Hour}, apply.opts()...)
		m := mp.MapAsync[time.Duration](p, sleepFor, []time.Duration{time.Hour, time.Hour}, maps.opts()...)
		s := mp.StarmapAsync[time.Duration](p, sleepFor, [][]any{{time.Hour}}, stars.opts()...)
		a.Cancel()
		m.Cancel()
		s.Cancel()
		if _, err := a.Get(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled ApplyAsync = %v", err)
		}
		if _, err := m.Get(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled MapAsync = %v", err)
		}
		if _, err := s.Get(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled StarmapAsync = %v", err)
		}
		// A later call's callback runs after any the cancelled ones could
		// have queued.
		var later outcomes[int]
		if _, err := mp.ApplyAsync[int](p, square, []any{3}, later.opts()...).Get(ctx); err != nil {
			t.Fatal(err)
		}
		for name, n := range map[string][2]int{"ApplyAsync": countPair(apply.counts()), "MapAsync": countPair(maps.counts()), "StarmapAsync": countPair(stars.counts())} {
			if n != [2]int{} {
				t.Errorf("cancelled %s ran %d callbacks and %d error callbacks", name, n[0], n[1])
			}
		}
		var done outcomes[int]
		r := mp.ApplyAsync[int](p, square, []any{4}, done.opts()...)
		if _, err := r.Get(ctx); err != nil {
			t.Fatal(err)
		}
		r.Cancel()
		if v, err := r.Get(ctx); err != nil || v != 16 {
			t.Fatalf("Get after a late Cancel = %d, %v", v, err)
		}
		if n, e := done.counts(); n != 1 || e != 0 {
			t.Fatalf("call done before Cancel ran %d callbacks and %d error callbacks", n, e)
		}
	})
}

func countPair(a, b int) [2]int { return [2]int{a, b} }

// TestCallOptionsRefused: a call given an option it does not take fails
// with ErrBadArguments, naming it, and runs no callback.
func TestCallOptionsRefused(t *testing.T) {
	p := newPool(t, 1)
	ctx := within(t)
	var o outcomes[int]
	_, err := mp.ApplyAsync[int](p, square, []any{2}, append(o.opts(), mp.WithChunkSize(2))...).Get(ctx)
	if !errors.Is(err, mp.ErrBadArguments) || !strings.Contains(err.Error(), "ApplyAsync does not take WithChunkSize") {
		t.Fatalf("ApplyAsync with WithChunkSize = %v", err)
	}
	if n, e := o.counts(); n+e != 0 {
		t.Fatalf("refused call ran %d callbacks and %d error callbacks", n, e)
	}
	if _, err := mp.Map[int](ctx, p, square, ints(3), mp.WithCallback(func([]int) {})); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("Map with WithCallback = %v", err)
	}
	for _, err := range mp.Imap[int](ctx, p, square, slices.Values(ints(3)), mp.WithFailFast()) {
		if !errors.Is(err, mp.ErrBadArguments) || !strings.Contains(err.Error(), "Imap does not take WithFailFast") {
			t.Fatalf("Imap with WithFailFast = %v", err)
		}
	}
	// A callback of the wrong type: MapAsync's callback takes the slice.
	_, err = mp.MapAsync[int](p, square, ints(3), mp.WithCallback(func(int) {})).Get(ctx)
	if !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("MapAsync with a func(int) callback = %v", err)
	}
	closeAndJoin(t, p)
}

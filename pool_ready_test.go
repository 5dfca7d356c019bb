package mp_test

import (
	"context"
	"errors"
	"testing"

	"github.com/multiproc/mp"
)

// TestReadyOutcomeWinsOverEndedContext: once the work is done, a call
// given a context that has ended returns the outcome, every time (a
// select with both ready picks at random).
func TestReadyOutcomeWinsOverEndedContext(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	ctx := within(t)

	proc := mp.NewProcess(fail, "on purpose")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	var pe *mp.ProcessError
	if err := proc.Join(ctx); !errors.As(err, &pe) {
		t.Fatalf("Join = %v", err)
	}
	th := mp.NewThread(func() {})
	if err := th.Start(); err != nil {
		t.Fatal(err)
	}
	if err := th.Join(ctx); err != nil {
		t.Fatal(err)
	}

	p := newPool(t, 1)
	r := mp.ApplyAsync[int](p, square, []any{3})
	rc := mp.ApplyAsync[int](p, square, []any{4}, mp.WithCallback(func(int) {}))
	for _, r := range []*mp.AsyncResult[int]{r, rc} {
		if _, err := r.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}

	for i := range 200 {
		if err := proc.Join(cancelled); !errors.As(err, &pe) {
			t.Fatalf("call %d: Process.Join = %v, want its *ProcessError", i, err)
		}
		if err := th.Join(cancelled); err != nil {
			t.Fatalf("call %d: Thread.Join = %v", i, err)
		}
		if v, err := r.Get(cancelled); err != nil || v != 9 {
			t.Fatalf("call %d: Get = %d, %v", i, v, err)
		}
		if v, err := rc.Get(cancelled); err != nil || v != 16 {
			t.Fatalf("call %d: Get with callback = %d, %v", i, v, err)
		}
		if err := r.Wait(cancelled); err != nil {
			t.Fatalf("call %d: Wait = %v", i, err)
		}
		if err := p.Join(cancelled); err != nil {
			t.Fatalf("call %d: Pool.Join = %v", i, err)
		}
	}
}

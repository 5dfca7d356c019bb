package mp_test

import (
	"errors"
	"testing"

	"github.com/multiproc/mp"
)

func usePool(p *mp.Pool) int { return 0 }

type withPool struct {
	P *mp.Pool
}

func useWithPool(w withPool) int { return 0 }

func init() { mp.Register(usePool, useWithPool) }

// TestPoolBadSizes: negative sizes are errors; 0 keeps its meaning.
func TestPoolBadSizes(t *testing.T) {
	for name, mk := range map[string]func() (*mp.Pool, error){
		"NewPool(-1)":              func() (*mp.Pool, error) { return mp.NewPool(-1) },
		"NewThreadPool(-1)":        func() (*mp.Pool, error) { return mp.NewThreadPool(-1) },
		"WithMaxTasksPerChild(-1)": func() (*mp.Pool, error) { return mp.NewPool(1, mp.WithMaxTasksPerChild(-1)) },
		"WithRetries(-1)":          func() (*mp.Pool, error) { return mp.NewPool(1, mp.WithRetries(-1)) },
		"WithTaskTimeout(-1)":      func() (*mp.Pool, error) { return mp.NewThreadPool(1, mp.WithTaskTimeout(-1)) },
	} {
		p, err := mk()
		if !errors.Is(err, mp.ErrBadArguments) {
			t.Errorf("%s = %v, want ErrBadArguments", name, err)
		}
		if p != nil {
			p.Terminate()
		}
	}
	p := newPool(t, 0, mp.WithMaxTasksPerChild(0), mp.WithRetries(0))
	if v, err := mp.Apply[int](within(t), p, square, 3); err != nil || v != 9 {
		t.Fatalf("NewPool(0) Apply = %d, %v", v, err)
	}
	tp, err := mp.NewThreadPool(0)
	if err != nil {
		t.Fatal(err)
	}
	tp.Terminate()
}

// TestPoolIsUnencodable: a *Pool given to a process pool's task or to a
// Process fails at the call with ErrUnencodable.
func TestPoolIsUnencodable(t *testing.T) {
	p := newPool(t, 1)
	ctx := within(t)
	if _, err := mp.Apply[int](ctx, p, usePool, p); !errors.Is(err, mp.ErrUnencodable) {
		t.Errorf("Apply with a *Pool argument = %v, want ErrUnencodable", err)
	}
	if _, err := mp.Apply[int](ctx, p, useWithPool, withPool{p}); !errors.Is(err, mp.ErrUnencodable) {
		t.Errorf("Apply with a *Pool in a struct = %v, want ErrUnencodable", err)
	}
	if _, err := mp.Map[int](ctx, p, usePool, []*mp.Pool{p, p}); !errors.Is(err, mp.ErrUnencodable) {
		t.Errorf("Map over *Pools = %v, want ErrUnencodable", err)
	}
	if err := mp.NewProcess(usePool, p).Start(); !errors.Is(err, mp.ErrUnencodable) {
		t.Errorf("Process with a *Pool argument: Start = %v, want ErrUnencodable", err)
	}
	// A thread pool's tasks take anything, a pool too.
	tp, err := mp.NewThreadPool(1)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Terminate()
	if _, err := mp.Apply[int](ctx, tp, usePool, p); err != nil {
		t.Errorf("thread pool task with a *Pool = %v", err)
	}
}

package mp_test

import (
	"context"
	"errors"
	"testing"

	"github.com/multiproc/mp"
)

// Top-level functions whose names look like the runtime's names for
// function literals, as seed programs have them.
func func1(x int) int { return x + 1 }
func func2(x int) int { return x + 2 }

func init() { mp.Register(func1, func2) }

func TestRegisterTopLevelFuncN(t *testing.T) {
	pool := mp.Must(mp.NewPool(1))
	defer pool.Join(context.Background())
	defer pool.Close()
	for i, f := range []func(int) int{func1, func2} {
		got, err := mp.Apply[int](context.Background(), pool, f, 10)
		if want := 11 + i; err != nil || got != want {
			t.Fatalf("func%d(10) in a worker = %d, %v; want %d", i+1, got, err, want)
		}
	}
}

func TestRegisterRefusesLiteralsWithSentinel(t *testing.T) {
	n := 3
	closure := func() int { return n }
	for name, fn := range map[string]any{"closure": closure, "method value": t.Name} {
		func() {
			defer func() {
				err, _ := recover().(error)
				if !errors.Is(err, mp.ErrBadArguments) {
					t.Errorf("Register(%s) panicked with %v, want an error wrapping ErrBadArguments", name, err)
				}
			}()
			mp.Register(fn)
		}()
	}
}

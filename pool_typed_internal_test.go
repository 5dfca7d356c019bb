package mp

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/multiproc/mp/internal/codec"
)

func typedSquare(x int) int { return x * x }

func typedHalf(x int64) (float64, error) {
	if x%5 == 4 {
		return 0, fmt.Errorf("%d: no", x)
	}
	if x%7 == 6 {
		panic(fmt.Sprintf("%d: panic", x))
	}
	return float64(x) / 2, nil
}

func typedLen(ctx context.Context, s string) int { return len(s) }

type typedPoint struct{ X int }

func typedPointX(p typedPoint) int { return p.X }

// TestTypedBatch: the functions of the types with a compiled loop get one
// at Register, the others do not, and a batch run through the loop gives
// exactly what the reflective path gives, failures and panics included.
func TestTypedBatch(t *testing.T) {
	Register(typedSquare, typedHalf, typedLen, typedPointX)
	for _, c := range []struct {
		fn   any
		want bool
	}{{typedSquare, true}, {typedHalf, true}, {typedLen, true}, {typedPointX, false}} {
		fn, want := c.fn, c.want
		tg, err := lookup(fn)
		if err != nil {
			t.Fatal(err)
		}
		if got := tg.batch != nil; got != want {
			t.Errorf("%s: compiled loop %v, want %v", tg.name, got, want)
		}
	}
	run := func(fn any, args any, typed bool) (vals any, fails []callFailure) {
		t.Helper()
		tg, err := lookup(fn)
		if err != nil {
			t.Fatal(err)
		}
		if !typed {
			c := *tg
			c.batch = nil
			tg = &c
		}
		data, err := codec.Marshal(args)
		if err != nil {
			t.Fatal(err)
		}
		n := reflect.ValueOf(args).Len()
		r, err := newBatchRun(context.Background(), tg, 1, data, n)
		if err != nil {
			t.Fatal(err)
		}
		for r.at < r.n {
			r.at = r.runFrom(r.at)
		}
		return r.vals.Interface(), r.fails
	}
	ints := make([]int, 50)
	int64s := make([]int64, 50)
	strs := make([]string, 50)
	for i := range ints {
		ints[i], int64s[i], strs[i] = i, int64(i), fmt.Sprint(i*i)
	}
	for _, c := range []struct {
		fn   any
		args any
	}{{typedSquare, ints}, {typedHalf, int64s}, {typedLen, strs}} {
		tv, tf := run(c.fn, c.args, true)
		rv, rf := run(c.fn, c.args, false)
		if !reflect.DeepEqual(tv, rv) {
			t.Errorf("%T: values %v, reflective %v", c.fn, tv, rv)
		}
		if len(tf) != len(rf) {
			t.Fatalf("%T: %d failures, reflective %d", c.fn, len(tf), len(rf))
		}
		for i := range tf {
			if tf[i].i != rf[i].i || tf[i].ce.Message != rf[i].ce.Message || tf[i].ce.Panicked != rf[i].ce.Panicked {
				t.Errorf("%T: failure %d: %+v, reflective %+v", c.fn, i, *tf[i].ce, *rf[i].ce)
			}
		}
	}
	// typedHalf: items 4, 9, 14, ... fail, 6, 13, 20, ... panic (and 34
	// does both: the error comes first).
	_, fails := run(typedHalf, int64s, true)
	var idx []int
	for _, f := range fails {
		idx = append(idx, f.i)
	}
	if len(idx) == 0 || idx[0] != 4 || idx[1] != 6 || !fails[1].ce.Panicked {
		t.Fatalf("typedHalf failures at %v", idx)
	}
	// A cancelled task fails its remaining calls with the context's error.
	tg, _ := lookup(typedSquare)
	data, _ := codec.Marshal(ints)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := newBatchRun(ctx, tg, 1, data, len(ints))
	if err != nil {
		t.Fatal(err)
	}
	r.runFrom(0)
	if len(r.fails) != len(ints) || !errors.Is(r.fails[0].ce.err, context.Canceled) {
		t.Fatalf("cancelled batch: %d failures, first %v", len(r.fails), r.fails[0].ce)
	}
}

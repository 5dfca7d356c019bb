package mp_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

func byteLen(b []byte) int { return len(b) }

// bigBytes returns n MiB.
func bigBytes(n int) []byte { return make([]byte, n<<20) }

func init() { mp.Register(byteLen, bigBytes) }

// TestPoolOversizedTasks: an argument, a chunk or a result larger than a
// worker's pipe carries fails its task with ErrTooLarge; the worker stays
// in service and later tasks run.
func TestPoolOversizedTasks(t *testing.T) {
	p := newPool(t, 1)
	// Generous: a machine loaded by -race and other tests moves hundreds
	// of MiB slowly; the bound is for a hang, not for speed.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	huge := make([]byte, 70<<20)
	stillWorks := func(what string) {
		t.Helper()
		if v, err := mp.Apply[int](ctx, p, square, 7); err != nil || v != 49 {
			t.Fatalf("after %s: Apply = %d, %v", what, v, err)
		}
	}

	if _, err := mp.Apply[int](ctx, p, byteLen, huge); !errors.Is(err, mp.ErrTooLarge) {
		t.Fatalf("Apply of a 70 MiB argument = %v, want ErrTooLarge", err)
	}
	stillWorks("a 70 MiB argument")
	r := mp.ApplyAsync[int](p, byteLen, []any{huge})
	if _, err := r.Get(ctx); !errors.Is(err, mp.ErrTooLarge) {
		t.Fatalf("ApplyAsync of a 70 MiB argument = %v, want ErrTooLarge", err)
	}

	// A chunk of two 40 MiB items is too large; each alone is not.
	items := [][]byte{make([]byte, 40<<20), make([]byte, 40<<20)}
	_, err := mp.Map[int](ctx, p, byteLen, items, mp.WithChunkSize(2))
	if me := mapFailures(t, err, []int{0, 1}); !errors.Is(me.Errs[0], mp.ErrTooLarge) {
		t.Fatalf("Map of an 80 MiB chunk: %v, want ErrTooLarge", err)
	}
	if got, err := mp.Map[int](ctx, p, byteLen, items, mp.WithChunkSize(1)); err != nil || got[0] != 40<<20 || got[1] != 40<<20 {
		t.Fatalf("Map of two 40 MiB items one per task = %v, %v", got, err)
	}
	// Starmap's item-by-item chunk: the item that overflows it fails.
	_, err = mp.Starmap[int](ctx, p, byteLen, [][]any{{items[0]}, {items[1]}}, mp.WithChunkSize(2))
	mapFailures(t, err, []int{1})
	stillWorks("an oversized chunk")

	if _, err := mp.Apply[[]byte](ctx, p, bigBytes, 70); !errors.Is(err, mp.ErrTooLarge) {
		t.Fatalf("a 70 MiB result = %v, want ErrTooLarge", err)
	}
	stillWorks("a 70 MiB result")
	// Results of a chunk: a value that does not fit with those before
	// it fails; the others go.
	got, err := mp.Map[[]byte](ctx, p, bigBytes, []int{40, 40, 1}, mp.WithChunkSize(3))
	mapFailures(t, err, []int{1})
	if len(got[0]) != 40<<20 || len(got[2]) != 1<<20 {
		t.Fatalf("results of the chunk: %d and %d bytes", len(got[0]), len(got[2]))
	}
	stillWorks("an oversized chunk of results")
	if n := mp.PoolWorkersStarted(p); n != 1 {
		t.Errorf("%d workers started, want the one", n)
	}
	closeAndJoin(t, p)
}

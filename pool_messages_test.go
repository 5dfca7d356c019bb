package mp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/multiproc/mp"
)

// TestArgumentNumbersFromOne: an argument that cannot be decoded in a
// worker is argument 1, whether its item travelled alone or in a batched
// chunk, as the parent's own checks count.
func TestArgumentNumbersFromOne(t *testing.T) {
	p := newPool(t, 1)
	ctx := within(t)
	pk := []picky{0, 7}
	for _, chunk := range []int{1, 2} {
		_, err := mp.Map[int](ctx, p, pickyDouble, pk, mp.WithChunkSize(chunk))
		var me *mp.MapError
		if !errors.As(err, &me) || len(me.Errs) != 1 || !strings.Contains(me.Errs[0].Error(), "argument 1 (") {
			t.Fatalf("chunks of %d: %v, want argument 1 named", chunk, err)
		}
	}
	_, err := mp.Apply[int](ctx, p, addMul, 1, "two", 3)
	if !errors.Is(err, mp.ErrBadArguments) || !strings.Contains(err.Error(), "argument 2") {
		t.Fatalf("Apply with a string second = %v", err)
	}
	closeAndJoin(t, p)
}

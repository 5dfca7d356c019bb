package mp_test

import (
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"testing"

	"github.com/multiproc/mp"
)

func anyOne(v any) int { return 1 }

func init() { mp.Register(anyOne) }

// panicAfter yields 0 to n-1, then panics.
func panicAfter(n int, pulled *int) iter.Seq[int] {
	return func(yield func(int) bool) {
		for i := range n {
			*pulled++
			if !yield(i) {
				return
			}
		}
		panic("input broke")
	}
}

// TestPoolImapInputFails: the results of the items before the input's
// panic are yielded first (in order for Imap), then the failure; an item
// that cannot be sent fails in its place; read-ahead is bounded.
func TestPoolImapInputFails(t *testing.T) {
	ctx := within(t)
	p := newPool(t, 2)
	for _, ordered := range []bool{true, false} {
		for _, chunk := range []int{1, 3} {
			t.Run(fmt.Sprint("ordered=", ordered, ",chunk=", chunk), func(t *testing.T) {
				imap := mp.ImapUnordered[int, int]
				if ordered {
					imap = mp.Imap[int, int]
				}
				var got []int
				var errs []error
				pulled := 0
				for v, err := range imap(ctx, p, square, panicAfter(10, &pulled), mp.WithChunkSize(chunk)) {
					if err != nil {
						errs = append(errs, err)
						continue
					}
					if len(errs) > 0 {
						t.Fatalf("result %d after the failure", v)
					}
					got = append(got, v)
				}
				if !ordered {
					slices.Sort(got)
				}
				want := make([]int, 10)
				for i := range want {
					want[i] = i * i
				}
				if !slices.Equal(got, want) {
					t.Errorf("results before the failure: %v, want %v", got, want)
				}
				if len(errs) != 1 || !strings.Contains(errs[0].Error(), "input broke") {
					t.Errorf("errors %v, want the input's panic once, last", errs)
				}
			})
		}
	}
	t.Run("unencodable item", func(t *testing.T) {
		items := slices.Values([]any{1, func() {}, 3, 4})
		var got []string
		for v, err := range mp.Imap[int](ctx, p, anyOne, items, mp.WithChunkSize(2)) {
			if err != nil {
				if !errors.Is(err, mp.ErrUnencodable) {
					t.Errorf("error %v, want ErrUnencodable", err)
				}
				got = append(got, "err")
				continue
			}
			got = append(got, fmt.Sprint(v))
		}
		if want := []string{"1", "err", "1", "1"}; !slices.Equal(got, want) {
			t.Errorf("Imap = %v, want %v", got, want)
		}
	})
	t.Run("read-ahead", func(t *testing.T) {
		pulled := 0
		endless := func(yield func(int) bool) {
			for i := 0; ; i++ {
				pulled++
				if !yield(i % 100) {
					return
				}
			}
		}
		n := 0
		for _, err := range mp.Imap[int](ctx, p, square, endless, mp.WithChunkSize(3)) {
			if err != nil {
				t.Fatal(err)
			}
			if n++; n == 30 {
				break
			}
		}
		// 4 tasks per worker of 3 items each, beyond those consumed.
		if limit := 30 + 4*2*3 + 3; pulled > limit {
			t.Errorf("%d items read for 30 results, want at most %d", pulled, limit)
		}
	})
	closeAndJoin(t, p)
}

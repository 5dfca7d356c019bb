package mp_test

import (
	"context"
	"fmt"
	"slices"

	"github.com/multiproc/mp"
)

func cubed(x int) int { return x * x * x }

func init() { mp.Register(cubed) }

func ExampleMap() {
	pool := mp.Must(mp.NewPool(2))
	defer pool.Join(context.Background())
	defer pool.Close()

	cubes, err := mp.Map[int](context.Background(), pool, cubed, []int{1, 2, 3, 4})
	fmt.Println(cubes, err)
	// Output: [1 8 27 64] <nil>
}

// Python's apply_async with a callback, then close and join: every task
// submitted before Close runs, and its callback runs before Join returns.
func ExampleApplyAsync() {
	ctx := context.Background()
	pool := mp.Must(mp.NewPool(2))
	var got []int // callbacks run one at a time, in the parent
	for x := 1; x <= 5; x++ {
		mp.ApplyAsync[int](pool, cubed, []any{x}, mp.WithCallback(func(c int) { got = append(got, c) }))
	}
	pool.Close()
	if err := pool.Join(ctx); err != nil {
		fmt.Println(err)
	}
	slices.Sort(got)
	fmt.Println(got)
	// Output: [1 8 27 64 125]
}

func ExampleImap() {
	pool := mp.Must(mp.NewPool(2))
	defer pool.Join(context.Background())
	defer pool.Close()

	// An endless input: Imap reads only a few items ahead of the results.
	naturals := func(yield func(int) bool) {
		for i := 1; yield(i); i++ {
		}
	}
	for c, err := range mp.Imap[int](context.Background(), pool, cubed, naturals) {
		if err != nil || c > 100 {
			break
		}
		fmt.Print(c, " ")
	}
	fmt.Println()
	// Output: 1 8 27 64
}

func power(base, exp int) int {
	r := 1
	for range exp {
		r *= base
	}
	return r
}

func init() { mp.Register(power) }

// Python's starmap_async: functions of several arguments, without
// waiting.
func ExampleStarmapAsync() {
	pool := mp.Must(mp.NewPool(2))
	defer pool.Join(context.Background())
	defer pool.Close()

	r := mp.StarmapAsync[int](pool, power, [][]any{{2, 10}, {3, 3}, {10, 2}})
	got, err := r.Get(context.Background())
	fmt.Println(got, err)
	// Output: [1024 27 100] <nil>
}

// Python's map_async with callback= and error_callback=: one of them runs,
// once, in the parent, before Get returns; the callback gets the whole
// slice of results.
func ExampleMapAsync() {
	pool := mp.Must(mp.NewPool(2))
	defer pool.Join(context.Background())
	defer pool.Close()

	r := mp.MapAsync[int](pool, cubed, []int{1, 2, 3},
		mp.WithCallback(func(cubes []int) { fmt.Println("callback:", cubes) }),
		mp.WithErrorCallback(func(err error) { fmt.Println("error callback:", err) }))
	cubes, err := r.Get(context.Background())
	fmt.Println(cubes, err)
	// Output:
	// callback: [1 8 27]
	// [1 8 27] <nil>
}

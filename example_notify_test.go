package mp_test

import (
	"context"
	"fmt"

	"github.com/multiproc/mp"
)

// A main that stops its tree gracefully on Ctrl-C or SIGTERM: the work
// takes the context NotifyContext returns, and Shutdown, deferred first,
// runs last. Here no signal comes: Map runs every item.
func ExampleNotifyContext() {
	// In main: mp.Init(), then defer mp.Shutdown() (which, after a signal,
	// exits with status 130 or 143 once the tree is down).
	ctx, stop := mp.NotifyContext(context.Background())
	defer stop()

	pool, err := mp.NewPool(2)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Terminate()
	// On a signal, Map would return the results computed so far and a
	// *MapError whose NotRun items never started.
	squares, err := mp.Map[int](ctx, pool, square, []int{1, 2, 3})
	fmt.Println(squares, err)
	// Output: [1 4 9] <nil>
}

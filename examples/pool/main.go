// Pool is the seeds' process pool (seed 003): a pool of four worker
// processes (-workers), made once and reused, runs the same tasks (eight
// by default, -n) twice.
//
// First with mp.Apply, Python's apply: a synchronous call, which waits for
// each task's result before submitting the next, so the tasks run one
// after another however many workers there are. Then with mp.ApplyAsync,
// Python's apply_async: every task is submitted at once, the workers run
// them side by side, and the results are collected afterwards with Get,
// in the order the tasks were submitted whatever order they finished in.
//
// Each task stands for real work by sleeping, and returns its input
// squared with the pid of the worker that ran it, so the output shows
// both the order of the results and which processes did the work. Both
// elapsed times are printed, and their ratio: about the number of workers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/multiproc/mp"
)

// Result is what a task sends back: its fields travel, encoded, from the
// worker to the parent.
type Result struct {
	N, Square int
	Pid       int
}

// work is the task: it takes d, standing for real work, and squares n.
func work(n int, d time.Duration) Result {
	pid := os.Getpid()
	fmt.Printf("worker %d working on %d\n", pid, n)
	time.Sleep(d)
	return Result{N: n, Square: n * n, Pid: pid}
}

func init() { mp.Register(work) }

func show(r Result) { fmt.Printf("%d squared is %d (worker %d)\n", r.N, r.Square, r.Pid) }

// serial submits the tasks one at a time, each after the previous result.
func serial(ctx context.Context, pool *mp.Pool, n int, d time.Duration) error {
	for i := range n {
		r, err := mp.Apply[Result](ctx, pool, work, i, d)
		if err != nil {
			return fmt.Errorf("task %d: %w", i, err)
		}
		show(r)
	}
	return nil
}

// parallel submits every task before asking for any result.
func parallel(ctx context.Context, pool *mp.Pool, n int, d time.Duration) error {
	results := make([]*mp.AsyncResult[Result], n)
	for i := range n {
		results[i] = mp.ApplyAsync[Result](pool, work, []any{i, d})
	}
	// Unlike Python, there is no need to close and join the pool before
	// collecting: Get waits for its own result.
	for i, a := range results {
		r, err := a.Get(ctx)
		if err != nil {
			return fmt.Errorf("task %d: %w", i, err)
		}
		show(r)
	}
	return nil
}

func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

// fail reports err and exits with status 1, killing the pool first so
// that nothing is left waiting for its workers.
func fail(pool *mp.Pool, err error) {
	fmt.Fprintln(os.Stderr, "pool:", err)
	if pool != nil {
		pool.Terminate()
	}
	mp.Shutdown()
	os.Exit(1)
}

func main() {
	mp.Init()
	defer mp.Shutdown()
	workers := flag.Int("workers", 4, "worker processes in the pool")
	n := flag.Int("n", 8, "tasks in each run")
	d := flag.Duration("work", 200*time.Millisecond, "how long each task works")
	timeout := flag.Duration("timeout", time.Minute, "give up if the whole program takes longer than this")
	flag.Parse()
	if *workers < 1 || *n < 0 || *d < 0 {
		fail(nil, errors.New("-workers must be at least 1, -n and -work must not be negative"))
	}
	// Every wait below is bounded: a bug shows up as an error, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	pool, err := mp.NewPool(*workers)
	if err != nil {
		fail(nil, err)
	}
	fmt.Printf("main process %d, pool of %d workers, %d tasks of %v each\n", os.Getpid(), *workers, *n, *d)

	fmt.Println("== apply: one task at a time ==")
	tSerial, err := timed(func() error { return serial(ctx, pool, *n, *d) })
	if err != nil {
		fail(pool, err)
	}
	fmt.Println("== apply_async: all tasks at once, then Get in order ==")
	tParallel, err := timed(func() error { return parallel(ctx, pool, *n, *d) })
	if err != nil {
		fail(pool, err)
	}

	// No more work: the workers exit once they are idle, and Join waits
	// for that.
	pool.Close()
	if err := pool.Join(ctx); err != nil {
		fail(pool, err)
	}

	fmt.Printf("apply took %v\n", tSerial.Round(time.Millisecond))
	fmt.Printf("apply_async took %v\n", tParallel.Round(time.Millisecond))
	if tParallel > 0 {
		fmt.Printf("apply_async was %.1fx as fast with %d workers\n", float64(tSerial)/float64(tParallel), *workers)
	}
}

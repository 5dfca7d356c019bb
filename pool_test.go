package mp_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp"
)

var errOdd = errors.New("odd input")

func square(x int) int { return x * x }

func squareOrFail(x int) (int, error) {
	if x%2 == 1 {
		return 0, fmt.Errorf("item %d: %w", x, errOdd)
	}
	return x * x, nil
}

func addMul(a, b, c int) int { return (a + b) * c }

func pid(int) int { return os.Getpid() }

// dieOn kills its own process for x == victim; other items are squared.
func dieOn(x, victim int) int {
	if x == victim {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	return x * x
}

func exitOn(x, victim int) int {
	if x == victim {
		os.Exit(3)
	}
	return x * x
}

// sleepFor sleeps, honouring ctx, and returns how long it slept.
func sleepFor(ctx context.Context, d time.Duration) (time.Duration, error) {
	select {
	case <-time.After(d):
		return d, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// hang ignores its context: only killing the worker ends it.
func hang(int) int {
	select {}
}

func panicOnTwo(x int) int {
	if x == 2 {
		panic("two is not allowed")
	}
	return x
}

func resultFunc(int) func() { return func() {} }

var initialized string

func setInit(s string) { initialized = s }

func readInit(int) string { return initialized }

func failInit() error { return errors.New("no database") }

func init() {
	mp.Register(square, squareOrFail, addMul, pid, dieOn, exitOn, sleepFor, hang, panicOnTwo, resultFunc, setInit, readInit, failInit)
	mp.RegisterError(errOdd)
}

func newPool(t *testing.T, n int, opts ...mp.PoolOption) *mp.Pool {
	t.Helper()
	p, err := mp.NewPool(n, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Terminate()
	})
	return p
}

func closeAndJoin(t *testing.T, p *mp.Pool) {
	t.Helper()
	p.Close()
	if err := p.Join(within(t)); err != nil {
		t.Fatalf("Join: %v", err)
	}
}

func TestPoolApplyMapStarmap(t *testing.T) {
	p := newPool(t, 2)
	ctx := within(t)
	if v, err := mp.Apply[int](ctx, p, square, 7); err != nil || v != 49 {
		t.Fatalf("Apply = %d, %v", v, err)
	}
	if v, err := mp.Apply[int](ctx, p, addMul, 1, 2, 3); err != nil || v != 9 {
		t.Fatalf("Apply of three arguments = %d, %v", v, err)
	}
	items := make([]int, 1000)
	for i := range items {
		items[i] = i
	}
	for _, opts := range [][]mp.CallOption{nil, {mp.WithChunkSize(1)}, {mp.WithChunkSize(7)}} {
		got, err := mp.Map[int](ctx, p, square, items, opts...)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range got {
			if v != i*i {
				t.Fatalf("Map[%d] = %d", i, v)
			}
		}
	}
	got, err := mp.Starmap[int](ctx, p, addMul, [][]any{{1, 1, 1}, {2, 3, 4}})
	if err != nil || !slices.Equal(got, []int{2, 20}) {
		t.Fatalf("Starmap = %v, %v", got, err)
	}
	if got, err := mp.Map[int](ctx, p, square, []int{}); err != nil || len(got) != 0 {
		t.Fatalf("Map of nothing = %v, %v", got, err)
	}
	closeAndJoin(t, p)
	if _, err := mp.Apply[int](ctx, p, square, 1); !errors.Is(err, mp.ErrPoolClosed) {
		t.Fatalf("Apply after Close = %v", err)
	}
}

func TestPoolApplyAsyncCallbacks(t *testing.T) {
	p := newPool(t, 2)
	var mu sync.Mutex
	var seen []int
	var errs []error
	running := 0
	var results []*mp.AsyncResult[int]
	for i := range 50 {
		results = append(results, mp.ApplyAsync[int](p, squareOrFail, []any{i},
			mp.WithCallback(func(v int) {
				mu.Lock()
				running++
				if running != 1 {
					t.Error("two callbacks ran at once")
				}
				seen = append(seen, v)
				running--
				mu.Unlock()
			}),
			mp.WithErrorCallback(func(err error) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			})))
	}
	ctx := within(t)
	for i, r := range results {
		v, err := r.Get(ctx)
		switch {
		case i%2 == 1 && !errors.Is(err, errOdd):
			t.Fatalf("item %d: %v, want errOdd", i, err)
		case i%2 == 0 && (err != nil || v != i*i):
			t.Fatalf("item %d: %d, %v", i, v, err)
		}
		if !r.Ready() || r.Successful() != (i%2 == 0) {
			t.Fatalf("item %d: Ready %v Successful %v", i, r.Ready(), r.Successful())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 25 || len(errs) != 25 {
		t.Fatalf("%d callbacks, %d error callbacks; want 25 each", len(seen), len(errs))
	}
	var te *mp.TaskError
	if !errors.As(errs[0], &te) || !strings.Contains(te.Message, "odd input") {
		t.Fatalf("error callback got %#v", errs[0])
	}
}

func TestPoolCallbackPanics(t *testing.T) {
	p := newPool(t, 1)
	bad := mp.ApplyAsync[int](p, square, []any{2}, mp.WithCallback(func(int) { panic("callback bug") }))
	good := mp.ApplyAsync[int](p, square, []any{3}, mp.WithCallback(func(int) {}))
	ctx := within(t)
	if _, err := bad.Get(ctx); err == nil || !strings.Contains(err.Error(), "callback bug") {
		t.Fatalf("result of a task whose callback panicked = %v", err)
	}
	if v, err := good.Get(ctx); err != nil || v != 9 {
		t.Fatalf("next task = %d, %v", v, err)
	}
}

func TestPoolWorkerKilled(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   any
		code int
	}{{"SIGKILL", dieOn, -9}, {"os.Exit", exitOn, 3}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t, 2)
			ctx := within(t)
			got, err := mp.Starmap[int](ctx, p, tc.fn, argPairs(40, 13), mp.WithChunkSize(1))
			var me *mp.MapError
			if !errors.As(err, &me) || !slices.Equal(me.Indexes, []int{13}) {
				t.Fatalf("Starmap error = %v, want item 13 only", err)
			}
			var wl *mp.WorkerLostError
			if !errors.Is(err, mp.ErrWorkerLost) || !errors.As(err, &wl) || wl.ExitCode != tc.code || wl.Pid == 0 {
				t.Fatalf("lost task error = %#v, want WorkerLostError with code %d", me.Errs[0], tc.code)
			}
			for i, v := range got {
				if i != 13 && v != i*i {
					t.Fatalf("item %d = %d", i, v)
				}
			}
			// The pool still works, with a replaced worker.
			if v, err := mp.Apply[int](ctx, p, square, 5); err != nil || v != 25 {
				t.Fatalf("Apply after the death = %d, %v", v, err)
			}
			closeAndJoin(t, p)
		})
	}
}

func argPairs(n, victim int) [][]any {
	args := make([][]any, n)
	for i := range args {
		args[i] = []any{i, victim}
	}
	return args
}

func TestPoolRetries(t *testing.T) {
	// Every attempt at item 1 kills its worker: with two retries it runs
	// three times, then fails.
	p := newPool(t, 2, mp.WithRetries(2))
	_, err := mp.Apply[int](within(t), p, dieOn, 1, 1)
	if !errors.Is(err, mp.ErrWorkerLost) {
		t.Fatalf("Apply = %v, want ErrWorkerLost", err)
	}
	closeAndJoin(t, p)
}

func TestPoolTimeouts(t *testing.T) {
	p := newPool(t, 2, mp.WithTaskTimeout(200*time.Millisecond))
	ctx := within(t)
	if _, err := mp.Apply[int](ctx, p, hang, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hanging task with a pool timeout = %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := mp.Apply[int](short, p, hang, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hanging task with a call deadline = %v", err)
	}
	// The rest goes on.
	got, err := mp.Map[int](ctx, p, square, []int{1, 2, 3})
	if err != nil || !slices.Equal(got, []int{1, 4, 9}) {
		t.Fatalf("Map after timeouts = %v, %v", got, err)
	}
	// A task that takes its context sees the deadline itself.
	if _, err := mp.Apply[time.Duration](ctx, p, sleepFor, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sleeping task = %v", err)
	}
	closeAndJoin(t, p)
}

func TestPoolCancel(t *testing.T) {
	p := newPool(t, 1)
	r := mp.ApplyAsync[int](p, hang, []any{1})
	queued := mp.ApplyAsync[int](p, square, []any{4})
	r.Cancel()
	if _, err := r.Get(within(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled task = %v", err)
	}
	if v, err := queued.Get(within(t)); err != nil || v != 16 {
		t.Fatalf("task queued behind it = %d, %v", v, err)
	}
	closeAndJoin(t, p)
}

func TestPoolErrors(t *testing.T) {
	p := newPool(t, 2)
	ctx := within(t)
	_, err := mp.Apply[int](ctx, p, panicOnTwo, 2)
	var te *mp.TaskError
	if !errors.As(err, &te) || !te.Panicked || !strings.Contains(te.Stack, "panicOnTwo") {
		t.Fatalf("panic = %#v", err)
	}
	if _, err := mp.Apply[int](ctx, p, square, func() {}); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("func argument = %v", err)
	}
	if _, err := mp.Apply[func()](ctx, p, resultFunc, 1); !errors.Is(err, mp.ErrUnencodable) {
		t.Fatalf("unencodable result = %v", err)
	}
	if _, err := mp.Apply[int](ctx, p, func(x int) int { return x }, 1); err == nil {
		t.Fatal("a function literal ran in a process pool")
	}
	if _, err := mp.Apply[string](ctx, p, square, 1); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("wrong result type = %v", err)
	}
	if _, err := mp.Apply[int](ctx, p, square, "x"); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("wrong argument type = %v", err)
	}
	_, err = mp.Map[int](ctx, p, squareOrFail, []int{0, 1, 2, 3, 4})
	var me *mp.MapError
	if !errors.As(err, &me) || !slices.Equal(me.Indexes, []int{1, 3}) || !errors.Is(err, errOdd) {
		t.Fatalf("Map with failures = %v", err)
	}
	// No worker was lost to any of it.
	if v, err := mp.Apply[int](ctx, p, square, 3); err != nil || v != 9 {
		t.Fatalf("Apply after errors = %d, %v", v, err)
	}
	closeAndJoin(t, p)
}

func TestPoolFailFast(t *testing.T) {
	p := newPool(t, 1)
	items := make([]int, 200)
	for i := range items {
		items[i] = 2 * i
	}
	items[0] = 1 // fails first
	_, err := mp.Map[int](within(t), p, squareOrFail, items, mp.WithChunkSize(1), mp.WithFailFast())
	var me *mp.MapError
	if !errors.As(err, &me) || me.Indexes[0] != 0 || !errors.Is(me.Errs[0], errOdd) {
		t.Fatalf("Map = %v", err)
	}
	if len(me.Indexes) < 100 || !errors.Is(me.Errs[len(me.Errs)-1], context.Canceled) {
		t.Fatalf("%d items failed; WithFailFast should have cancelled most of the 199 not started", len(me.Indexes))
	}
	closeAndJoin(t, p)
}

func TestPoolImap(t *testing.T) {
	p := newPool(t, 2)
	ctx := within(t)
	naturals := func(yield func(int) bool) {
		for i := 0; ; i++ {
			if !yield(i) {
				return
			}
		}
	}
	var progress []int
	i := 0
	for v, err := range mp.Imap[int](ctx, p, square, iter.Seq[int](naturals), mp.WithProgress(func(done, total int) {
		progress = append(progress, done)
	})) {
		if err != nil || v != i*i {
			t.Fatalf("Imap item %d = %d, %v", i, v, err)
		}
		if i++; i == 500 {
			break
		}
	}
	if len(progress) == 0 || !sort.IntsAreSorted(progress) {
		t.Fatalf("progress %v", progress)
	}
	var got []int
	for v, err := range mp.ImapUnordered[int](ctx, p, square, slices.Values([]int{1, 2, 3, 4, 5, 6}), mp.WithChunkSize(2)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	sort.Ints(got)
	if !slices.Equal(got, []int{1, 4, 9, 16, 25, 36}) {
		t.Fatalf("ImapUnordered = %v", got)
	}
	closeAndJoin(t, p)
}

func TestPoolInitializerAndMaxTasks(t *testing.T) {
	p := newPool(t, 1, mp.WithInitializer(setInit, "ready"), mp.WithMaxTasksPerChild(3))
	ctx := within(t)
	got, err := mp.Map[string](ctx, p, readInit, make([]int, 4), mp.WithChunkSize(1))
	if err != nil || !slices.Equal(got, []string{"ready", "ready", "ready", "ready"}) {
		t.Fatalf("Map = %v, %v", got, err)
	}
	pids, err := mp.Map[int](ctx, p, pid, make([]int, 9), mp.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[int]bool{}
	for _, id := range pids {
		distinct[id] = true
	}
	if len(distinct) < 3 {
		t.Fatalf("9 tasks at 3 per child ran in %d processes", len(distinct))
	}
	closeAndJoin(t, p)

	broken := newPool(t, 2, mp.WithInitializer(failInit))
	if _, err := mp.Apply[int](ctx, broken, square, 2); err == nil || !strings.Contains(err.Error(), "no database") {
		t.Fatalf("Apply on a pool whose initializer fails = %v", err)
	}
}

func TestPoolTerminateQueued(t *testing.T) {
	p := newPool(t, 2)
	var results []*mp.AsyncResult[int]
	results = append(results, mp.ApplyAsync[int](p, hang, []any{0}), mp.ApplyAsync[int](p, hang, []any{0}))
	for i := range 10000 {
		results = append(results, mp.ApplyAsync[int](p, square, []any{i}))
	}
	p.Terminate()
	ctx := within(t)
	for _, r := range results[:2] {
		if _, err := r.Get(ctx); !errors.Is(err, mp.ErrPoolTerminated) {
			t.Fatalf("running task after Terminate = %v", err)
		}
	}
	n := 0
	for _, r := range results[2:] {
		if _, err := r.Get(ctx); err != nil {
			if !errors.Is(err, mp.ErrPoolTerminated) {
				t.Fatalf("queued task after Terminate = %v", err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no queued task was failed by Terminate")
	}
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestThreadPool(t *testing.T) {
	p, err := mp.NewThreadPool(4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Terminate()
	ctx := within(t)
	var mu sync.Mutex
	count := 0
	inc := func(n int) int { // a closure: fine in a thread pool
		mu.Lock()
		defer mu.Unlock()
		count += n
		return count
	}
	if _, err := mp.Map[int](ctx, p, inc, []int{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if count != 10 {
		t.Fatalf("count = %d", count)
	}
	mine := errors.New("mine")
	_, err = mp.Apply[int](ctx, p, func() (int, error) { return 0, fmt.Errorf("wrapped: %w", mine) })
	if !errors.Is(err, mine) {
		t.Fatalf("thread pool error = %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := mp.Apply[time.Duration](short, p, sleepFor, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("thread task past its deadline = %v", err)
	}
	closeAndJoin(t, p)
}

func TestPoolTimeoutCountsFromStart(t *testing.T) {
	// Two tasks of 0.6 s on one worker with a 1 s timeout: the second
	// waits 0.6 s for the first, yet has its whole second to run.
	p := newPool(t, 1, mp.WithTaskTimeout(time.Second))
	a := mp.ApplyAsync[time.Duration](p, sleepFor, []any{600 * time.Millisecond})
	b := mp.ApplyAsync[time.Duration](p, sleepFor, []any{600 * time.Millisecond})
	for _, r := range []*mp.AsyncResult[time.Duration]{a, b} {
		if _, err := r.Get(within(t)); err != nil {
			t.Fatalf("task within its timeout: %v", err)
		}
	}
	closeAndJoin(t, p)
}

func TestPoolNoTaskWaitsBehindASlowOne(t *testing.T) {
	// One worker hangs; every other task must run on the other worker,
	// including one that was handed to the hanging worker before it hung.
	// The hanging task never ends by itself: a task stuck behind it would
	// never finish either, and Get's minute would run out.
	p := newPool(t, 2)
	stuck := mp.ApplyAsync[int](p, hang, []any{0})
	var rs []*mp.AsyncResult[int]
	for i := range 6 {
		rs = append(rs, mp.ApplyAsync[int](p, square, []any{i}))
	}
	for i, r := range rs {
		if v, err := r.Get(within(t)); err != nil || v != i*i {
			t.Fatalf("task %d = %d, %v: waited behind the hanging task", i, v, err)
		}
	}
	stuck.Cancel()
	if _, err := stuck.Get(within(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("hanging task = %v", err)
	}
	closeAndJoin(t, p)
}

// Batched chunks (Map with chunks of more than one item): every kind of
// fault of one item must fail that item alone, by its index.

func panicOnThrees(x int) int {
	if x%10 == 3 {
		panic(fmt.Sprintf("%d ends in 3", x))
	}
	return x * x
}

func dieOnSeven(x int) int {
	if x == 7 {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	return x * x
}

func checkEven(ctx context.Context, x int) error {
	if ctx == nil {
		return errors.New("no context")
	}
	if x%2 == 1 {
		return fmt.Errorf("item %d: %w", x, errOdd)
	}
	return nil
}

func strLen(s string) int { return len(s) }

func byteTwice(b byte) int { return 2 * int(b) }

// picky encodes as one byte, but refuses to be encoded when it ends in
// 13 or decoded when it ends in 7 (mod 20): single faulty items.
type picky int

func (p picky) MarshalBinary() ([]byte, error) {
	if p%20 == 13 {
		return nil, errors.New("picky: 13 will not be encoded")
	}
	return []byte{byte(p)}, nil
}

func (p *picky) UnmarshalBinary(b []byte) error {
	if len(b) != 1 || b[0]%20 == 7 {
		return errors.New("picky: 7 will not be decoded")
	}
	*p = picky(b[0])
	return nil
}

func pickyDouble(p picky) int { return 2 * int(p) }

func pickyOf(x int) picky { return picky(x) }

func init() {
	mp.Register(panicOnThrees, dieOnSeven, checkEven, strLen, byteTwice, pickyDouble, pickyOf)
}

func ints(n int) []int {
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	return items
}

// mapFailures checks that err is a *MapError for exactly the items want,
// and returns it.
func mapFailures(t *testing.T, err error, want []int) *mp.MapError {
	t.Helper()
	var me *mp.MapError
	if !errors.As(err, &me) || !slices.Equal(me.Indexes, want) {
		t.Fatalf("Map error = %v, want failures of items %v", err, want)
	}
	return me
}

func TestPoolMapChunkFaults(t *testing.T) {
	p := newPool(t, 2)
	ctx := within(t)
	items := ints(40)
	// WithChunkSize(1): one item per task, the others batched.
	for _, opts := range [][]mp.CallOption{nil, {mp.WithChunkSize(1)}, {mp.WithChunkSize(8)}, {mp.WithChunkSize(40)}} {
		got, err := mp.Map[int](ctx, p, squareOrFail, items, opts...)
		var odd []int
		for i := 1; i < 40; i += 2 {
			odd = append(odd, i)
		}
		me := mapFailures(t, err, odd)
		if !errors.Is(err, errOdd) || !strings.Contains(me.Errs[1].Error(), "item 3") {
			t.Fatalf("errors %v, want errOdd", me.Errs)
		}
		for i, v := range got {
			if i%2 == 0 && v != i*i || i%2 == 1 && v != 0 {
				t.Fatalf("item %d = %d", i, v)
			}
		}

		got, err = mp.Map[int](ctx, p, panicOnThrees, items, opts...)
		me = mapFailures(t, err, []int{3, 13, 23, 33})
		for k, e := range me.Errs {
			var te *mp.TaskError
			if !errors.As(e, &te) || !te.Panicked || !strings.Contains(te.Message, fmt.Sprintf("%d ends in 3", me.Indexes[k])) ||
				!strings.Contains(te.Stack, "panicOnThrees") {
				t.Fatalf("item %d: %#v, want its panic with the stack", me.Indexes[k], e)
			}
		}
		for i, v := range got {
			if i%10 != 3 && v != i*i {
				t.Fatalf("item %d = %d after a panic in its chunk", i, v)
			}
		}

		// A function of a context, returning only an error.
		_, err = mp.Map[struct{}](ctx, p, checkEven, items, opts...)
		mapFailures(t, err, odd)
	}
	if _, err := mp.Apply[struct{}](ctx, p, checkEven, 2); err != nil {
		t.Fatalf("Apply of a function returning only an error = %v", err)
	}
	// Items that fail to be encoded (13, 33: in the parent) or decoded (7,
	// 27: in the worker), as arguments and as results.
	pk := make([]picky, 40)
	for i := range pk {
		pk[i] = picky(i)
	}
	got, err := mp.Map[int](ctx, p, pickyDouble, pk, mp.WithChunkSize(8))
	me := mapFailures(t, err, []int{7, 13, 27, 33})
	if !errors.Is(me.Errs[1], mp.ErrUnencodable) || !strings.Contains(me.Errs[0].Error(), "7 will not be decoded") {
		t.Fatalf("argument faults: %v", me.Errs)
	}
	for i, v := range got {
		if !slices.Contains(me.Indexes, i) && v != 2*i {
			t.Fatalf("item %d = %d", i, v)
		}
	}
	gotP, err := mp.Map[picky](ctx, p, pickyOf, items, mp.WithChunkSize(8))
	me = mapFailures(t, err, []int{7, 13, 27, 33})
	if !errors.Is(me.Errs[1], mp.ErrUnencodable) || !strings.Contains(me.Errs[0].Error(), "7 will not be decoded") {
		t.Fatalf("result faults: %v", me.Errs)
	}
	for i, v := range gotP {
		if !slices.Contains(me.Indexes, i) && v != picky(i) {
			t.Fatalf("item %d = %d", i, v)
		}
	}
	// Strings and bytes, which the codec encodes raw on their own.
	if got, err := mp.Map[int](ctx, p, strLen, []string{"", "a", "bb", "ccc"}, mp.WithChunkSize(2)); err != nil || !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("Map of strings = %v, %v", got, err)
	}
	if got, err := mp.Map[int](ctx, p, byteTwice, []byte{0, 1, 2, 255}, mp.WithChunkSize(4)); err != nil || !slices.Equal(got, []int{0, 2, 4, 510}) {
		t.Fatalf("Map of bytes = %v, %v", got, err)
	}
	// No worker was lost to any of it.
	if v, err := mp.Apply[int](ctx, p, square, 3); err != nil || v != 9 {
		t.Fatalf("Apply after the faults = %d, %v", v, err)
	}
	closeAndJoin(t, p)
}

func TestPoolMapChunkWorkerKilled(t *testing.T) {
	// The worker dies in the middle of the chunk of items 5 to 9: the
	// whole chunk is lost with it, and only that chunk.
	p := newPool(t, 2)
	got, err := mp.Map[int](within(t), p, dieOnSeven, ints(40), mp.WithChunkSize(5))
	me := mapFailures(t, err, []int{5, 6, 7, 8, 9})
	var wl *mp.WorkerLostError
	if !errors.As(me.Errs[2], &wl) || wl.ExitCode != -int(syscall.SIGKILL) {
		t.Fatalf("lost chunk error = %#v", me.Errs[2])
	}
	for i, v := range got {
		if (i < 5 || i > 9) && v != i*i {
			t.Fatalf("item %d = %d", i, v)
		}
	}
	closeAndJoin(t, p)
}

func TestPoolMapChunkFailFastAndProgress(t *testing.T) {
	p := newPool(t, 1)
	items := make([]int, 400)
	for i := range items {
		items[i] = 2 * i
	}
	items[1] = 1 // fails, in the first chunk
	var mu sync.Mutex
	var done []int
	_, err := mp.Map[int](within(t), p, squareOrFail, items, mp.WithChunkSize(10), mp.WithFailFast(),
		mp.WithProgress(func(n, total int) {
			mu.Lock()
			defer mu.Unlock()
			if total != len(items) {
				t.Errorf("Progress total %d", total)
			}
			done = append(done, n)
		}))
	var me *mp.MapError
	if !errors.As(err, &me) || me.Indexes[0] != 1 || !errors.Is(me.Errs[0], errOdd) {
		t.Fatalf("Map = %v", err)
	}
	if len(me.Indexes) < 200 || !errors.Is(me.Errs[len(me.Errs)-1], context.Canceled) {
		t.Fatalf("%d items failed; WithFailFast should have cancelled most of the 390 not started", len(me.Indexes))
	}
	mu.Lock()
	defer mu.Unlock()
	if !sort.IntsAreSorted(done) || done[len(done)-1] != len(items) {
		t.Fatalf("progress %v", done)
	}
	closeAndJoin(t, p)
}

// reportPidThenHang puts the pid of the worker running it into q, then
// never returns: the Map it is part of goes on until the pool dies.
func reportPidThenHang(q *mp.Queue[int]) int {
	q.Put(context.Background(), os.Getpid())
	select {}
}

// mapUntilKilled runs a Map that never ends in a pool of two workers.
func mapUntilKilled(q *mp.Queue[int]) error {
	p, err := mp.NewPool(2)
	if err != nil {
		return err
	}
	items := make([]*mp.Queue[int], 100)
	for i := range items {
		items[i] = q
	}
	_, err = mp.Map[int](context.Background(), p, reportPidThenHang, items)
	return err
}

func init() { mp.Register(reportPidThenHang, mapUntilKilled) }

func TestPoolWorkersDieWithKilledParent(t *testing.T) {
	q, err := mp.NewQueue[int](4)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	p := mp.NewProcess(mapUntilKilled, q)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	// Each worker reports once, from the first item of its first chunk.
	ctx := within(t)
	fds := map[int]int{}
	for len(fds) < 2 {
		pid, err := q.Get(ctx)
		if err != nil {
			p.Kill()
			t.Fatalf("waiting for the workers' pids: %v", err)
		}
		// A pidfd names this very process, even once its pid is reused.
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			p.Kill()
			t.Fatalf("pidfd_open(%d): %v (the worker died before its parent was killed?)", pid, err)
		}
		defer unix.Close(fd)
		fds[pid] = fd
	}
	// SIGKILL to the parent alone, not to its process group: it has no
	// chance to stop its workers, who must notice on their own.
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var pe *mp.ProcessError
	if err := p.Join(ctx); !errors.As(err, &pe) || pe.ExitCode != -int(syscall.SIGKILL) {
		t.Fatalf("Join = %v, want killed by SIGKILL", err)
	}
	deadline, _ := ctx.Deadline()
	for pid, fd := range fds {
		// A pidfd is readable once its process has exited.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(pfd, int(max(time.Until(deadline), 0)/time.Millisecond))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				t.Fatalf("poll pidfd of %d: %v", pid, err)
			}
			if n == 0 {
				for _, fd := range fds {
					unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) // leave no survivor behind
				}
				t.Fatalf("pool worker %d still alive a minute after its parent was killed", pid)
			}
			break
		}
	}
}

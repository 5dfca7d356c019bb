package mp_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// Targets for isolated pool workers.

// arenaView returns what of shared memory this process can see: the lines
// of /proc/self/maps and the descriptors that name a multiproc memfd.
func arenaView(int) (string, error) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return "", err
	}
	var out []string
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.Contains(l, "memfd:multiproc") {
			out = append(out, "map "+l)
		}
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.Contains(l, "memfd:multiproc") {
			out = append(out, "fd "+e.Name()+" "+l)
		}
	}
	return strings.Join(out, "\n"), nil
}

// attachArena tries what a child does to attach the tree's arena: a
// primitive made here must land in an arena of this process's own, and
// the inherited descriptor a child attaches (fd 4) must not be a memfd.
func attachArena(int) (string, error) {
	if l, _ := os.Readlink("/proc/self/fd/4"); strings.Contains(l, "memfd") {
		return "fd 4 is " + l, nil
	}
	v, err := mp.NewValue[int64](7)
	if err != nil {
		return "", err
	}
	v.Store(8)
	return arenaView(0)
}

// scribble writes garbage of the given kind to the worker's socket (fd 4,
// after the control socket, as the worker inherits it) for item 7, then
// waits to be killed; other items are squared.
func scribble(x int, kind string) (int, error) {
	if x != 7 {
		return x * x, nil
	}
	if l, _ := os.Readlink("/proc/self/fd/4"); !strings.HasPrefix(l, "socket:") {
		return 0, fmt.Errorf("fd 4 is %q, not the worker's socket", l)
	}
	frame := func(b []byte) []byte {
		return append(binary.LittleEndian.AppendUint32(nil, uint32(len(b))), b...)
	}
	var out []byte
	switch kind {
	case "oversized":
		out = binary.LittleEndian.AppendUint32(nil, 1<<30-1)
	case "junk":
		out = frame([]byte("\xde\xad\xbe\xef not a frame of the pool's protocol"))
	case "lying id":
		// A well-formed result, of one value, for a task it was not given.
		r := []byte{'R'}
		r = binary.LittleEndian.AppendUint64(r, 1<<40)
		r = binary.LittleEndian.AppendUint32(r, 1)
		r = append(r, 0)
		r = binary.LittleEndian.AppendUint32(r, 0)
		out = frame(r)
	case "second start":
		r := []byte{'G'}
		out = frame(binary.LittleEndian.AppendUint64(r, 1<<40))
	case "control":
		// The other socket: the one its Process reports its end on.
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "socket:") && e.Name() != "4" {
				fd, _ := strconv.Atoi(e.Name())
				syscall.Write(fd, frame([]byte("\xde\xad\xbe\xef not a report")))
			}
		}
		select {}
	}
	syscall.Write(4, out)
	select {}
}

// runOnce squares x, failing if it runs twice for one x (a file per x
// records it); for x == 5 its first run kills its worker instead.
func runOnce(x int, dir string) (int, error) {
	if x == 5 {
		if _, err := os.Stat(filepath.Join(dir, "killed")); err != nil {
			os.WriteFile(filepath.Join(dir, "killed"), nil, 0o644)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(x)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, fmt.Errorf("item %d ran twice: %w", x, err)
	}
	f.Close()
	return x * x, nil
}

func hoardIf(x int) (int, error) {
	if x == 1 {
		return 0, hoard()
	}
	return x, nil
}

func spinIf(x int) int {
	if x == 1 {
		spin()
	}
	return x
}

func openManyIf(x int) (int, error) {
	if x == 1 {
		return 0, openMany()
	}
	return x, nil
}

// dieOnce kills its worker the first time it runs (marked by a file).
func dieOnce(x int, mark string) int {
	if _, err := os.Stat(mark); err != nil {
		os.WriteFile(mark, nil, 0o644)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	return x * x
}

func init() {
	mp.Register(arenaView, attachArena, scribble, hoardIf, spinIf, openManyIf, dieOnce, runOnce)
}

func isolatedPool(t *testing.T, n int, l mp.Limits, opts ...mp.PoolOption) *mp.Pool {
	t.Helper()
	return newPool(t, n, append([]mp.PoolOption{mp.WithIsolatedWorkers(l)}, opts...)...)
}

// arenaInode returns the inode of this process's arena mapping.
func arenaInode(t *testing.T) string {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(maps), "\n") {
		if f := strings.Fields(l); len(f) >= 6 && strings.Contains(l, "memfd:multiproc-arena") {
			return f[4]
		}
	}
	t.Fatal("no arena mapped in the test process")
	return ""
}

func TestIsolatedPoolWorkersDoNotMapTheArena(t *testing.T) {
	if _, err := mp.NewLock(); err != nil {
		t.Fatal(err)
	}
	inode := arenaInode(t)
	// An ordinary pool's workers do map it: the check can see it.
	shared := newPool(t, 1)
	if got, err := mp.Apply[string](within(t), shared, arenaView, 0); err != nil || !strings.Contains(got, inode) {
		t.Fatalf("an ordinary worker's view = %q, %v; want the arena (inode %s)", got, err, inode)
	}
	p := isolatedPool(t, 2, mp.Limits{})
	views, err := mp.Map[string](within(t), p, arenaView, []int{0, 1, 2, 3}, mp.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if v != "" {
			t.Fatalf("an isolated worker sees shared memory:\n%s", v)
		}
	}
	got, err := mp.Apply[string](within(t), p, attachArena, 0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, " "+inode+" ") || strings.HasPrefix(got, "fd 4") || !strings.Contains(got, "multiproc-arena") {
		t.Fatalf("a primitive made in an isolated worker: %q; want it in an arena of the worker's own, not in inode %s", got, inode)
	}
}

func TestIsolatedPoolRefusesPrimitives(t *testing.T) {
	l, err := mp.NewLock()
	if err != nil {
		t.Fatal(err)
	}
	p := isolatedPool(t, 1, mp.Limits{})
	if _, err := mp.Apply[int](within(t), p, takesAny, l); !errors.Is(err, mp.ErrIsolated) {
		t.Errorf("Apply with a lock = %v, want ErrIsolated", err)
	}
	if _, err := mp.ApplyAsync[int](p, takesAny, []any{lockHolder{L: l}}).Get(within(t)); !errors.Is(err, mp.ErrIsolated) {
		t.Errorf("ApplyAsync with a lock in a struct = %v, want ErrIsolated", err)
	}
	// Batched chunks and item by item: only the items that hold one fail.
	for _, chunk := range []int{1, 3} {
		_, err = mp.Map[int](within(t), p, takesAny, []any{1, []any{"a", l}, 3, 4}, mp.WithChunkSize(chunk))
		var me *mp.MapError
		if !errors.As(err, &me) || len(me.Indexes) != 1 || me.Indexes[0] != 1 || !errors.Is(me.Errs[0], mp.ErrIsolated) {
			t.Errorf("chunk %d: Map = %v, want item 1 to fail with ErrIsolated", chunk, err)
		}
	}
	if _, err := mp.NewPool(1, mp.WithIsolatedWorkers(mp.Limits{}), mp.WithInitializer(takesAny, l)); !errors.Is(err, mp.ErrIsolated) {
		t.Errorf("NewPool with a lock for the initializer = %v, want ErrIsolated", err)
	}
	if _, err := mp.NewThreadPool(1, mp.WithIsolatedWorkers(mp.Limits{})); !errors.Is(err, mp.ErrBadArguments) {
		t.Errorf("NewThreadPool(WithIsolatedWorkers) = %v, want ErrBadArguments", err)
	}
	if _, err := mp.NewPool(1, mp.WithIsolatedWorkers(mp.Limits{OpenFiles: 3})); !errors.Is(err, mp.ErrBadArguments) {
		t.Errorf("NewPool with OpenFiles 3 = %v, want ErrBadArguments", err)
	}
}

func TestIsolatedPoolHostileWorker(t *testing.T) {
	p := isolatedPool(t, 2, mp.Limits{})
	items := make([]int, 16)
	for i := range items {
		items[i] = i
	}
	for _, kind := range []string{"oversized", "junk", "lying id", "second start", "control"} {
		for _, chunk := range []int{1, 4} {
			got, err := mp.Starmap[int](within(t), p, scribble, argsOf(items, kind), mp.WithChunkSize(chunk))
			var me *mp.MapError
			if !errors.As(err, &me) || !errors.Is(err, mp.ErrCorrupt) {
				t.Fatalf("%s, chunk %d: Map = %v, want the scribbler's task to fail with ErrCorrupt", kind, chunk, err)
			}
			// Only the scribbler's task fails: item 7, with the chunk it was in.
			lo, hi := 7/chunk*chunk, 7/chunk*chunk+chunk
			for i, x := range got {
				failed := false
				for _, k := range me.Indexes {
					failed = failed || k == i
				}
				if want := i >= lo && i < hi; failed != want || (!failed && x != i*i) {
					t.Fatalf("%s, chunk %d: item %d = %d (failed %v); failed: %v", kind, chunk, i, x, failed, me.Indexes)
				}
			}
		}
	}
	// The pool replaced its workers and goes on.
	if got, err := mp.Apply[int](within(t), p, square, 9); err != nil || got != 81 {
		t.Fatalf("Apply after the scribblers = %d, %v", got, err)
	}
	closeAndJoin(t, p)
	if left := mp.ActiveChildren(); len(left) != 0 {
		t.Fatalf("processes left after Join: %v", left)
	}
}

// A worker SIGKILLed while it runs a task: that task runs again (one
// retry), every other runs exactly once, also while workers retire after
// every task with the next one possibly in their socket.
func TestIsolatedPoolKilledWorkerLosesNothing(t *testing.T) {
	for _, opts := range [][]mp.PoolOption{{mp.WithRetries(1)}, {mp.WithRetries(1), mp.WithMaxMemoryPerChild(1)}} {
		dir := t.TempDir()
		p := isolatedPool(t, 2, mp.Limits{}, opts...)
		got, err := mp.Starmap[int](within(t), p, runOnce, argsOf(benchItems(30), dir), mp.WithChunkSize(1))
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range got {
			if x != i*i {
				t.Fatalf("item %d = %d", i, x)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "killed")); err != nil {
			t.Fatal("item 5 did not kill its worker")
		}
	}
}

func argsOf(items []int, extra any) [][]any {
	out := make([][]any, len(items))
	for i, x := range items {
		out[i] = []any{x, extra}
	}
	return out
}

// limitMap maps fn over 0..5, one item a task, in a pool with limits l,
// and checks that item 1 alone failed, with a *LimitError matching want.
func limitMap(t *testing.T, l mp.Limits, fn any, want error) *mp.LimitError {
	t.Helper()
	p := isolatedPool(t, 2, l)
	got, err := mp.Map[int](within(t), p, fn, []int{0, 1, 2, 3, 4, 5}, mp.WithChunkSize(1))
	var me *mp.MapError
	var le *mp.LimitError
	if !errors.As(err, &me) || len(me.Indexes) != 1 || me.Indexes[0] != 1 || !errors.Is(err, want) ||
		!errors.As(me.Errs[0], &le) || errors.Is(err, mp.ErrWorkerLost) {
		t.Fatalf("Map = %v, want item 1 to fail with a *LimitError (%v)", err, want)
	}
	for i, x := range got {
		if i != 1 && x != i {
			t.Fatalf("item %d = %d", i, x)
		}
	}
	// The worker was replaced: the pool goes on.
	if got, err := mp.Apply[int](within(t), p, square, 3); err != nil || got != 9 {
		t.Fatalf("Apply after the limit = %d, %v", got, err)
	}
	return le
}

func TestIsolatedPoolMemoryLimit(t *testing.T) {
	le := limitMap(t, mp.Limits{Memory: 256 << 20}, hoardIf, mp.ErrMemoryLimit)
	if le.Limit != "memory" || le.Value != 256<<20 {
		t.Fatalf("LimitError = %+v", le)
	}
}

func TestIsolatedPoolCPULimit(t *testing.T) {
	le := limitMap(t, mp.Limits{CPUTime: time.Second}, spinIf, mp.ErrCPULimit)
	if le.Limit != "CPU time" || le.Value != 1 {
		t.Fatalf("LimitError = %+v", le)
	}
}

func TestIsolatedPoolOpenFilesLimit(t *testing.T) {
	le := limitMap(t, mp.Limits{OpenFiles: 40}, openManyIf, mp.ErrOpenFilesLimit)
	var te *mp.TaskError
	if le.Limit != "open files" || !errors.As(le, &te) || !strings.Contains(te.Message, "too many open files") {
		t.Fatalf("LimitError = %v", le)
	}
}

func TestIsolatedPoolOptions(t *testing.T) {
	ctx := within(t)
	t.Run("TaskTimeout", func(t *testing.T) {
		p := isolatedPool(t, 2, mp.Limits{}, mp.WithTaskTimeout(time.Second))
		_, err := mp.Starmap[int](ctx, p, hangOn, [][]any{{0, 3}, {3, 3}, {4, 3}}, mp.WithChunkSize(1))
		var me *mp.MapError
		if !errors.As(err, &me) || len(me.Indexes) != 1 || me.Indexes[0] != 1 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Map = %v, want item 1 to time out", err)
		}
	})
	t.Run("Retries", func(t *testing.T) {
		p := isolatedPool(t, 1, mp.Limits{}, mp.WithRetries(1))
		got, err := mp.Apply[int](ctx, p, dieOnce, 5, filepath.Join(t.TempDir(), "mark"))
		if err != nil || got != 25 {
			t.Fatalf("Apply = %d, %v; want the retry to succeed", got, err)
		}
		p2 := isolatedPool(t, 1, mp.Limits{})
		if _, err := mp.Apply[int](ctx, p2, dieOnce, 5, filepath.Join(t.TempDir(), "mark")); !errors.Is(err, mp.ErrWorkerLost) {
			t.Fatalf("Apply without retries = %v, want ErrWorkerLost", err)
		}
	})
	t.Run("MaxTasksPerChild", func(t *testing.T) {
		p := isolatedPool(t, 1, mp.Limits{}, mp.WithMaxTasksPerChild(2))
		pids, err := mp.Map[int](ctx, p, pid, make([]int, 8), mp.WithChunkSize(1))
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]int{}
		for _, x := range pids {
			seen[x]++
		}
		for x, n := range seen {
			if n > 2 {
				t.Fatalf("worker %d ran %d tasks, more than 2 (%v)", x, n, pids)
			}
		}
	})
	t.Run("RetiringWorkersLoseNothing", func(t *testing.T) {
		// Each worker exits after every task; the next may already be in
		// its socket: it was not started and runs elsewhere.
		p := isolatedPool(t, 2, mp.Limits{}, mp.WithMaxMemoryPerChild(1))
		got, err := mp.Map[int](ctx, p, square, benchItems(20), mp.WithChunkSize(1))
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range got {
			if x != i*i {
				t.Fatalf("item %d = %d", i, x)
			}
		}
	})
	t.Run("Initializer", func(t *testing.T) {
		p := isolatedPool(t, 2, mp.Limits{}, mp.WithInitializer(setInit, "ready"))
		got, err := mp.Map[string](ctx, p, readInit, []int{0, 1, 2, 3}, mp.WithChunkSize(1))
		if err != nil || len(got) != 4 || got[0] != "ready" || got[3] != "ready" {
			t.Fatalf("Map = %q, %v", got, err)
		}
		broken := isolatedPool(t, 1, mp.Limits{}, mp.WithInitializer(failInit))
		if _, err := mp.Apply[int](ctx, broken, square, 2); !errors.Is(err, mp.ErrPoolBroken) || !strings.Contains(err.Error(), "no database") {
			t.Fatalf("Apply on a pool whose initializer fails = %v, want ErrPoolBroken", err)
		}
	})
	t.Run("AsyncCallbacksImap", func(t *testing.T) {
		p := isolatedPool(t, 2, mp.Limits{})
		called := make(chan int, 1)
		if got, err := mp.ApplyAsync[int](p, square, []any{6}, mp.WithCallback(func(r int) { called <- r })).Get(ctx); err != nil || got != 36 || <-called != 36 {
			t.Fatalf("ApplyAsync = %d, %v", got, err)
		}
		errc := make(chan error, 1)
		if _, err := mp.MapAsync[int](p, squareOrFail, []int{2, 3}, mp.WithErrorCallback(func(err error) { errc <- err })).Get(ctx); err == nil || (<-errc) == nil {
			t.Fatalf("MapAsync = %v, want item 1's error, through the callback too", err)
		}
		i := 0
		for r, err := range mp.Imap[int](ctx, p, square, func(yield func(int) bool) {
			for x := range 10 {
				if !yield(x) {
					return
				}
			}
		}) {
			if err != nil || r != i*i {
				t.Fatalf("Imap item %d = %d, %v", i, r, err)
			}
			i++
		}
		// A task's error and panic arrive; registered sentinels do not
		// (what an isolated worker says is not believed).
		if _, err := mp.Apply[int](ctx, p, squareOrFail, 3); err == nil || !strings.Contains(err.Error(), "odd input") || errors.Is(err, errOdd) {
			t.Fatalf("Apply of a failing task = %v", err)
		}
		if _, err := mp.Apply[int](ctx, p, panicOnTwo, 2); err == nil || !strings.Contains(err.Error(), "two is not allowed") {
			t.Fatalf("Apply of a panicking task = %v", err)
		}
		closeAndJoin(t, p)
	})
}

// hangOn hangs for x == victim.
func hangOn(x, victim int) int {
	if x == victim {
		select {}
	}
	return x
}

func init() { mp.Register(hangOn) }

func isolatedBenchPool(b *testing.B) *mp.Pool {
	b.Helper()
	p, err := mp.NewPool(2, mp.WithIsolatedWorkers(mp.Limits{}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Terminate)
	if _, err := mp.Apply[int](context.Background(), p, identity, 0); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkPoolIsolatedMapChunk1 is BenchmarkPoolMapChunk1 with isolated
// workers: one task at a time per worker, over a socket.
func BenchmarkPoolIsolatedMapChunk1(b *testing.B) {
	p := isolatedBenchPool(b)
	items := benchItems(b.N)
	b.ResetTimer()
	start := time.Now()
	if _, err := mp.Map[int](context.Background(), p, identity, items, mp.WithChunkSize(1)); err != nil {
		b.Fatal(err)
	}
	reportTasks(b, b.N, start)
}

// BenchmarkPoolIsolatedMap is BenchmarkPoolMap with isolated workers.
func BenchmarkPoolIsolatedMap(b *testing.B) {
	p := isolatedBenchPool(b)
	items := benchItems(b.N)
	b.ResetTimer()
	start := time.Now()
	if _, err := mp.Map[int](context.Background(), p, identity, items); err != nil {
		b.Fatal(err)
	}
	reportTasks(b, b.N, start)
}

// An isolated pool has no pipes to name, and still shows on the status
// page with its counts.
func TestIsolatedPoolStatus(t *testing.T) {
	p := isolatedPool(t, 2, mp.Limits{})
	p.SetName("untrusted")
	if _, err := mp.Map[int](within(t), p, squareOrFail, []int{2, 3, 4}, mp.WithChunkSize(1)); err == nil {
		t.Fatal("Map of an odd item succeeded")
	}
	st, err := mp.ReadStatus()
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range st.Pools {
		if ps.Name == "untrusted" {
			if ps.Done != 2 || ps.Failed != 1 || len(ps.Workers) != 2 {
				t.Fatalf("status = %+v, want 2 done, 1 failed, 2 workers", ps)
			}
			return
		}
	}
	t.Fatalf("no pool named untrusted in %+v", st.Pools)
}

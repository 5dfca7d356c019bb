package mp_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// long reports whether the long versions of soak and storm tests were asked
// for (MULTIPROC_LONG=1); CI runs the short ones.
func long() bool { return os.Getenv("MULTIPROC_LONG") != "" }

// settle waits for the garbage collector's cleanups to release what the
// test dropped, and returns the arena's figures once they stop falling:
// cleanups run on their own goroutine after a collection, so this polls,
// bounded, for a condition rather than sleeping for a guess.
func settle(t *testing.T, want func(mp.ArenaStats) bool) mp.ArenaStats {
	t.Helper()
	var st mp.ArenaStats
	for i := 0; i < 200; i++ {
		runtime.GC()
		var err error
		if st, err = mp.ReadArenaStats(); err != nil {
			t.Fatal(err)
		}
		if want(st) {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
	return st
}

func atBaseline(base mp.ArenaStats) func(mp.ArenaStats) bool {
	return func(s mp.ArenaStats) bool {
		return s.InUse-s.Tables == base.InUse-base.Tables && s.Objects == base.Objects
	}
}

// checkBaseline fails unless the arena is back to base, and the
// allocator's invariants hold (nothing freed twice).
func checkBaseline(t *testing.T, base mp.ArenaStats, what string) {
	t.Helper()
	st := settle(t, atBaseline(base))
	if !atBaseline(base)(st) {
		t.Fatalf("%s: arena holds %d bytes (%d of them tables) in %d primitives %v, want %d bytes (%d) in %d %v",
			what, st.InUse, st.Tables, st.Objects, st.ByKind, base.InUse, base.Tables, base.Objects, base.ByKind)
	}
	if err := mp.CheckArena(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func baseline(t *testing.T) mp.ArenaStats {
	t.Helper()
	// Garbage of earlier tests goes first, so that it does not count.
	return settle(t, func(a mp.ArenaStats) bool {
		b, _ := mp.ReadArenaStats()
		runtime.GC()
		return atBaseline(a)(b)
	})
}

// each makes one primitive of every kind that owns arena memory, and
// returns a function that closes them all.
func each(t *testing.T) func() {
	t.Helper()
	lock := mp.Must(mp.NewLock())
	rlock := mp.Must(mp.NewRLock())
	sem := mp.Must(mp.NewSemaphore(2))
	ev := mp.Must(mp.NewEvent())
	condLock := mp.Must(mp.NewLock())
	cond := mp.Must(mp.NewCondition(condLock))
	bar := mp.Must(mp.NewBarrier(2, nil))
	val := mp.Must(mp.NewValue[int64](7))
	arr := mp.Must(mp.NewArray[float64](1000))
	withLock := mp.Must(mp.NewValue[int32](1, mp.WithLock(lock)))
	dict := mp.Must(mp.NewDict[string, []byte]())
	if err := dict.Set("k", make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	list := mp.Must(mp.NewList[string]())
	if err := list.Append("x"); err != nil {
		t.Fatal(err)
	}
	return func() {
		for _, c := range []interface{ Close() error }{lock, rlock, sem, ev, cond, condLock, bar, val, arr, withLock, dict, list} {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestCloseGivesMemoryBack(t *testing.T) {
	if !inOwnTree(t) {
		return
	}
	each(t)() // the tables' own blocks are made on first use
	base := baseline(t)
	for i := 0; i < 3; i++ {
		closeAll := each(t)
		st, _ := mp.ReadArenaStats()
		if st.Objects != base.Objects+12 {
			t.Fatalf("%d primitives live after making 12, had %d", st.Objects, base.Objects)
		}
		closeAll()
		st, _ = mp.ReadArenaStats()
		if !atBaseline(base)(st) {
			t.Fatalf("after Close: %d bytes in %d primitives %v, want %d bytes in %d", st.InUse, st.Objects, st.ByKind, base.InUse, base.Objects)
		}
	}
	if err := mp.CheckArena(); err != nil {
		t.Fatal(err)
	}
}

func TestUseAfterClose(t *testing.T) {
	l := mp.Must(mp.NewLock())
	enc, err := l.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	func() {
		defer func() {
			r := recover()
			err, _ := r.(error)
			if !errors.Is(err, mp.ErrClosed) {
				t.Fatalf("Acquire after Close panicked with %v, want an error wrapping ErrClosed", r)
			}
		}()
		l.TryAcquire()
	}()
	if _, err := l.MarshalBinary(); !errors.Is(err, mp.ErrClosed) {
		t.Fatalf("MarshalBinary after Close: %v", err)
	}
	// The only handle is gone, so the lock is freed: its encoding is
	// refused, also once its memory holds something else.
	others := []*mp.Lock{mp.Must(mp.NewLock()), mp.Must(mp.NewLock())}
	defer func() {
		for _, o := range others {
			o.Close()
		}
	}()
	var again mp.Lock
	err = again.UnmarshalBinary(enc)
	if !errors.Is(err, mp.ErrClosed) || !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("decoding a freed Lock: %v, want ErrInvalidHandle and ErrClosed", err)
	}
}

// A handle of another process tree (another run of the program) names
// nothing here.
func TestHandleOfAnotherTree(t *testing.T) {
	if os.Getenv("MP_TEST_PRINT_LOCK") != "" {
		l := mp.Must(mp.NewLock())
		enc, _ := l.MarshalBinary()
		fmt.Println(hex.EncodeToString(enc))
		return
	}
	// Give this tree objects at the offsets the other tree uses.
	var mine []*mp.Lock
	for i := 0; i < 4; i++ {
		mine = append(mine, mp.Must(mp.NewLock()))
	}
	defer func() {
		for _, l := range mine {
			l.Close()
		}
	}()
	out := freshTree(t, "TestHandleOfAnotherTree", "MP_TEST_PRINT_LOCK=1")
	enc, err := hex.DecodeString(strings.TrimSpace(strings.Split(out, "\n")[0]))
	if err != nil {
		t.Fatalf("other tree printed %q", out)
	}
	var l mp.Lock
	if err := l.UnmarshalBinary(enc); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("a Lock of another tree decoded with %v, want ErrInvalidHandle", err)
	}
}

// inOwnTree runs the calling test again in a tree of its own, so that what
// other tests left for the garbage collector does not count, and reports
// whether this is that run (the caller then does the work). env is added to
// the new run's environment.
func inOwnTree(t *testing.T, env ...string) bool {
	t.Helper()
	if os.Getenv("MP_TEST_ISOLATED") == t.Name() {
		return true
	}
	out := freshTree(t, t.Name(), append(env, "MP_TEST_ISOLATED="+t.Name())...)
	if testing.Verbose() {
		t.Log(out)
	}
	return false
}

// freshTree runs test name in a new run of the test binary, its own process
// tree, with env added, and returns its standard output.
func freshTree(t *testing.T, name string, env ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-test.run=^" + name + "$", "-test.count=1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(self, args...)
	// GORACE: a race build would otherwise sleep a second at exit.
	cmd.Env = append(append(os.Environ(), env...), "GORACE=atexit_sleep_ms=0")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s in a new tree: %v\n%s%s", name, err, out, stderr.String())
	}
	return string(out)
}

// TestDroppedPrimitivesAreCollected: primitives dropped without Close are
// freed by the garbage collector. With an 8 MiB arena, memory that is never
// given back fails at the 1,025th 8 KiB Array, the 511th Condition, the
// 131,073rd Lock and the 18,725th Dict.
func TestDroppedPrimitivesAreCollected(t *testing.T) {
	if !inOwnTree(t, "MULTIPROC_ARENA_SIZE=8M") {
		return
	}
	n := 20_000
	if long() {
		n = 100_000
	}
	each(t)()
	base := baseline(t)
	for i := 0; i < n; i++ {
		mp.Must(mp.NewArray[byte](8000))
		mp.Must(mp.NewCondition(nil))
		mp.Must(mp.NewDict[int, int]())
		mp.Must(mp.NewValue[int64](int64(i)))
		mp.Must(mp.NewLock())
		if i%8 == 0 {
			d := mp.Must(mp.NewDict[int, string]())
			d.Set(i, "value")
		}
	}
	for i := 0; i < 7*n; i++ {
		mp.Must(mp.NewLock())
	}
	checkBaseline(t, base, fmt.Sprintf("%d rounds of dropped primitives", n))
}

// Queues and pipes made and dropped by the thousand, closed or not.
func TestQueuesAndPipesAreFreed(t *testing.T) {
	if !inOwnTree(t, "MULTIPROC_ARENA_SIZE=64M") {
		return
	}
	n := 10_000
	if long() {
		n = 100_000
	}
	ctx := context.Background()
	each(t)()
	base := baseline(t)
	for i := 0; i < n; i++ {
		q := mp.Must(mp.NewQueue[int](0))
		if err := q.Put(ctx, i); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			q.Close()
		}
		a, b, err := mp.Pipe(true)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Send(make([]byte, 200)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			a.Close()
			b.Close()
		}
	}
	checkBaseline(t, base, fmt.Sprintf("%d queues and pipes", n))
}

func holdAndWait(l *mp.Lock, d *mp.Dict[string, int], ready *mp.Event) error {
	// Make some primitives of our own, and hold the parent's.
	var mine []*mp.Lock
	for i := 0; i < 10; i++ {
		mine = append(mine, mp.Must(mp.NewLock()))
	}
	q := mp.Must(mp.NewQueue[string](0))
	q.Put(context.Background(), "held")
	d.Set("child", os.Getpid())
	ready.Set()
	time.Sleep(time.Hour)
	runtime.KeepAlive(mine)
	runtime.KeepAlive(q)
	return nil
}

func useLockTwice(l *mp.Lock, done *mp.Queue[int]) error {
	for i := 0; i < 2; i++ {
		if err := l.Acquire(context.Background()); err != nil {
			return err
		}
		if err := l.Release(); err != nil {
			return err
		}
		done.Put(context.Background(), i)
	}
	return nil
}

func init() { mp.Register(holdAndWait, useLockTwice) }

// TestKilledHolderReleases: what a SIGKILLed child held, the primitives it
// made and its references to its parent's, is released by the survivors.
func TestKilledHolderReleases(t *testing.T) {
	if !inOwnTree(t) {
		return
	}
	ctx := context.Background()
	l := mp.Must(mp.NewLock())
	d := mp.Must(mp.NewDict[string, int]())
	ev := mp.Must(mp.NewEvent())
	defer l.Close()
	defer d.Close()
	defer ev.Close()
	d.Set("child", 0) // the children replace it with an entry of the same size
	base := baseline(t)
	for round := 0; round < 5; round++ {
		ev.Clear()
		p := mp.NewProcess(holdAndWait, l, d, ev)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := ev.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if st, _ := mp.ReadArenaStats(); st.Objects != base.Objects+11 {
			t.Fatalf("child holds %d primitives of its own, want 11", st.Objects-base.Objects)
		}
		p.Kill()
		p.Join(ctx)
		checkBaseline(t, base, fmt.Sprintf("round %d: after the holder was killed", round))
	}
	// The parent's primitives still work, and still belong to it.
	if err := l.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	l.Release()
	if _, ok, err := d.Get("child"); !ok || err != nil {
		t.Fatalf("the Dict lost the child's entry: %v", err)
	}
}

// TestHandedOverThenClosed: a parent that closes a primitive right after
// starting a child with it does not pull it from under the child; it is
// freed when the child is done.
func TestHandedOverThenClosed(t *testing.T) {
	if !inOwnTree(t) {
		return
	}
	ctx := context.Background()
	done := mp.Must(mp.NewQueue[int](0))
	defer done.Close()
	base := baseline(t)
	l := mp.Must(mp.NewLock())
	l.Acquire(ctx)
	p := mp.NewProcess(useLockTwice, l, done)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	l.Release()
	l.Close()
	for i := 0; i < 2; i++ {
		if _, err := done.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}
	checkBaseline(t, base, "after the child that inherited the Lock exited")
}

// TestChildKilledBeforeDecoding: a child killed before it even decoded the
// primitives it was started with leaves nothing behind.
func TestChildKilledBeforeDecoding(t *testing.T) {
	if !inOwnTree(t) {
		return
	}
	ctx := context.Background()
	done := mp.Must(mp.NewQueue[int](0))
	defer done.Close()
	base := baseline(t)
	for i := 0; i < 5; i++ {
		l := mp.Must(mp.NewLock())
		p := mp.NewProcess(useLockTwice, l, done)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		l.Close()
		p.Kill()
		p.Join(ctx)
	}
	for {
		if _, err := done.TryGet(); err != nil {
			break
		}
	}
	checkBaseline(t, base, "after children killed at start")
}

func TestPoolRoundsGiveMemoryBack(t *testing.T) {
	if !inOwnTree(t) {
		return
	}
	ctx := context.Background()
	rounds, tasks := 20, 200
	if long() {
		rounds, tasks = 1000, 100_000
	}
	base := baseline(t)
	for i := 0; i < rounds; i++ {
		p := mp.Must(mp.NewPool(2))
		if _, err := mp.Apply[int](ctx, p, square, 3); err != nil {
			t.Fatal(err)
		}
		p.Close()
		if err := p.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkBaseline(t, base, fmt.Sprintf("%d pools made and joined", rounds))

	p := mp.Must(mp.NewPool(2, mp.WithMaxTasksPerChild(1)))
	items := make([]int, tasks)
	for i := range items {
		items[i] = i
	}
	if _, err := mp.Map[int](ctx, p, square, items, mp.WithChunkSize(1)); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}
	checkBaseline(t, base, fmt.Sprintf("a pool recycling its workers over %d tasks", tasks))
}

// killStormWorker takes items from in, holds the semaphore while it adds
// each to the dict and passes it on, until killed.
func killStormWorker(in, out *mp.Queue[int], sem *mp.Semaphore, d *mp.Dict[int, int]) error {
	ctx := context.Background()
	for {
		v, err := in.Get(ctx)
		if err != nil {
			return nil
		}
		mine := mp.Must(mp.NewLock()) // a primitive of its own, dropped
		_ = mine
		if err := sem.Acquire(ctx); err != nil {
			return err
		}
		d.Update(v%16, func(old int, _ bool) (int, bool) { return old + 1, true })
		sem.Release()
		if err := out.Put(ctx, v); err != nil {
			return nil
		}
	}
}

func init() { mp.Register(killStormWorker) }

// TestKillStorm SIGKILLs workers of a queue, dict and semaphore pipeline,
// and pool workers, at random moments; at the end the arena holds exactly
// what the parent still holds, and the allocator is consistent.
func TestKillStorm(t *testing.T) {
	if !inOwnTree(t) {
		return
	}
	ctx := context.Background()
	d := 3 * time.Second
	if long() {
		d = 30 * time.Second
	}
	base := baseline(t)
	func() {
		in := mp.Must(mp.NewQueue[int](64))
		out := mp.Must(mp.NewQueue[int](0))
		sem := mp.Must(mp.NewSemaphore(2))
		dict := mp.Must(mp.NewDict[int, int]())
		pool := mp.Must(mp.NewPool(2, mp.WithRetries(100)))
		defer func() {
			pool.Terminate()
			pool.Join(ctx)
			in.Close()
			out.Close()
		}()
		var workers []*mp.Process
		start := func() {
			p := mp.NewProcess(killStormWorker, in, out, sem, dict)
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			workers = append(workers, p)
		}
		for i := 0; i < 3; i++ {
			start()
		}
		deadline := time.Now().Add(d)
		kills := 0
		for i := 0; time.Now().Before(deadline); i++ {
			in.Put(ctx, i)
			if _, err := mp.Apply[int](ctx, pool, square, i); err != nil && !errors.Is(err, mp.ErrWorkerLost) {
				t.Fatal(err)
			}
			if i%50 == 25 {
				w := workers[i%len(workers)]
				w.Kill()
				w.Join(ctx)
				kills++
				start()
				for _, c := range mp.ActiveChildren() {
					if strings.HasPrefix(c.Name, "PoolWorker") && i%100 == 25 {
						syscall.Kill(c.Pid(), syscall.SIGKILL)
						kills++
						break
					}
				}
			}
			for {
				if _, err := out.TryGet(); err != nil {
					break
				}
			}
		}
		for _, w := range workers {
			w.Kill()
			w.Join(ctx)
		}
		t.Logf("%d kills in %v", kills, d)
		if kills == 0 {
			t.Fatal("no kills")
		}
	}()
	checkBaseline(t, base, "after the kill storm")
}

func takeLockFromQueue(q *mp.Queue[*mp.Lock], done *mp.Event) error {
	l, err := q.Get(context.Background())
	if err != nil {
		return err
	}
	if err := l.Acquire(context.Background()); err != nil {
		return err
	}
	l.Release()
	done.Set()
	return l.Close()
}

type carried struct {
	Name  string
	Event *mp.Event
	More  []any
}

func init() { mp.Register(takeLockFromQueue) }

// TestSentPrimitiveOutlivesSender: a primitive put on a queue or sent on a
// pipe lives until it is received, even if its sender lets go of it at
// once; one left in a queue nobody reads is freed with the queue.
func TestSentPrimitiveOutlivesSender(t *testing.T) {
	if !inOwnTree(t) {
		return
	}
	ctx := context.Background()
	base := baseline(t)

	q := mp.Must(mp.NewQueue[*mp.Lock](0))
	done := mp.Must(mp.NewEvent())
	p := mp.NewProcess(takeLockFromQueue, q, done)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	l := mp.Must(mp.NewLock())
	if err := q.Put(ctx, l); err != nil {
		t.Fatal(err)
	}
	l.Close()
	runtime.GC()
	if err := p.Join(ctx); err != nil {
		t.Fatalf("the receiver of a Lock its sender closed: %v", err)
	}
	if !done.IsSet() {
		t.Fatal("the receiver did not use the Lock")
	}

	// Through a pipe, inside a struct and an interface.
	a, b, err := mp.Pipe(true)
	if err != nil {
		t.Fatal(err)
	}
	ev := mp.Must(mp.NewEvent())
	if err := a.Send(carried{Name: "x", Event: ev, More: []any{mp.Must(mp.NewLock())}}); err != nil {
		t.Fatal(err)
	}
	ev.Close()
	runtime.GC()
	var got carried
	if err := b.Recv(ctx, &got); err != nil {
		t.Fatal(err)
	}
	got.Event.Set()
	if !got.Event.IsSet() {
		t.Fatal("the received Event does not work")
	}

	// Left unread in a queue that is dropped; refused by a full queue.
	left := mp.Must(mp.NewQueue[carried](2))
	for i := 0; i < 3; i++ {
		e := mp.Must(mp.NewEvent())
		err := left.TryPut(carried{Event: e})
		if i < 2 && err != nil || i == 2 && !errors.Is(err, mp.ErrFull) {
			t.Fatalf("TryPut %d: %v", i, err)
		}
		e.Close()
	}
	q, done, p, a, b, got, left = nil, nil, nil, nil, nil, carried{}, nil
	checkBaseline(t, base, "after every sent primitive was received or dropped")
}

// takeAndGive holds a permit until go is set, so that all the children
// hold one at once.
func takeAndGive(sem *mp.Semaphore, holding *mp.Value[int32], goAhead *mp.Event) error {
	ctx := context.Background()
	if err := sem.Acquire(ctx); err != nil {
		return err
	}
	holding.Add(1)
	if err := goAhead.Wait(ctx); err != nil {
		return err
	}
	return sem.Release()
}

func init() { mp.Register(takeAndGive) }

// TestGrownHolderTablesAreFreed: a Semaphore that more processes have held
// than its first holder table records grows the table; the growth goes
// back with the Semaphore.
func TestGrownHolderTablesAreFreed(t *testing.T) {
	if !inOwnTree(t) {
		return
	}
	ctx := context.Background()
	base := baseline(t)
	sem := mp.Must(mp.NewSemaphore(100))
	holding := mp.Must(mp.NewValue[int32](0))
	goAhead := mp.Must(mp.NewEvent())
	var ps []*mp.Process
	for i := 0; i < 80; i++ {
		p := mp.NewProcess(takeAndGive, sem, holding, goAhead)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for holding.Load() < 80 {
		time.Sleep(time.Millisecond) // a condition polled, not a guess
	}
	goAhead.Set()
	for _, p := range ps {
		if err := p.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}
	grown, _ := mp.ReadArenaStats()
	sem.Close()
	holding.Close()
	goAhead.Close()
	checkBaseline(t, base, fmt.Sprintf("after a Semaphore held by 80 processes (%d bytes while it lived)", grown.InUse-grown.Tables))
}

// TestFailedNewGivesBlockBack: a queue or pipe whose ring cannot be made
// gives its block back through its reference; freeing the block behind the
// reference's back let the reference free it again later, under whatever
// primitive had the memory by then.
func TestFailedNewGivesBlockBack(t *testing.T) {
	if !inOwnTree(t, "MULTIPROC_ARENA_SIZE=1M") {
		return
	}
	each(t)()
	base := baseline(t)
	if _, err := mp.NewQueue[int](1 << 20); !errors.Is(err, mp.ErrNoSpace) {
		t.Fatalf("a queue of a million items in a 1 MiB arena: %v", err)
	}
	var locks []*mp.Lock
	for i := 0; i < 200; i++ {
		locks = append(locks, mp.Must(mp.NewLock()))
	}
	// Let the failed queue's handle be collected, then make more Locks,
	// which take whatever memory was freed meanwhile: no two may share it.
	for i := 0; i < 10; i++ {
		runtime.GC()
		mp.ReadArenaStats()
	}
	for i := 0; i < 200; i++ {
		locks = append(locks, mp.Must(mp.NewLock()))
	}
	withLocks, _ := mp.ReadArenaStats()
	for i, l := range locks {
		if !l.TryAcquire() {
			t.Fatalf("Lock %d of %d was already held: it shares memory with another", i, len(locks))
		}
	}
	for _, l := range locks {
		l.Release()
		l.Close()
	}
	checkBaseline(t, base, fmt.Sprintf("after a failed NewQueue and 200 Locks (%d primitives, %d bytes while they lived)",
		withLocks.Objects, withLocks.InUse-withLocks.Tables))
}

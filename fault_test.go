package mp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/shm"
	"golang.org/x/sys/unix"
)

// The fault-injection suite: a child process writes random bytes over each
// kind of shared structure, and the test checks that the parent's calls on
// the damaged objects never panic nor hang past a deadline, fail only with
// the errors that report damage (ErrCorrupt, ErrOwnerDied, a broken
// barrier, a context's end), and that undamaged objects of the tree keep
// working.

// faultTrials is how many objects (trials) of each kind are damaged: sized
// for CI, more with MULTIPROC_LONG=1.
func faultTrials() int {
	if os.Getenv("MULTIPROC_LONG") != "" {
		return 2000
	}
	return 200
}

// faultDeadline bounds every call on a damaged object: far beyond what any
// call needs (a dead owner is noticed within a poll interval), so that it
// only catches waits that would not end.
const faultDeadline = 30 * time.Second

// Offsets of words in the arena's metadata (internal/shm's header layout),
// which the child writes through the memfd since they lie outside the heap.
const (
	arenaLockWord  = 32
	arenaJournalLn = 40
)

// A scribbleRegion is where the child may write over one trial's object:
// Len bytes at Off, an offset in the heap, or in the memfd if File.
type scribbleRegion struct {
	Off, Len uint64
	File     bool
	// Word, if not zero, is written as an 8-byte word at Off instead of
	// random bytes: a crafted value.
	Word uint64
}

// A scribbleJob is what the child does: for each region, write between 1
// and Max random bytes at a random place inside it.
type scribbleJob struct {
	Regions []scribbleRegion
	Seed    uint64
	Max     int
}

func faultScribbler(j scribbleJob) error {
	a, err := treeArena()
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(j.Seed, 7))
	for _, r := range j.Regions {
		var b []byte
		off := r.Off
		if r.Word != 0 {
			b = make([]byte, 8)
			for i := range b {
				b[i] = byte(r.Word >> (8 * i))
			}
		} else {
			n := 1 + rng.IntN(min(j.Max, int(r.Len)))
			off += uint64(rng.IntN(int(r.Len) - n + 1))
			b = make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
		}
		if r.File {
			if _, err := unix.Pwrite(a.Fd(), b, int64(off)); err != nil {
				return err
			}
			continue
		}
		copy(a.Bytes(shm.Offset(off), len(b)), b)
	}
	return nil
}

func init() { Register(faultScribbler) }

// scribble has a child process of the tree write over the regions, at most
// max random bytes each, and waits for it. Other fault tests (queues,
// semaphores) can use it with the regions of their own structures.
func scribble(t testing.TB, rng *rand.Rand, max int, regions ...scribbleRegion) {
	t.Helper()
	p := NewProcess(faultScribbler, scribbleJob{Regions: regions, Seed: rng.Uint64(), Max: max})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), faultDeadline)
	defer cancel()
	if err := p.Join(ctx); err != nil {
		p.Kill()
		p.Join(context.Background())
		t.Fatalf("scribbling child: %v", err)
	}
}

// faultRNG returns a random source for a test, logging its seed.
func faultRNG(t testing.TB) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, 1))
}

// onEach runs f for each of n damaged objects, several at a time (a
// damaged lock word costs a poll interval to be found out), and fails the
// test if one panics, fails or has not returned by the deadline.
func onEach(t *testing.T, n int, f func(ctx context.Context, i int) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultDeadline)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer func() {
				if r := recover(); r != nil {
					errs <- fmt.Errorf("object %d: panic: %v", i, r)
				}
			}()
			if err := f(ctx, i); err != nil {
				errs <- fmt.Errorf("object %d: %w", i, err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(faultDeadline + 10*time.Second):
		t.Fatal("calls on damaged objects hung, ignoring their context")
	}
	close(errs)
	k := 0
	for err := range errs {
		if k++; k <= 10 {
			t.Error(err)
		}
	}
}

// damage reports whether err is one of the errors a damaged object may
// give; context errors mean a wait that did not end by the deadline.
func damage(err error) bool {
	return err == nil || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrOwnerDied) || errors.Is(err, ErrInvalidHandle)
}

// expect returns an error unless err is one that damage may cause.
func expect(what string, err error) error {
	if damage(err) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// checkTreeWorks checks that undamaged objects, old and new, still work.
func checkTreeWorks(t *testing.T, l *Lock, d *Dict[string, int]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultDeadline)
	defer cancel()
	if err := l.Acquire(ctx); err != nil {
		t.Fatalf("undamaged Lock: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := d.Set("after", 2); err != nil {
		t.Fatalf("undamaged Dict: %v", err)
	}
	if m, err := d.Items(); err != nil || len(m) != 2 || m["before"] != 1 || m["after"] != 2 {
		t.Fatalf("undamaged Dict holds %v, %v", m, err)
	}
	nl, err := NewLock()
	if err != nil {
		t.Fatalf("new Lock after the damage: %v", err)
	}
	if err := nl.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	nl.Release()
	nd, err := NewDict[int, string]()
	if err != nil {
		t.Fatalf("new Dict after the damage: %v", err)
	}
	if err := nd.Set(1, "one"); err != nil {
		t.Fatal(err)
	}
}

// controls makes the undamaged objects checkTreeWorks uses.
func controls(t *testing.T) (*Lock, *Dict[string, int]) {
	l, err := NewLock()
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDict[string, int]()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Set("before", 1); err != nil {
		t.Fatal(err)
	}
	return l, d
}

// TestFaultLockWords damages the words of Locks and RLocks: random bytes,
// and crafted owners that cannot be a process of the tree (init, pid 0
// with the waiters bit, a pid beyond pid_max, this process with another
// start time, an unrelated process). The next acquirer gets the lock, with
// ErrOwnerDied when the word named an owner.
func TestFaultLockWords(t *testing.T) {
	rng := faultRNG(t)
	cl, cd := controls(t)
	crafted := []uint64{1, contended, 1<<22 + 7, uint64(uint32(os.Getpid())), 1 | contended, uint64(uint32(os.Getpid())) | 12345<<32}
	n := faultTrials()
	locks := make([]*Lock, n)
	rlocks := make([]*RLock, n)
	var regions []scribbleRegion
	for i := range n {
		var err error
		if locks[i], err = NewLock(); err != nil {
			t.Fatal(err)
		}
		if rlocks[i], err = NewRLock(); err != nil {
			t.Fatal(err)
		}
		r := scribbleRegion{Off: uint64(locks[i].h.off), Len: 8}
		if i < len(crafted) {
			r.Word = crafted[i]
		}
		regions = append(regions, r, scribbleRegion{Off: uint64(rlocks[i].h.off), Len: 20})
	}
	scribble(t, rng, 8, regions...)
	onEach(t, n, func(ctx context.Context, i int) error {
		if err := expect("Lock.Acquire", locks[i].Acquire(ctx)); err != nil {
			return err
		}
		if err := locks[i].Release(); err != nil {
			return fmt.Errorf("Lock.Release: %w", err)
		}
		if err := expect("RLock.Acquire", rlocks[i].Acquire(ctx)); err != nil {
			return err
		}
		if err := rlocks[i].Release(); err != nil {
			return fmt.Errorf("RLock.Release: %w", err)
		}
		return nil
	})
	checkTreeWorks(t, cl, cd)
}

// TestFaultDict damages Dicts: the block with the lock word and the map's
// header, the slot table, or an entry. Every call then returns, with
// ErrCorrupt at worst, and never leaves the Dict locked.
func TestFaultDict(t *testing.T) {
	rng := faultRNG(t)
	cl, cd := controls(t)
	a, err := treeArena()
	if err != nil {
		t.Fatal(err)
	}
	n := faultTrials()
	dicts := make([]*Dict[string, int], n)
	var regions []scribbleRegion
	for i := range n {
		if dicts[i], err = NewDict[string, int](); err != nil {
			t.Fatal(err)
		}
		for k := range 8 {
			if err := dicts[i].Set(fmt.Sprint("k", k), k); err != nil {
				t.Fatal(err)
			}
		}
		dicts[i].Delete("k2")
		blocks := dicts[i].s.Blocks()
		var r scribbleRegion
		switch rng.IntN(3) {
		case 0: // the lock word, the type and the map's header
			r = scribbleRegion{Off: uint64(dicts[i].h.off), Len: dictBlock}
		case 1: // the table
			size, _ := a.BlockSize(blocks[0])
			r = scribbleRegion{Off: uint64(blocks[0]), Len: uint64(size)}
		case 2: // an entry
			r = scribbleRegion{Off: uint64(blocks[1+rng.IntN(len(blocks)-1)]), Len: 32}
		}
		regions = append(regions, r)
	}
	scribble(t, rng, 16, regions...)
	corrupt := 0
	var mu sync.Mutex
	onEach(t, n, func(ctx context.Context, i int) error {
		d := dicts[i]
		note := func(what string, err error) error {
			if errors.Is(err, ErrCorrupt) {
				mu.Lock()
				corrupt++
				mu.Unlock()
			}
			return expect(what, err)
		}
		if _, err := d.Items(); note("Items", err) != nil {
			return note("Items", err)
		}
		_ = d.Len()
		if _, _, err := d.Get("k3"); note("Get", err) != nil {
			return note("Get", err)
		}
		if err := d.Set("k3", 33); note("Set", err) != nil {
			return note("Set", err)
		}
		if _, err := d.Delete("k5"); note("Delete", err) != nil {
			return note("Delete", err)
		}
		err := d.Update("k1", func(old int, ok bool) (int, bool) { return old + 1, true })
		if note("Update", err) != nil {
			return note("Update", err)
		}
		if _, err := d.Keys(); note("Keys", err) != nil {
			return note("Keys", err)
		}
		// A panic in Update's function leaves the Dict unlocked.
		func() {
			defer func() { recover() }()
			d.Update("k4", func(int, bool) (int, bool) { panic("in Update") })
		}()
		if err := d.Set("k9", 9); note("Set after a panic", err) != nil {
			return note("Set after a panic", err)
		}
		return nil
	})
	t.Logf("%d calls found their Dict corrupt", corrupt)
	checkTreeWorks(t, cl, cd)
}

// TestFaultList is TestFaultDict for Lists.
func TestFaultList(t *testing.T) {
	rng := faultRNG(t)
	cl, cd := controls(t)
	a, err := treeArena()
	if err != nil {
		t.Fatal(err)
	}
	n := faultTrials()
	lists := make([]*List[string], n)
	var regions []scribbleRegion
	for i := range n {
		if lists[i], err = NewList[string](); err != nil {
			t.Fatal(err)
		}
		for k := range 6 {
			if err := lists[i].Append(fmt.Sprint("v", k)); err != nil {
				t.Fatal(err)
			}
		}
		blocks := lists[i].s.Blocks()
		var r scribbleRegion
		switch rng.IntN(3) {
		case 0:
			r = scribbleRegion{Off: uint64(lists[i].h.off), Len: dictBlock}
		case 1:
			size, _ := a.BlockSize(blocks[0])
			r = scribbleRegion{Off: uint64(blocks[0]), Len: uint64(size)}
		case 2:
			r = scribbleRegion{Off: uint64(blocks[1+rng.IntN(len(blocks)-1)]), Len: 32}
		}
		regions = append(regions, r)
	}
	scribble(t, rng, 16, regions...)
	onEach(t, n, func(ctx context.Context, i int) error {
		l := lists[i]
		ok := func(what string, err error) error {
			if errors.Is(err, ErrOutOfRange) {
				return nil // a damaged length
			}
			return expect(what, err)
		}
		if _, err := l.Items(); ok("Items", err) != nil {
			return ok("Items", err)
		}
		_ = l.Len()
		if _, err := l.Get(2); ok("Get", err) != nil {
			return ok("Get", err)
		}
		if err := l.Set(1, "s"); ok("Set", err) != nil {
			return ok("Set", err)
		}
		if err := l.Append("a"); ok("Append", err) != nil {
			return ok("Append", err)
		}
		if err := l.Delete(0); ok("Delete", err) != nil {
			return ok("Delete", err)
		}
		func() {
			defer func() { recover() }()
			l.Update(0, func(string) string { panic("in Update") })
		}()
		if err := l.Append("b"); ok("Append after a panic", err) != nil {
			return ok("Append after a panic", err)
		}
		return nil
	})
	checkTreeWorks(t, cl, cd)
}

// TestFaultCondition damages Conditions' blocks (the waiters' slots and
// tickets), each with an undamaged Lock of its own.
func TestFaultCondition(t *testing.T) {
	rng := faultRNG(t)
	cl, cd := controls(t)
	n := faultTrials()
	conds := make([]*Condition, n)
	var regions []scribbleRegion
	for i := range n {
		l, err := NewLock()
		if err != nil {
			t.Fatal(err)
		}
		if conds[i], err = NewCondition(l); err != nil {
			t.Fatal(err)
		}
		regions = append(regions, scribbleRegion{Off: uint64(conds[i].h.off), Len: condBlockSize})
	}
	scribble(t, rng, 16, regions...)
	onEach(t, n, func(ctx context.Context, i int) error {
		c := conds[i]
		if err := c.Acquire(ctx); err != nil {
			return fmt.Errorf("Condition.Acquire: %w", err)
		}
		defer c.Release()
		c.Notify(1)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		err := c.Wait(wctx)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !damage(err) {
			return fmt.Errorf("Condition.Wait: %w", err)
		}
		c.NotifyAll()
		return nil
	})
	checkTreeWorks(t, cl, cd)
}

// TestFaultEventBarrier damages Events' and Barriers' words.
func TestFaultEventBarrier(t *testing.T) {
	rng := faultRNG(t)
	cl, cd := controls(t)
	n := faultTrials()
	events := make([]*Event, n)
	barriers := make([]*Barrier, n)
	var regions []scribbleRegion
	for i := range n {
		var err error
		if events[i], err = NewEvent(); err != nil {
			t.Fatal(err)
		}
		if barriers[i], err = NewBarrier(2, nil); err != nil {
			t.Fatal(err)
		}
		regions = append(regions, scribbleRegion{Off: uint64(events[i].h.off), Len: 8},
			scribbleRegion{Off: uint64(barriers[i].h.off), Len: barName})
	}
	scribble(t, rng, 8, regions...)
	onEach(t, n, func(ctx context.Context, i int) error {
		e := events[i]
		e.IsSet()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		err := e.Wait(wctx)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("Event.Wait: %w", err)
		}
		e.Set()
		if err := e.Wait(ctx); err != nil {
			return fmt.Errorf("Event.Wait after Set: %w", err)
		}
		e.Clear()

		b := barriers[i]
		b.NWaiting()
		b.Broken()
		for _, fresh := range []bool{false, true} {
			if fresh {
				// Opened again, as another process would: the parties are read
				// from the damaged block.
				data, err := b.MarshalBinary()
				if err != nil {
					return err
				}
				b = new(Barrier)
				if err := b.UnmarshalBinary(data); err != nil {
					if damage(err) {
						return nil
					}
					return fmt.Errorf("Barrier.UnmarshalBinary: %w", err)
				}
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
			_, err := b.Wait(wctx)
			cancel()
			if err != nil && !errors.Is(err, ErrBrokenBarrier) && !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("Barrier.Wait: %w", err)
			}
			b.Reset()
			b.Abort()
		}
		return nil
	})
	checkTreeWorks(t, cl, cd)
}

// TestFaultValueArray damages the headers of Values and Arrays (lock word,
// type, the Lock's offset, the value or the length).
func TestFaultValueArray(t *testing.T) {
	rng := faultRNG(t)
	cl, cd := controls(t)
	n := faultTrials()
	values := make([]*Value[int64], n)
	arrays := make([]*Array[int32], n)
	var regions []scribbleRegion
	for i := range n {
		var err error
		if values[i], err = NewValue[int64](int64(i)); err != nil {
			t.Fatal(err)
		}
		if arrays[i], err = NewArray[int32](10); err != nil {
			t.Fatal(err)
		}
		regions = append(regions, scribbleRegion{Off: uint64(values[i].h.off), Len: shWord + 8},
			scribbleRegion{Off: uint64(arrays[i].h.off), Len: shWord + 8})
	}
	scribble(t, rng, 16, regions...)
	onEach(t, n, func(ctx context.Context, i int) error {
		v := values[i]
		v.Load()
		v.Add(1)
		v.Store(3)
		if err := expect("Value.Acquire", v.Acquire(ctx)); err != nil {
			return err
		}
		if err := v.Release(); err != nil {
			return fmt.Errorf("Value.Release: %w", err)
		}
		a := arrays[i]
		a.Set(0, a.At(9))
		if err := expect("Array.Update", a.Update(func(s []int32) { s[1]++ })); err != nil {
			return err
		}
		dst := make([]int32, 10)
		a.CopyTo(dst)
		// Opened again, as another process would.
		data, _ := v.MarshalBinary()
		if err := expect("Value.UnmarshalBinary", new(Value[int64]).UnmarshalBinary(data)); err != nil {
			return err
		}
		data, _ = a.MarshalBinary()
		na := new(Array[int32])
		if err := na.UnmarshalBinary(data); err != nil {
			return expect("Array.UnmarshalBinary", err)
		}
		for j := range na.Len() {
			na.At(j)
		}
		return nil
	})
	checkTreeWorks(t, cl, cd)
}

// TestFaultArenaHeader damages the arena's lock word and journal length
// from a child, trial after trial: random bytes, and crafted owners (init,
// this process, a pid beyond pid_max). Allocation must go on working. The
// rest of the arena's metadata is scribbled over by internal/shm's tests,
// on arenas of their own: damage there can cost this test binary's arena
// its allocator for good.
func TestFaultArenaHeader(t *testing.T) {
	rng := faultRNG(t)
	cl, cd := controls(t)
	trials := faultTrials() / 4
	crafted := []uint64{1, uint64(os.Getpid()), 1<<22 + 3, 1<<32 - 1}
	for trial := range trials {
		r := scribbleRegion{Off: arenaLockWord, Len: 8, File: true}
		switch {
		case trial < len(crafted):
			r.Word = 99<<32 | crafted[trial]
		case trial%2 == 1:
			r.Off = arenaJournalLn
		}
		scribble(t, rng, 8, r)
		done := make(chan error, 1)
		go func() {
			l, err := NewLock()
			if err == nil {
				err = l.Acquire(context.Background())
				l.Release()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("trial %d (%+v): NewLock: %v", trial, r, err)
			}
		case <-time.After(faultDeadline):
			t.Fatalf("trial %d (%+v): NewLock hung", trial, r)
		}
	}
	checkTreeWorks(t, cl, cd)
}

package mp_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// holdPermits takes n permits, says so, and blocks forever.
func holdPermits(s *mp.Semaphore, n int, flag string) error {
	for i := 0; i < n; i++ {
		if err := s.Acquire(context.Background()); err != nil {
			return err
		}
	}
	writeFile(flag, "held")
	select {}
}

// waitPermit blocks in Acquire until killed (or granted).
func waitPermit(s *mp.Semaphore, flag string) error {
	writeFile(flag, "waiting")
	return s.Acquire(context.Background())
}

// occupy takes a permit n times, checking through an in-use counter (kept
// under lock in a file) that no more than limit hold one at once.
func occupy(s *mp.Semaphore, lock *mp.Lock, path string, limit, n int) error {
	for i := 0; i < n; i++ {
		if err := s.Acquire(context.Background()); err != nil {
			return err
		}
		lock.Lock()
		err := incrementFile(path)
		lock.Unlock()
		if err != nil {
			return err
		}
		lock.Lock()
		inside, err := readCount(path)
		if err == nil && inside > limit {
			err = errors.New("too many inside")
		}
		if err == nil {
			err = addFile(path, -1)
		}
		lock.Unlock()
		s.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

func init() { mp.Register(holdPermits, waitPermit, occupy) }

func TestSemaphoreBasics(t *testing.T) {
	s := mp.Must(mp.NewSemaphore(2))
	if !s.TryAcquire() || !s.TryAcquire() || s.TryAcquire() {
		t.Fatal("Semaphore(2) did not give exactly two permits")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with none left = %v", err)
	}
	if s.Value() != 0 {
		t.Fatalf("Value = %d after a timed-out Acquire", s.Value())
	}
	s.Release()
	s.Release()
	s.Release() // an unbounded semaphore may go above its start
	if s.Value() != 3 {
		t.Fatalf("Value = %d, want 3", s.Value())
	}

	b := mp.Must(mp.NewBoundedSemaphore(1))
	if err := b.Release(); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("over-release of a BoundedSemaphore = %v", err)
	}
	b.Acquire(context.Background())
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := mp.NewSemaphore(-1); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("NewSemaphore(-1) = %v", err)
	}
}

func TestSemaphoreLimitAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inside")
	writeFile(path, "0")
	s := mp.Must(mp.NewSemaphore(3))
	l := mp.Must(mp.NewLock())
	ps := make([]*mp.Process, 5)
	for i := range ps {
		ps[i] = mp.NewProcess(occupy, s, l, path, 3, 100)
		if err := ps[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := occupy(s, l, path, 3, 100); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, p := range ps {
		if err := join(t, p); err != nil {
			t.Fatal(err)
		}
	}
	if s.Value() != 3 {
		t.Fatalf("Value = %d after everyone released, want 3", s.Value())
	}
}

// TestSemaphorePermitsOfKilledHolderRecovered: a holder killed with its
// permits does not take them to the grave.
func TestSemaphorePermitsOfKilledHolderRecovered(t *testing.T) {
	dir := t.TempDir()
	s := mp.Must(mp.NewSemaphore(3))
	holder := mp.NewProcess(holdPermits, s, 2, filepath.Join(dir, "held"))
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	awaitFile(t, filepath.Join(dir, "held"))
	if s.Value() != 1 {
		t.Fatalf("Value = %d with 2 of 3 held", s.Value())
	}
	// A waiter killed while blocked takes nothing with it.
	waiter := mp.NewProcess(waitPermit, s, filepath.Join(dir, "waiting"))
	s.Acquire(context.Background()) // the last free permit: the waiter will block
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	awaitFile(t, filepath.Join(dir, "waiting"))
	waiter.Kill()
	join(t, waiter)
	holder.Kill()
	join(t, holder)

	// Three acquisitions must succeed: ours is released, and the dead
	// holder's two come back.
	s.Release()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 3; i++ {
		if err := s.Acquire(ctx); err != nil {
			t.Fatalf("acquire %d after the holder died: %v", i, err)
		}
	}
	if s.TryAcquire() {
		t.Fatal("more permits than the semaphore started with")
	}
}

func TestEvent(t *testing.T) {
	e := mp.Must(mp.NewEvent())
	if e.IsSet() {
		t.Fatal("new Event is set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := e.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on an unset Event = %v", err)
	}
	var woken atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.Wait(context.Background()) == nil {
				woken.Add(1)
			}
		}()
	}
	e.Set()
	wg.Wait()
	if woken.Load() != 50 {
		t.Fatalf("%d of 50 waiters returned", woken.Load())
	}
	if !e.IsSet() || e.Wait(context.Background()) != nil {
		t.Fatal("set Event does not report set")
	}
	e.Clear()
	if e.IsSet() {
		t.Fatal("Clear did not clear")
	}
}

// relay waits for in, then sets out, rounds times: events handed back and
// forth between processes.
func relay(in, out *mp.Event, rounds int) error {
	for i := 0; i < rounds; i++ {
		if err := in.Wait(context.Background()); err != nil {
			return err
		}
		in.Clear()
		out.Set()
	}
	return nil
}

func init() { mp.Register(relay) }

func TestEventAcrossProcesses(t *testing.T) {
	ping, pong := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	const rounds = 2000
	p := mp.NewProcess(relay, ping, pong, rounds)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < rounds; i++ {
		ping.Set()
		if err := pong.Wait(ctx); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		pong.Clear()
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
}

// takePermit takes one permit of s and returns, keeping it.
func takePermit(s *mp.Semaphore) error { return s.Acquire(context.Background()) }

func init() { mp.Register(takePermit) }

// TestSemaphoreReleasedByAnotherProcess: a permit one process took and
// another returned is not recovered again when the first exits: a
// Semaphore(1) then still admits one holder, not two.
func TestSemaphoreReleasedByAnotherProcess(t *testing.T) {
	s := mp.Must(mp.NewSemaphore(1))
	p := mp.NewProcess(takePermit, s)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(); err != nil { // the child's permit, returned here
		t.Fatal(err)
	}
	if err := s.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A waiter looks for dead holders every 50 ms: in 300 ms it would
	// have "recovered" the exited child's permit several times over.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second holder of a Semaphore(1): Acquire = %v", err)
	}
	// And a release by a process that holds nothing when nobody holds
	// anything is a signal: a Semaphore(0) released for another to take.
	sig := mp.Must(mp.NewSemaphore(0))
	q := mp.NewProcess(releaseOnce, sig)
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, q); err != nil {
		t.Fatal(err)
	}
	if err := sig.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sig.Value() != 0 {
		t.Fatalf("Value %d after one signal was taken", sig.Value())
	}
}

func releaseOnce(s *mp.Semaphore) error { return s.Release() }

func init() { mp.Register(releaseOnce) }

// TestSemaphoreManyHolders: the permits of 80 holders killed at once all
// come back (the holder table used to stop recording at 64 processes, and
// the permits of the others were lost for good).
func TestSemaphoreManyHolders(t *testing.T) {
	const n = 80
	dir := t.TempDir()
	s := mp.Must(mp.NewSemaphore(n))
	var ps []*mp.Process
	for i := range n {
		p := mp.NewProcess(holdPermits, s, 1, filepath.Join(dir, fmt.Sprint(i)))
		p.Daemon = true
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for i := range n {
		awaitFile(t, filepath.Join(dir, fmt.Sprint(i)))
	}
	for _, p := range ps {
		p.Kill()
		join(t, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		if err := s.Acquire(ctx); err != nil {
			t.Fatalf("acquire %d of the %d permits of the killed holders: %v", i, n, err)
		}
	}
}

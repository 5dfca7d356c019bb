package mp_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp"
	"github.com/multiproc/mp/internal/leakcheck"
)

// addUnderLock does the seeds' read-check-write on a counter file, n times,
// holding lock around each update.
func addUnderLock(lock *mp.Lock, path string, n int) error {
	for i := 0; i < n; i++ {
		if err := lock.Acquire(context.Background()); err != nil {
			return err
		}
		err := incrementFile(path)
		lock.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

func incrementFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strconv.Itoa(n+1)), 0o644)
}

// holdLock takes lock, says so in a file, and blocks forever.
func holdLock(lock *mp.Lock, flag string) error {
	if err := lock.Acquire(context.Background()); err != nil {
		return err
	}
	writeFile(flag, "held")
	select {}
}

func holdRLock(lock *mp.RLock, flag string) error {
	for i := 0; i < 3; i++ {
		if err := lock.Acquire(context.Background()); err != nil {
			return err
		}
	}
	writeFile(flag, "held")
	select {}
}

// acquireAndReport waits for lock and writes what Acquire returned.
func acquireAndReport(lock *mp.Lock, out string) error {
	err := lock.Acquire(context.Background())
	msg := "ok"
	if errors.Is(err, mp.ErrOwnerDied) {
		msg = "owner died"
	} else if err != nil {
		msg = err.Error()
	}
	lock.Release()
	return writeFile(out, msg)
}

func init() { mp.Register(addUnderLock, holdLock, holdRLock, acquireAndReport) }

// startHolder starts hold(lock, flag) and waits until it holds the lock.
func startHolder(t *testing.T, dir string, hold, lock any) *mp.Process {
	t.Helper()
	flag := filepath.Join(dir, "held")
	p := mp.NewProcess(hold, lock, flag)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	awaitFile(t, flag)
	return p
}

func awaitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within a minute", path)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLockBasics(t *testing.T) {
	l := mp.Must(mp.NewLock())
	if !l.TryAcquire() {
		t.Fatal("TryAcquire of a free lock failed")
	}
	if l.TryAcquire() {
		t.Fatal("TryAcquire of a held lock succeeded (a Lock is not reentrant)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire of a held lock = %v, want DeadlineExceeded", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("second Release = %v, want ErrNotAcquired", err)
	}
	var locker sync.Locker = l
	locker.Lock()
	locker.Unlock()
	defer func() {
		if recover() == nil {
			t.Error("Unlock of an unlocked Lock did not panic")
		}
	}()
	l.Unlock()
}

func TestZeroPrimitivesAreRefused(t *testing.T) {
	for name, f := range map[string]func(){
		"Lock":      func() { new(mp.Lock).Lock() },
		"RLock":     func() { new(mp.RLock).Lock() },
		"Semaphore": func() { new(mp.Semaphore).TryAcquire() },
		"Event":     func() { new(mp.Event).Set() },
	} {
		func() {
			defer func() {
				if r, _ := recover().(error); !errors.Is(r, mp.ErrInvalidHandle) {
					t.Errorf("zero %s: panic %v, want ErrInvalidHandle", name, r)
				}
			}()
			f()
		}()
	}
	var l mp.Lock
	if err := l.UnmarshalBinary([]byte("garbage")); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("UnmarshalBinary(garbage) = %v", err)
	}
	ev := mp.Must(mp.NewEvent())
	b, _ := ev.MarshalBinary()
	if err := l.UnmarshalBinary(b); !errors.Is(err, mp.ErrInvalidHandle) || !strings.Contains(err.Error(), "Event") {
		t.Fatalf("an Event's handle decoded as a Lock: %v", err)
	}
}

// TestLockAcrossProcesses is the seeds' ticket counter: processes and
// goroutines updating one file under one Lock lose no update.
func TestLockAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "count")
	writeFile(path, "0")
	l := mp.Must(mp.NewLock())
	const procs, perProc, goroutines, perGoroutine = 4, 150, 4, 150
	ps := make([]*mp.Process, procs)
	for i := range ps {
		ps[i] = mp.NewProcess(addUnderLock, l, path, perProc)
		if err := ps[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < goroutines; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := addUnderLock(l, path, perGoroutine); err != nil {
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
	want := procs*perProc + goroutines*perGoroutine
	if got := readFile(t, path); got != strconv.Itoa(want) {
		t.Fatalf("count = %s, want %d", got, want)
	}
}

func TestLockOwnerKilled(t *testing.T) {
	dir := t.TempDir()
	l := mp.Must(mp.NewLock())
	holder := startHolder(t, dir, holdLock, l)
	// A waiter in another process, and one here.
	out := filepath.Join(dir, "waiter")
	waiter := mp.NewProcess(acquireAndReport, l, out)
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	if l.TryAcquire() {
		t.Fatal("acquired a lock held by a live process")
	}
	holder.Kill()
	join(t, holder)
	if err := join(t, waiter); err != nil {
		t.Fatal(err)
	}
	// Exactly one of the two acquirers saw the owner's death: whoever came
	// first after the kill. The waiter process reports; if it did not see
	// it, it got the lock normally, after this goroutine... which has not
	// tried yet, so the waiter must have seen it.
	if got := readFile(t, out); got != "owner died" {
		t.Fatalf("waiter in another process got %q, want \"owner died\"", got)
	}
	if err := l.Acquire(context.Background()); err != nil {
		t.Fatalf("Acquire after the repair: %v", err)
	}
	l.Release()
}

func TestLockOwnerKilledLocalWaiter(t *testing.T) {
	dir := t.TempDir()
	l := mp.Must(mp.NewLock())
	holder := startHolder(t, dir, holdLock, l)
	got := make(chan error, 1)
	go func() { got <- l.Acquire(context.Background()) }()
	holder.Kill()
	join(t, holder)
	select {
	case err := <-got:
		if !errors.Is(err, mp.ErrOwnerDied) {
			t.Fatalf("Acquire = %v, want ErrOwnerDied", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("waiter still blocked a minute after the owner died")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestRLock(t *testing.T) {
	r := mp.Must(mp.NewRLock())
	for i := 0; i < 3; i++ {
		if err := r.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Another goroutine neither gets it nor may release it.
	other := make(chan [2]error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		other <- [2]error{r.Acquire(ctx), r.Release()}
	}()
	errs := <-other
	if !errors.Is(errs[0], context.DeadlineExceeded) || !errors.Is(errs[1], mp.ErrNotAcquired) {
		t.Fatalf("other goroutine: Acquire %v, Release %v", errs[0], errs[1])
	}
	for i := 0; i < 3; i++ {
		if err := r.Release(); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	if err := r.Release(); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("fourth Release = %v", err)
	}
	go func() { other <- [2]error{r.Acquire(context.Background()), r.Release()} }()
	if errs := <-other; errs[0] != nil || errs[1] != nil {
		t.Fatalf("after full release, another goroutine: %v", errs)
	}
}

func TestRLockOwnerKilled(t *testing.T) {
	dir := t.TempDir()
	r := mp.Must(mp.NewRLock())
	holder := startHolder(t, dir, holdRLock, r)
	holder.Kill()
	join(t, holder)
	if err := r.Acquire(context.Background()); !errors.Is(err, mp.ErrOwnerDied) {
		t.Fatalf("Acquire = %v, want ErrOwnerDied", err)
	}
	// The dead owner's three levels are gone: one release frees it.
	if err := r.Release(); err != nil {
		t.Fatal(err)
	}
	if !r.TryAcquire() {
		t.Fatal("RLock still held after the new owner's only release")
	}
	r.Release()
}

// TestTenThousandGoroutinesOnOneLock: Go aborts past 10,000 OS threads; a
// blocked Acquire must not hold one.
func TestTenThousandGoroutinesOnOneLock(t *testing.T) {
	l := mp.Must(mp.NewLock())
	ev := mp.Must(mp.NewEvent())
	l.Lock()
	const n = 10000
	var started, acquired atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			started.Add(1)
			l.Lock()
			acquired.Add(1)
			l.Unlock()
		}()
		go func() {
			defer wg.Done()
			ev.Wait(context.Background())
		}()
	}
	for started.Load() < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let them block; the bound holds at any moment
	if th := leakcheck.Threads(); th > 500 {
		t.Fatalf("%d OS threads with %d goroutines blocked on a Lock and %d on an Event", th, n, n)
	} else {
		t.Logf("%d OS threads with %d goroutines blocked on a Lock and %d on an Event", th, n, n)
	}
	l.Unlock()
	ev.Set()
	wg.Wait()
	if acquired.Load() != n {
		t.Fatalf("%d acquired", acquired.Load())
	}
}

func readCount(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func addFile(path string, d int) error {
	n, err := readCount(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strconv.Itoa(n+d)), 0o644)
}

// TestLockIsSeenBySyncTools: plain memory guarded by a Lock, a Semaphore or
// an Event is correctly ordered; under -race this also checks that the
// race detector sees the ordering (it ignores atomics on shared memory).
func TestLockIsSeenBySyncTools(t *testing.T) {
	l := mp.Must(mp.NewLock())
	s := mp.Must(mp.NewSemaphore(1))
	counter, semCounter := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 500; j++ {
				l.Lock()
				counter++
				l.Unlock()
				s.Acquire(context.Background())
				semCounter++
				s.Release()
			}
		}()
	}
	wg.Wait()
	if counter != 4000 || semCounter != 4000 {
		t.Fatalf("counters %d, %d; want 4000", counter, semCounter)
	}
	e := mp.Must(mp.NewEvent())
	msg := ""
	go func() { msg = "hello"; e.Set() }()
	e.Wait(context.Background())
	if msg != "hello" {
		t.Fatalf("msg = %q", msg)
	}
}

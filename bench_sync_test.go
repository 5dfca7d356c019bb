package mp_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp"
	"github.com/multiproc/mp/internal/futex"
	"github.com/multiproc/mp/internal/proc"
)

// The synchronisation benchmarks. The two-process ones start a child
// running one of the registered functions below, wait until it is ready
// (an Event it sets), and time only the exchange itself: the child says it
// is done with another Event, and is joined after the timer stops.
//
// BenchmarkFutexPingPong is the floor for BenchmarkEventPingPong: the same
// hand-over on a bare futex word, each side on a locked OS thread, as in
// ../shared/bench/limits.

func init() { mp.Register(benchLockHammer, benchEventPong, benchFutexPong) }

// benchLockHammer acquires and releases lock n times once start is set.
func benchLockHammer(lock *mp.Lock, n int, ready, start, done *mp.Event) error {
	ctx := context.Background()
	ready.Set()
	if err := start.Wait(ctx); err != nil {
		return err
	}
	for range n {
		if err := lock.Acquire(ctx); err != nil {
			return err
		}
		if err := lock.Release(); err != nil {
			return err
		}
	}
	done.Set()
	return nil
}

// benchEventPong answers n pings: it waits for ping, clears it, sets pong.
// ping is cleared before pong is set, and the other side sets ping again
// only after it has seen pong, so no turn is lost.
func benchEventPong(ping, pong, ready *mp.Event, n int, cancellable bool) error {
	ctx := context.Background()
	if cancellable {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
	}
	ready.Set()
	for range n {
		if err := ping.Wait(ctx); err != nil {
			return err
		}
		ping.Clear()
		pong.Set()
	}
	return nil
}

// benchFutexPong maps the parent's memfd (found through /proc) and answers
// n pings on its first word: it waits for 1, stores 0 and wakes.
func benchFutexPong(pid, fd, n int, lockThread bool, ready *mp.Event) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	f.Close()
	if err != nil {
		return err
	}
	defer unix.Munmap(mem)
	w := (*uint32)(unsafe.Pointer(&mem[0]))
	if lockThread {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	ready.Set()
	for range n {
		for atomic.LoadUint32(w) != 1 {
			futex.Wait(w, 0, 0)
		}
		atomic.StoreUint32(w, 0)
		futex.Wake(w, 1)
	}
	return nil
}

// startChild starts fn(args...) and waits until it sets ready.
func startChild(b *testing.B, ready *mp.Event, fn any, args ...any) *mp.Process {
	b.Helper()
	p := mp.NewProcess(fn, args...)
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ready.Wait(ctx); err != nil {
		p.Kill()
		p.Join(context.Background())
		b.Fatalf("the child did not get ready: %v", err)
	}
	return p
}

func joinChild(b *testing.B, p *mp.Process) {
	b.Helper()
	if err := p.Join(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLockUncontended is one acquire and release by one goroutine, the
// lock always free: Python's Lock takes about 62 ns here, a CAS on shared
// memory 10 ns.
func BenchmarkLockUncontended(b *testing.B) {
	l := mp.Must(mp.NewLock())
	b.Run("LockUnlock", func(b *testing.B) {
		for b.Loop() {
			l.Lock()
			l.Unlock()
		}
	})
	b.Run("AcquireRelease", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			if err := l.Acquire(ctx); err != nil {
				b.Fatal(err)
			}
			if err := l.Release(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("TryAcquireRelease", func(b *testing.B) {
		for b.Loop() {
			if !l.TryAcquire() {
				b.Fatal("TryAcquire failed on a free lock")
			}
			if err := l.Release(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLockContended is two processes, this one and a child, taking
// turns at one lock as fast as they can, b.N acquisitions between them:
// ns/op is the time per acquisition. %held is the share of this process's
// acquisitions that found the lock held by the other (TryAcquire fails,
// then Acquire waits): a low figure means that each process gets long runs
// of the lock, as with any lock that a releaser may take again at once.
func BenchmarkLockContended(b *testing.B) {
	l := mp.Must(mp.NewLock())
	ready, start, done := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	mine := b.N / 2
	p := startChild(b, ready, benchLockHammer, l, b.N-mine, ready, start, done)
	ctx := context.Background()
	held := 0 // how often this side found the lock held
	b.ResetTimer()
	start.Set()
	for range mine {
		if !l.TryAcquire() {
			held++
			if err := l.Acquire(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if err := l.Release(); err != nil {
			b.Fatal(err)
		}
	}
	if err := done.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if mine > 0 {
		b.ReportMetric(100*float64(held)/float64(mine), "%held")
	}
	joinChild(b, p)
}

// BenchmarkEventPingPong hands a turn to a child process and back with two
// Events; ns/op is one round trip. Its floor is BenchmarkFutexPingPong.
// "background" waits with context.Background(); "cancellable" with a
// context that can end, as a caller with a deadline would.
func BenchmarkEventPingPong(b *testing.B) {
	b.Run("background", func(b *testing.B) { benchEvent(b, false) })
	b.Run("cancellable", func(b *testing.B) { benchEvent(b, true) })
}

func benchEvent(b *testing.B, cancellable bool) {
	ping, pong, ready := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	p := startChild(b, ready, benchEventPong, ping, pong, ready, b.N, cancellable)
	ctx := context.Background()
	if cancellable {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
	}
	b.ResetTimer()
	for range b.N {
		ping.Set()
		if err := pong.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		pong.Clear()
	}
	b.StopTimer()
	joinChild(b, p)
}

// BenchmarkFutexPingPong is the floor of a wake-up round trip between two
// processes: one futex word in a memfd that both map (the child opens it
// through /proc/<pid>/fd), no spinning, FUTEX_WAIT and FUTEX_WAKE directly.
// "locked" runs each side on a locked OS thread, as ../shared/bench/limits
// does; "unlocked" runs them as ordinary goroutines, as BenchmarkEventPingPong
// does.
func BenchmarkFutexPingPong(b *testing.B) {
	b.Run("locked", func(b *testing.B) { benchFutex(b, true) })
	b.Run("unlocked", func(b *testing.B) { benchFutex(b, false) })
	b.Run("busy", func(b *testing.B) {
		busyMachine(b)
		benchFutex(b, false)
	})
}

func benchFutex(b *testing.B, lockThread bool) {
	fd, err := unix.MemfdCreate("mp-bench-futex", unix.MFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 4096); err != nil {
		b.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(mem)
	w := (*uint32)(unsafe.Pointer(&mem[0]))

	ready := mp.Must(mp.NewEvent())
	p := startChild(b, ready, benchFutexPong, os.Getpid(), fd, b.N, lockThread, ready)
	if lockThread {
		runtime.LockOSThread()
	}
	b.ResetTimer()
	for range b.N {
		atomic.StoreUint32(w, 1)
		futex.Wake(w, 1)
		for atomic.LoadUint32(w) != 0 {
			futex.Wait(w, 1, 0)
		}
	}
	b.StopTimer()
	if lockThread {
		runtime.UnlockOSThread()
	}
	joinChild(b, p)
}

// BenchmarkSemaphoreUncontended is one acquire and release by one goroutine
// of a semaphore that always has a permit.
func BenchmarkSemaphoreUncontended(b *testing.B) {
	s := mp.Must(mp.NewSemaphore(1))
	ctx := context.Background()
	for b.Loop() {
		if err := s.Acquire(ctx); err != nil {
			b.Fatal(err)
		}
		if err := s.Release(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLockOwnerCheck is what a Lock waiter pays before it first parks
// (and every 50 ms after): the check that the holder is alive, kill(pid, 0)
// and a read of /proc/<pid>/stat. A Semaphore waiter pays it once per
// process recorded as a holder.
func BenchmarkLockOwnerCheck(b *testing.B) {
	me := proc.Self()
	for b.Loop() {
		if !proc.AliveStart32(me.Pid, uint32(me.Start)) {
			b.Fatal("this process is not alive")
		}
	}
}

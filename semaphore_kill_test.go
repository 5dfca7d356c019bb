package mp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// longTests reports whether the long versions of the kill loops are
// wanted (MULTIPROC_LONG=1).
func longTests() bool { return os.Getenv("MULTIPROC_LONG") == "1" }

// killAtStore makes this process SIGKILL itself at the killAt-th call of
// the hook it is installed as (never, for 0).
func killAtStore(killAt int) func() {
	n := 0
	return func() {
		if n++; n == killAt {
			unix.Kill(os.Getpid(), unix.SIGKILL)
			select {} // SIGKILL is on its way
		}
	}
}

// semScript runs script on s, one op per byte: 'a' TryAcquire (which must
// succeed), 'r' Release, 'c' reclaim; killed at the killAt-th store to
// shared memory.
func semScript(s *Semaphore, script string, killAt int) error {
	semTestHook = killAtStore(killAt)
	defer func() { semTestHook = nil }()
	for _, op := range script {
		switch op {
		case 'a':
			if !s.TryAcquire() {
				return errors.New("TryAcquire failed")
			}
		case 'r':
			if err := s.Release(); err != nil {
				return err
			}
		case 'c':
			s.reclaim()
		}
	}
	return nil
}

// semLoop takes and returns a permit of s in a loop until killed, having
// set started once it is in the loop.
func semLoop(s *Semaphore, started *Event) error {
	for i := 0; ; i++ {
		if s.TryAcquire() {
			if err := s.Release(); err != nil {
				return err
			}
		}
		if i == 10 {
			started.Set()
		}
	}
}

func init() { Register(semScript, semLoop) }

// runKillable starts fn(args...) and waits for it, reporting whether it was
// killed by SIGKILL; any other failure fails the test.
func runKillable(t *testing.T, fn any, args ...any) (killed bool) {
	t.Helper()
	p := NewProcess(fn, args...)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := p.Join(ctx)
	var pe *ProcessError
	switch {
	case err == nil:
		return false
	case errors.As(err, &pe) && pe.ExitCode == -9:
		return true
	}
	t.Fatalf("child: %v", err)
	return false
}

// semTotals settles s and returns its count, the permits its table
// records as held, and those of them held by dead processes.
func semTotals(s *Semaphore) (count, held, dead int) {
	s.settle(atomic.LoadUint64(s.word))
	s.holders.each(func(_ int, id, st *uint64) bool {
		if who := atomic.LoadUint64(id); who != 0 {
			h := int(stateHeld(atomic.LoadUint64(st)))
			held += h
			if !idAlive(who) {
				dead += h
			}
		}
		return true
	})
	return s.Value(), held, dead
}

// TestSemaphoreKillAtEveryStore kills a process at each store to shared
// memory that its Acquires, Releases and reclaims make, and checks after
// each kill that no permit was lost or made: the count plus the permits
// recorded as held is what it was, or for a Release that held nothing,
// what it was or one more; and once the dead process's permits are
// reclaimed, that the count is exact.
func TestSemaphoreKillAtEveryStore(t *testing.T) {
	type scenario struct {
		name    string
		n       int
		bounded bool
		mine    int    // permits this process takes first
		before  string // a child runs this first, to the end (it then exits)
		script  string // the child killed at each store
		signal  bool   // the script may add a permit (a Release by no holder)
	}
	scenarios := []scenario{
		{name: "acquire", n: 2, script: "a"},
		{name: "acquire-release", n: 2, script: "ar"},
		{name: "two-then-release", n: 2, script: "aar"},
		{name: "release-both", n: 2, script: "aarr"},
		{name: "release-anothers", n: 2, mine: 1, script: "r"},
		{name: "release-anothers-bounded", n: 2, bounded: true, mine: 2, script: "rr"},
		{name: "signal", n: 0, script: "r", signal: true},
		{name: "signal-then-take", n: 0, script: "ra", signal: true},
		{name: "reclaim", n: 2, before: "aa", script: "c"},
		{name: "reclaim-bounded", n: 2, bounded: true, before: "a", script: "ac"},
		{name: "bounded", n: 2, bounded: true, script: "aarra"},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			points := 0
			for k := 1; ; k++ {
				s, err := newSemaphore(sc.n, sc.bounded)
				if err != nil {
					t.Fatal(err)
				}
				for range sc.mine {
					if !s.TryAcquire() {
						t.Fatal("cannot take this process's permits")
					}
				}
				if sc.before != "" && runKillable(t, semScript, s, sc.before, 0) {
					t.Fatal("the first child was killed")
				}
				killed := runKillable(t, semScript, s, sc.script, k)
				total := sc.n
				c, h, dead := semTotals(s)
				if c+h != total && !(sc.signal && c+h <= total+len(sc.script)) {
					t.Fatalf("killed at store %d: count %d + held %d, want %d", k, c, h, total)
				}
				if !s.reclaim() && dead > 0 {
					t.Fatalf("killed at store %d: %d permits held by dead processes not reclaimed", k, dead)
				}
				c, h, dead = semTotals(s)
				if dead != 0 || h > sc.mine {
					t.Fatalf("killed at store %d: %d permits recorded as held after reclaim (%d by the dead), want at most this process's %d", k, h, dead, sc.mine)
				}
				if c+h < total || (c+h > total && !sc.signal) {
					t.Fatalf("killed at store %d: count %d after reclaim, with %d held here: want a total of %d", k, c, h, total)
				}
				if sc.bounded && c > sc.n {
					t.Fatalf("killed at store %d: BoundedSemaphore(%d) has a count of %d", k, sc.n, c)
				}
				if !killed {
					points = k - 1
					break
				}
			}
			if points == 0 {
				t.Fatal("the script made no store to kill at")
			}
			t.Logf("%d stores", points)
		})
	}
}

// TestSemaphoreRandomKill: a child taking and returning permits in a loop is
// killed at a random moment, round after round; after each, once its
// permits are reclaimed, the count is exactly the semaphore's value. (The
// old semaphore lost or gained a permit in 4 of 10 rounds.)
func TestSemaphoreRandomKill(t *testing.T) {
	rounds := 500
	if longTests() {
		rounds = 5000
	}
	for _, bounded := range []bool{false, true} {
		t.Run(fmt.Sprintf("bounded=%v", bounded), func(t *testing.T) {
			s, err := newSemaphore(2, bounded)
			if err != nil {
				t.Fatal(err)
			}
			for round := range rounds {
				killMidLoop(t, round, semLoop, s)
				s.reclaim()
				if v := s.Value(); v != 2 {
					t.Fatalf("round %d: Value %d after the child was killed and reclaimed, want 2", round, v)
				}
			}
		})
	}
}

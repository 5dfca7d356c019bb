package shm

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the child processes of the multi-process
// tests: TestMain runs a child role instead of the tests when roleEnv is
// set. The arena arrives as fd 3 (the first of exec.Cmd.ExtraFiles).
const (
	roleEnv = "SHM_TEST_ROLE"
	argEnv  = "SHM_TEST_ARG"
	arenaFd = 3
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(childMain(role, os.Getenv(argEnv)))
	}
	os.Exit(leakcheck.Run(m))
}

func childMain(role, arg string) int {
	a, err := Attach(arenaFd)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "child %d (%s): %v\n", os.Getpid(), role, err)
		return 3
	}
	switch role {
	case "hammer": // arg: iterations (0: until killed), max block size
		var iters, maxSize int
		fmt.Sscan(arg, &iters, &maxSize)
		os.Stdout.Write([]byte{'r'})   // attached: the parent may now kill us
		os.Stdin.Read(make([]byte, 1)) // wait for the parent's go, if it gives one
		rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
		if err := hammer(a, uint64(os.Getpid()), iters, 32, maxSize, rng); err != nil {
			return fail(err)
		}
	case "step": // arg: op, offset, kill point (0: count the points)
		var op string
		var off Offset
		var killAt int
		fmt.Sscan(arg, &op, &off, &killAt)
		points := countPoints(killAt)
		if err := runOp(a, op, off); err != nil {
			return fail(err)
		}
		fmt.Print(*points)
	case "scribble": // arg: file offset, byte count, seed: write random bytes there
		var off uint64
		var n int
		var seed uint64
		fmt.Sscan(arg, &off, &n, &seed)
		Scribble(a, rand.New(rand.NewPCG(seed, 5)), off, n)
	case "hold": // take the allocator lock, say so, and keep it until killed
		a.lock()
		os.Stdout.Write([]byte{'h'})
		for {
			time.Sleep(time.Hour)
		}
	case "recover": // arg: kill point (0: count the points)
		killAt, _ := strconv.Atoi(arg)
		points := countPoints(killAt)
		a.Stats() // takes the lock, so rolls back whatever it finds
		fmt.Print(*points)
	default:
		return fail(fmt.Errorf("unknown role"))
	}
	if err := a.Close(); err != nil {
		return fail(err)
	}
	return 0
}

// countPoints sets crashHook to count its calls and to SIGKILL this process
// at call killAt, if killAt > 0.
func countPoints(killAt int) *int {
	n := new(int)
	crashHook = func() {
		if *n++; *n == killAt {
			unix.Kill(os.Getpid(), unix.SIGKILL)
			for {
				time.Sleep(time.Hour) // SIGKILL is on its way
			}
		}
	}
	return n
}

func runOp(a *Arena, op string, off Offset) error {
	switch op {
	case "alloc":
		_, err := a.Alloc(64)
		return err
	case "free":
		return a.Free(off)
	}
	return fmt.Errorf("unknown op %q", op)
}

type child struct {
	*exec.Cmd
	stdout, stderr bytes.Buffer
}

// start starts a child running role with arg, handing it the arena, and
// stdin and stdout if not nil. The child is killed and waited for at the
// end of the test if the test has not waited for it.
func start(t testing.TB, a *Arena, role, arg string, stdin *os.File, stdout io.Writer) *child {
	t.Helper()
	fd, err := unix.FcntlInt(uintptr(a.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "arena")
	defer f.Close()
	c := &child{Cmd: exec.Command(os.Args[0])}
	c.Env = append(os.Environ(), roleEnv+"="+role, argEnv+"="+arg)
	c.ExtraFiles = []*os.File{f}
	c.Stdout, c.Stderr = &c.stdout, &c.stderr
	if stdout != nil {
		c.Stdout = stdout
	}
	if stdin != nil {
		c.Stdin = stdin
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	})
	return c
}

// wait waits for the child and reports whether SIGKILL ended it; any other
// end than SIGKILL or a clean exit fails the test.
func (c *child) wait(t testing.TB) (killed bool) {
	t.Helper()
	err := c.Wait()
	if ws := c.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return true
	}
	if err != nil {
		t.Fatalf("child %s: %v\n%s", c.Env[len(c.Env)-2:], err, c.stderr.Bytes())
	}
	return false
}

func TestConcurrentProcesses(t *testing.T) {
	const procs, iters, maxSize = 4, 20000, 8192
	a := newArena(t, 8<<20)
	// The children start hammering when goW is closed, so that they run
	// at the same time rather than one after the other as they are started.
	goR, goW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer goW.Close()
	var children []*child
	for range procs {
		c := start(t, a, "hammer", fmt.Sprint(iters, maxSize), goR, nil)
		children = append(children, c)
	}
	goR.Close()
	goW.Close()
	// The parent takes part too, while the children run.
	if err := hammer(a, uint64(os.Getpid()), iters, 32, maxSize, rand.New(rand.NewPCG(7, 8))); err != nil {
		t.Error(err)
	}
	for _, c := range children {
		if c.wait(t) {
			t.Fatalf("child %d was killed", c.Process.Pid)
		}
	}
	if s := a.Stats(); s.InUse != 0 || s.Allocs != 0 || s.Recoveries != 0 {
		t.Errorf("after all processes freed everything: %+v", s)
	}
	mustCheck(t, a)
	if err := a.checkFreeZero(); err != nil {
		t.Error(err)
	}
	off, err := a.Alloc(a.Size())
	if err != nil {
		t.Fatalf("whole-arena allocation: %v", err)
	}
	if err := a.Free(off); err != nil {
		t.Fatal(err)
	}
}

// TestCrashAtEveryStore kills a process at each store of an allocation
// that splits a block at every order, and of the free that merges it all
// back, and checks that the next process to take the lock finds exactly
// the state before the operation (killed before the commit) or after it
// (killed after).
func TestCrashAtEveryStore(t *testing.T) {
	for _, op := range []string{"alloc", "free"} {
		t.Run(op, func(t *testing.T) {
			// Each run starts from a fresh arena in the same state, so offsets
			// and block layouts agree between runs.
			setup := func() (*Arena, Offset) {
				a, err := New(MinSize)
				if err != nil {
					t.Fatal(err)
				}
				var off Offset
				if op == "free" {
					if off, err = a.Alloc(64); err != nil {
						t.Fatal(err)
					}
				}
				return a, off
			}
			ref, off := setup()
			before, beforeN := ref.blocks()
			if err := runOp(ref, op, off); err != nil {
				t.Fatal(err)
			}
			after, afterN := ref.blocks()
			ref.Close()

			a, _ := setup()
			c := start(t, a, "step", fmt.Sprintf("%s %d %d", op, off, 0), nil, nil)
			c.wait(t)
			a.Close()
			points, err := strconv.Atoi(c.stdout.String())
			if err != nil || points < 4*(20-minOrder) { // a store or more per order split or merged
				t.Fatalf("child counted %q kill points", c.stdout.String())
			}

			for k := 1; k <= points+1; k++ {
				a, _ := setup()
				c := start(t, a, "step", fmt.Sprintf("%s %d %d", op, off, k), nil, nil)
				if killed := c.wait(t); killed != (k <= points) {
					t.Fatalf("kill point %d of %d: killed = %v", k, points, killed)
				}
				if err := a.check(); err != nil {
					t.Fatalf("killed at point %d of %d:\n%v", k, points, err)
				}
				got, gotN := a.blocks()
				// The last two points come after the commit (the clearing of
				// the journal's tag, and the hook before unlocking).
				want, wantN := before, beforeN
				if k >= points-1 {
					want, wantN = after, afterN
				}
				if !slices.Equal(got, want) || gotN != wantN {
					t.Fatalf("killed at point %d of %d: blocks %v counters %v, want %v %v", k, points, got, gotN, want, wantN)
				}
				if s := a.Stats(); s.Recoveries != btoi(k <= points) {
					t.Fatalf("killed at point %d of %d: %d recoveries", k, points, s.Recoveries)
				}
				a.Close()
			}
		})
	}
}

// TestCrashDuringRecovery kills the process that is rolling back a dead
// process's allocation at each of its stores: the next one must still get
// back to the state before the allocation.
func TestCrashDuringRecovery(t *testing.T) {
	a, err := New(MinSize)
	if err != nil {
		t.Fatal(err)
	}
	before, beforeN := a.blocks()
	c := start(t, a, "step", fmt.Sprintf("%s %d %d", "alloc", 0, 0), nil, nil)
	c.wait(t)
	a.Close()
	allocPoints, err := strconv.Atoi(c.stdout.String())
	if err != nil {
		t.Fatal(err)
	}
	// Die just before the commit, when the journal is longest (the last two
	// points follow it).
	crashed := func() *Arena {
		a, err := New(MinSize)
		if err != nil {
			t.Fatal(err)
		}
		if !start(t, a, "step", fmt.Sprintf("%s %d %d", "alloc", 0, allocPoints-2), nil, nil).wait(t) {
			t.Fatal("allocating child was not killed")
		}
		return a
	}
	a = crashed()
	c = start(t, a, "recover", "0", nil, nil)
	c.wait(t)
	a.Close()
	points, err := strconv.Atoi(c.stdout.String())
	if err != nil || points < allocPoints/4 {
		t.Fatalf("recovering child counted %q kill points", c.stdout.String())
	}
	for k := 1; k <= points; k++ {
		a := crashed()
		if !start(t, a, "recover", strconv.Itoa(k), nil, nil).wait(t) {
			t.Fatalf("recovering child survived kill point %d", k)
		}
		if err := a.check(); err != nil {
			t.Fatalf("recovery killed at point %d of %d:\n%v", k, points, err)
		}
		if got, gotN := a.blocks(); !slices.Equal(got, before) || gotN != beforeN {
			t.Fatalf("recovery killed at point %d of %d: blocks %v counters %v, want %v %v", k, points, got, gotN, before, beforeN)
		}
		if s := a.Stats(); s.Recoveries != 2 {
			t.Fatalf("recovery killed at point %d of %d: %d recoveries", k, points, s.Recoveries)
		}
		a.Close()
	}
}

// TestStealFromZombie checks that a lock held by a process that died but
// was not reaped yet is taken over: its parent may be the one waiting.
func TestStealFromZombie(t *testing.T) {
	a := newArena(t, MinSize)
	c := start(t, a, "step", fmt.Sprintf("%s %d %d", "alloc", 0, 3), nil, nil)
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, c.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if owner := uint32(a.get(hdrLock)); owner != uint32(c.Process.Pid) {
		t.Fatalf("lock held by %d, want the dead child %d", owner, c.Process.Pid)
	}
	mustCheck(t, a) // would hang if the zombie were taken for alive
	if !c.wait(t) {
		t.Fatal("child was not killed")
	}
	if s := a.Stats(); s.Recoveries != 1 || s.Allocs != 0 {
		t.Errorf("after taking over from a zombie: %+v", s)
	}
}

// TestCrashRandom SIGKILLs processes hammering the allocator at random
// moments, round after round, and checks after each round that the
// allocator is intact and usable. Blocks the dead held stay allocated.
func TestCrashRandom(t *testing.T) {
	rounds := 40
	if testing.Short() {
		rounds = 8
	}
	const procs = 3
	a := newArena(t, 16<<20)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	for round := range rounds {
		var children []*child
		for range procs {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			c := start(t, a, "hammer", fmt.Sprint(0, 1024), nil, w)
			w.Close()
			// Wait until the child is in its loop, so the kill lands there
			// and not in its start-up.
			_, err = bufio.NewReader(r).ReadByte()
			r.Close()
			if err != nil {
				c.wait(t)
				t.Fatalf("child did not start: %v\n%s", err, c.stderr.Bytes())
			}
			children = append(children, c)
		}
		for _, c := range children {
			time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
			c.Process.Kill()
		}
		for _, c := range children {
			if !c.wait(t) {
				t.Fatalf("round %d: child exited before it was killed:\n%s", round, c.stderr.Bytes())
			}
		}
		mustCheck(t, a)
		if err := hammer(a, uint64(os.Getpid()), 200, 16, 4096, rng); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	mustCheck(t, a)
	if err := a.checkFreeZero(); err != nil {
		t.Error(err)
	}
	s := a.Stats()
	t.Logf("after %d rounds: %d recoveries, %d blocks (%d bytes) leaked by killed processes", rounds, s.Recoveries, s.Allocs, s.InUse)
	// The children hold the lock a good part of the time, so some kills
	// land inside an operation (about one per round in practice): none in
	// 40 rounds means the test no longer exercises recovery.
	if s.Recoveries == 0 && !testing.Short() {
		t.Errorf("no kill in %d rounds caught a process holding the lock", rounds)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

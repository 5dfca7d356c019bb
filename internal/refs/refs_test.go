package refs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/leakcheck"
	"github.com/multiproc/mp/internal/shm"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the child processes: TestMain runs a child
// scenario instead of the tests when roleEnv is set. The arena arrives as
// fd 3.
const (
	roleEnv = "REFS_TEST_ROLE"
	argEnv  = "REFS_TEST_ARG"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(childMain(role, os.Getenv(argEnv)))
	}
	os.Exit(leakcheck.Run(m))
}

const kindA, kindB = 1, 2

// A destroy function for kindA that frees a sub-block recorded in the
// object's first word, restartably, as real kinds do.
func init() {
	SetDestroy(kindA, func(t *Table, b shm.Offset) { t.Arena().FreeFrom(b) })
	SetDestroy(kindB, func(t *Table, b shm.Offset) { t.ReleaseContained(b + 8) })
}

// childMain runs scenario role, killing itself at store killAt of it (0:
// never), and prints the number of stores it made.
func childMain(role, arg string) int {
	a, err := shm.Attach(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var killAt int
	var x ID
	fmt.Sscan(arg, &killAt, &x.Index, &x.Gen)
	t, err := Open(a)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	n := 0
	shm.SetCrashHook(func() {
		if n++; n == killAt {
			unix.Kill(os.Getpid(), unix.SIGKILL)
			for {
				time.Sleep(time.Hour)
			}
		}
	})
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "child (%s): %v\n", role, err)
		return 3
	}
	switch role {
	case "new": // make an object with a sub-block, and keep it
		id, b, err := t.New(kindA, 100)
		if err != nil {
			return fail(err)
		}
		if _, err := a.AllocTo(64, b); err != nil {
			return fail(err)
		}
		_ = id
	case "newfree": // make an object with a sub-block, then let it go
		id, b, err := t.New(kindA, 100)
		if err != nil {
			return fail(err)
		}
		if _, err := a.AllocTo(64, b); err != nil {
			return fail(err)
		}
		t.Detach(id, nil)
	case "attach": // take a reference to the parent's object and keep it
		if err := t.Attach(x, kindA, blockOf(t, x)); err != nil {
			return fail(err)
		}
	case "attachdetach":
		if err := t.Attach(x, kindA, blockOf(t, x)); err != nil {
			return fail(err)
		}
		t.Detach(x, nil)
	case "contain": // an object that holds the parent's, then let go
		id, b, err := t.New(kindB, 64)
		if err != nil {
			return fail(err)
		}
		if err := t.Contain(x, kindA, blockOf(t, x), b+8); err != nil {
			return fail(err)
		}
		t.Detach(id, nil)
	case "containkeep": // an object that holds the parent's, kept
		_, b, err := t.New(kindB, 64)
		if err != nil {
			return fail(err)
		}
		if err := t.Contain(x, kindA, blockOf(t, x), b+8); err != nil {
			return fail(err)
		}
	case "sweep": // sweep whatever dead processes left
		t.Sweep()
	default:
		return fail(fmt.Errorf("unknown role"))
	}
	shm.SetCrashHook(nil)
	fmt.Print(n)
	return 0
}

func blockOf(t *Table, id ID) shm.Offset {
	e, _ := t.entry(id.Index, false)
	return shm.Offset(t.load(e + eBlock))
}

// run runs scenario role in a child with the arena, killed at store killAt
// (0: not killed), and returns the number of stores it counted, or -1 if
// it was killed.
func run(t *testing.T, a *shm.Arena, role string, killAt int, x ID) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role, fmt.Sprintf("%s=%d %d %d", argEnv, killAt, x.Index, x.Gen))
	fd, err := unix.Dup(a.Fd())
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "arena")
	defer f.Close()
	cmd.ExtraFiles = []*os.File{f}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return -1
		}
	}
	if err != nil {
		t.Fatalf("%s child: %v: %s", role, err, errb.String())
	}
	n, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("%s child printed %q: %s", role, out.String(), errb.String())
	}
	return n
}

// audit checks the tables against the arena: every live object's count is
// the number of ledger words and containers naming it, no entry is dying,
// and the arena holds exactly the tables' blocks, the live objects' blocks
// and what they own.
func audit(t *testing.T, tb *Table) {
	t.Helper()
	counts := map[ID]int{}
	for seg := shm.Offset(tb.load(tb.root + rProcSegs)); seg != 0; seg = shm.Offset(tb.load(seg)) {
		for i := 0; i < procPerSeg; i++ {
			pe := seg + segHdr + shm.Offset(i*procEntry)
			if tb.load(pe+pOwner) == 0 {
				continue
			}
			n := int(tb.load(pe + pN))
			for j := 0; j < n; j++ {
				counts[idOf(tb.load(tb.ledgerWord(pe, j)))]++
			}
		}
	}
	next := uint32(tb.load(tb.root + rNext))
	live := 0
	for i := uint32(0); i < next; i++ {
		e, _ := tb.entry(i, false)
		meta := tb.load(e + eMeta)
		switch meta & 0xff {
		case stateDying:
			t.Errorf("entry %d still dying", i)
		case stateLive:
			live++
			if uint8(meta>>8) == kindB {
				if w := tb.load(shm.Offset(tb.load(e+eBlock)) + 8); w != 0 {
					counts[idOf(w)]++
				}
			}
		}
	}
	for i := uint32(0); i < next; i++ {
		e, _ := tb.entry(i, false)
		meta := tb.load(e + eMeta)
		id := ID{Index: i, Gen: uint32(meta >> 32)}
		if meta&0xff == stateLive {
			if got, want := int(tb.load(e+eCount)), counts[id]; got != want {
				t.Errorf("entry %d: count %d, %d references", i, got, want)
			}
		} else if counts[id] != 0 {
			t.Errorf("entry %d is free but named %d times", i, counts[id])
		}
	}
	if s := tb.Stats(); s.Live != live || s.Dying != 0 {
		t.Errorf("stats say %d live, %d dying; table has %d live", s.Live, s.Dying, live)
	}
}

func skipUnderRace(t *testing.T) {
	if raceEnabled && os.Getenv("MULTIPROC_LONG") == "" {
		t.Skip("a child per store: run without -race (as .ci/run does), or set MULTIPROC_LONG=1")
	}
}

func newTable(t *testing.T) (*shm.Arena, *Table) {
	a, err := shm.New(4 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	tb, err := Create(a)
	if err != nil {
		t.Fatal(err)
	}
	return a, tb
}

// TestKilledAtEveryStore runs each scenario in a child killed at each of
// its stores in turn (and once not killed), then sweeps from the parent,
// and checks that the counts are exact and that the arena holds exactly
// what the survivors hold: nothing leaked, nothing freed twice.
func TestKilledAtEveryStore(t *testing.T) {
	skipUnderRace(t)
	for _, role := range []string{"new", "newfree", "attach", "attachdetach", "contain", "containkeep"} {
		t.Run(role, func(t *testing.T) {
			a, tb := newTable(t)
			// The parent's object, which the child refers to; made first
			// so that the table's segments exist before the baseline.
			x, b, err := tb.New(kindA, 100)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.AllocTo(64, b); err != nil {
				t.Fatal(err)
			}
			base := a.Stats()
			stores := run(t, a, role, 0, x)
			tb.Sweep()
			audit(t, tb)
			if got := a.Stats(); got.Allocs != base.Allocs || got.InUse != base.InUse {
				t.Fatalf("after an uninterrupted %s and a sweep: %d blocks (%d bytes), want %d (%d)",
					role, got.Allocs, got.InUse, base.Allocs, base.InUse)
			}
			if stores == 0 {
				t.Fatal("the scenario made no store")
			}
			for k := 1; k <= stores; k++ {
				if n := run(t, a, role, k, x); n != -1 {
					t.Fatalf("killed at store %d of %d: child was not killed (%d stores)", k, stores, n)
				}
				tb.Sweep()
				audit(t, tb)
				if t.Failed() {
					t.Fatalf("killed at store %d of %d", k, stores)
				}
				if got := a.Stats(); got.Allocs != base.Allocs || got.InUse != base.InUse {
					t.Fatalf("killed at store %d of %d and swept: %d blocks (%d bytes), want %d (%d)",
						k, stores, got.Allocs, got.InUse, base.Allocs, base.InUse)
				}
			}
			// The parent's object is intact and still held once.
			tb.Detach(x, nil)
			audit(t, tb)
			if s := tb.Stats(); s.Live != 0 {
				t.Fatalf("%d objects live after the last Detach", s.Live)
			}
		})
	}
}

// TestSweepKilledAtEveryStore kills the sweeper itself at each of its
// stores: a second sweep finishes its work exactly.
func TestSweepKilledAtEveryStore(t *testing.T) {
	skipUnderRace(t)
	a, tb := newTable(t)
	x, b, err := tb.New(kindA, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AllocTo(64, b); err != nil {
		t.Fatal(err)
	}
	base := a.Stats()
	// Count the sweep's stores once: a dead holder of x and of an object
	// holding x, which the sweep frees.
	setup := func() {
		if n := run(t, a, "attach", 0, x); n < 0 {
			t.Fatal("attach child killed")
		}
		if n := run(t, a, "containkeep", 0, x); n < 0 {
			t.Fatal("containkeep child killed")
		}
	}
	setup()
	stores := run(t, a, "sweep", 0, x)
	audit(t, tb)
	if got := a.Stats(); got.Allocs != base.Allocs {
		t.Fatalf("after a sweep: %d blocks, want %d", got.Allocs, base.Allocs)
	}
	for k := 1; k <= stores; k++ {
		setup()
		if n := run(t, a, "sweep", k, x); n != -1 {
			t.Fatalf("sweep killed at store %d of %d: not killed", k, stores)
		}
		tb.Sweep()
		audit(t, tb)
		if got := a.Stats(); got.Allocs != base.Allocs || got.InUse != base.InUse {
			t.Fatalf("sweep killed at store %d of %d, swept again: %d blocks, want %d", k, stores, got.Allocs, base.Allocs)
		}
	}
}

// TestGenerations: a freed object's handle is refused, also once its entry
// holds a new object.
func TestGenerations(t *testing.T) {
	_, tb := newTable(t)
	x, b, err := tb.New(kindB, 64)
	if err != nil {
		t.Fatal(err)
	}
	tb.Detach(x, nil)
	if err := tb.Attach(x, kindB, b); err != ErrGone {
		t.Fatalf("Attach of a freed object: %v, want ErrGone", err)
	}
	y, b2, err := tb.New(kindB, 64)
	if err != nil {
		t.Fatal(err)
	}
	if y.Index != x.Index || y.Gen == x.Gen {
		t.Fatalf("entry not reused with a new generation: %v then %v", x, y)
	}
	if err := tb.Attach(x, kindB, b2); err != ErrGone {
		t.Fatalf("Attach of the old generation: %v, want ErrGone", err)
	}
	if err := tb.Attach(y, kindA, b2); err == nil {
		t.Fatal("Attach with the wrong kind succeeded")
	}
	if err := tb.Attach(ID{Index: 1 << 30}, kindB, b2); err == nil {
		t.Fatal("Attach of an entry beyond the table succeeded")
	}
}

// TestManyObjectsAndProcesses grows every table past its first segment.
func TestManyObjectsAndProcesses(t *testing.T) {
	a, err := shm.New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tb, err := Create(a)
	if err != nil {
		t.Fatal(err)
	}
	base := a.Stats()
	var ids []ID
	for i := 0; i < 3*objPerSeg; i++ {
		id, _, err := tb.New(kindB, 64)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Holders that are not this process: entries made for children that
	// never ran (pid 1 with a start time that cannot match is dead).
	for p := 0; p < 2*procPerSeg; p++ {
		owner := uint64(1) | uint64(0xf0000000+uint32(p))<<32
		if err := tb.AttachFor(owner, ids[p], kindB, blockOf(tb, ids[p])); err != nil {
			t.Fatal(err)
		}
	}
	audit(t, tb)
	for _, id := range ids {
		tb.Detach(id, nil)
	}
	tb.Sweep()
	audit(t, tb)
	if s := tb.Stats(); s.Live != 0 {
		t.Fatalf("%d live after every Detach and a sweep", s.Live)
	}
	// Only the table segments made on the way remain.
	if got := a.Stats(); got.InUse-base.InUse > 4*objSegSize+4*procSegSize {
		t.Fatalf("%d bytes more in use than before, beyond the table segments", got.InUse-base.InUse)
	}
}

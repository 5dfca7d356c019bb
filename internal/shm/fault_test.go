package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"
)

// hangLimit is how long an operation may take before a test calls it a
// hang: far beyond anything these operations need, so it only catches
// waits that would never end.
const hangLimit = 30 * time.Second

// within runs f and fails the test if it has not returned within
// hangLimit, or if it panicked.
func within(t testing.TB, what string, f func()) {
	t.Helper()
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		f()
	}()
	select {
	case r := <-done:
		if r != nil {
			t.Fatalf("%s panicked: %v", what, r)
		}
	case <-time.After(hangLimit):
		t.Fatalf("%s hung", what)
	}
}

// TestForeignLockOwner writes lock words naming owners that cannot be a
// process of the tree inside the allocator, as a child scribbling over the
// header could: each must be taken over, and the allocator still work.
func TestForeignLockOwner(t *testing.T) {
	sleeper := exec.Command("sleep", "60") // alive, but does not map the arena
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	for _, owner := range []struct {
		name string
		pid  uint32
	}{
		{"init", 1},
		{"an unrelated live process", uint32(sleeper.Process.Pid)},
		{"a pid above pid_max", 1<<22 + 1},
		{"a negative pid", 1<<32 - 1},
		{"this process, which does not hold it", uint32(os.Getpid())},
	} {
		t.Run(owner.name, func(t *testing.T) {
			a := newArena(t, MinSize)
			*a.word(hdrLock) = 7<<32 | uint64(owner.pid)
			within(t, "Alloc", func() {
				if _, err := a.Alloc(100); err != nil {
					t.Error(err)
				}
			})
			if s := a.Stats(); s.Recoveries != 1 || s.Allocs != 1 {
				t.Errorf("after the takeover: %+v", s)
			}
			mustCheck(t, a)
		})
	}
}

// TestTreeOwnerWaits: a live process that maps the arena and holds the
// lock is waited for; a caller with a context gives up when it ends, and
// so does one queued behind another goroutine of this process.
func TestTreeOwnerWaits(t *testing.T) {
	a := newArena(t, MinSize)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := start(t, a, "hold", "", nil, w)
	w.Close()
	if _, err := r.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if !a.MappedBy(c.Process.Pid) {
		t.Fatal("the holding child does not map the arena, says MappedBy")
	}
	// One goroutine waits without a context (holding the process's local
	// mutex meanwhile); the others give up when their contexts end.
	blocked := make(chan error, 1)
	go func() {
		_, err := a.Alloc(64)
		blocked <- err
	}()
	for _, what := range []string{"AllocContext", "FreeFromContext"} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		within(t, what, func() {
			var err error
			if what == "AllocContext" {
				_, err = a.AllocContext(ctx, 64)
			} else {
				err = a.FreeFromContext(ctx, Offset(a.heapOff))
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s with the lock held by a live child: %v", what, err)
			}
		})
		cancel()
	}
	select {
	case err := <-blocked:
		t.Fatalf("Alloc returned (%v) while a live process of the tree held the lock", err)
	default:
	}
	c.Process.Kill()
	c.wait(t)
	within(t, "Alloc after the holder died", func() {
		if err := <-blocked; err != nil {
			t.Error(err)
		}
	})
	mustCheck(t, a)
}

// TestCorruptJournal: a journal length scribbled over, with no operation
// in progress, is discarded; one naming words no operation writes gives
// ErrCorrupt, not a panic.
func TestCorruptJournal(t *testing.T) {
	prep := func(t *testing.T) (*Arena, []blockInfo) {
		a := newArena(t, MinSize)
		for range 5 {
			off, err := a.Alloc(64)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Free(off); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := a.Alloc(1000); err != nil {
			t.Fatal(err)
		}
		b, _ := a.blocks()
		return a, b
	}
	for _, n := range []uint64{1, 5, journalCap, journalCap + 1, 7526676531636233760} {
		t.Run(fmt.Sprint("length ", n), func(t *testing.T) {
			a, before := prep(t)
			*a.word(hdrJournalLen) = n
			within(t, "Stats", func() { a.Stats() })
			if after, _ := a.blocks(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("stale journal entries were replayed:\n%v\nwant\n%v", after, before)
			}
			mustCheck(t, a)
		})
	}
	t.Run("bad entry", func(t *testing.T) {
		a, _ := prep(t)
		// An operation in progress whose entry names the lock word.
		tag := uint64(1<<15 | 3)
		*a.word(hdrJournalTag) = tag
		*a.word(hdrJournal) = hdrLock | tag<<entryTagShift
		*a.word(hdrJournalLen) = 1
		within(t, "Alloc", func() {
			if _, err := a.Alloc(64); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Alloc with a corrupt journal: %v", err)
			}
		})
		within(t, "Free", func() {
			if err := a.Free(Offset(a.heapOff)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Free with a corrupt journal: %v", err)
			}
		})
		within(t, "Stats", func() { a.Stats() })
	})
}

// Scribble writes n random bytes at file offset off of the arena's
// mapping, as a faulty child process could. It is for fault-injection
// tests of the packages built on the arena.
func Scribble(a *Arena, rng *rand.Rand, off uint64, n int) {
	for i := range n {
		a.mem[off+uint64(i)] = byte(rng.Uint32())
	}
}

// TestScribbleAllocator has a child process write random bytes over the
// allocator's metadata
// (header, free-list heads, journal, tags, free-list links), and checks that
// what follows never panics or hangs, fails only with ErrCorrupt,
// ErrNoSpace or ErrBadOffset, and never hands out memory that overlaps a
// live block.
func TestScribbleAllocator(t *testing.T) {
	trials := 300
	if os.Getenv("MULTIPROC_LONG") != "" {
		trials = 5000
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	seed := rng.Uint64()
	t.Logf("seed %d", seed)
	rng = rand.New(rand.NewPCG(seed, 2))
	a := newArena(t, MinSize)
	corrupt := 0
	for trial := range trials {
		a.Close()
		var err error
		if a, err = New(MinSize); err != nil {
			t.Fatal(err)
		}
		live := map[Offset]int{}
		alloc := func() error {
			n := 1 + rng.IntN(4096)
			off, err := a.Alloc(n)
			if err != nil {
				return err
			}
			size := blockSize(n)
			for o, s := range live {
				if off < o+Offset(s) && o < off+Offset(size) {
					return fmt.Errorf("block %#x of %d bytes overlaps live block %#x of %d bytes", off, size, o, s)
				}
			}
			live[off] = size
			binary.NativeEndian.PutUint64(a.Bytes(off, 8), uint64(off)) // owners write their blocks
			return nil
		}
		free := func() error {
			offs := make([]Offset, 0, len(live))
			for o := range live {
				offs = append(offs, o)
			}
			if len(offs) == 0 {
				return nil
			}
			sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
			off := offs[rng.IntN(len(offs))]
			delete(live, off) // a failed Free leaves it allocated (leaked), never reused
			return a.Free(off)
		}
		for range 40 {
			if err := alloc(); err != nil {
				t.Fatal(err)
			}
		}
		for range 20 {
			if err := free(); err != nil {
				t.Fatal(err)
			}
		}
		// Where to scribble: one of the metadata regions.
		var off uint64
		n := 1 + rng.IntN(8)
		switch rng.IntN(5) {
		case 0: // header words from the lock on
			off = hdrLock + uint64(rng.IntN(hdrJournal-hdrLock-n))
		case 1: // free-list heads
			off = hdrHeads + 8*uint64(minOrder) + uint64(rng.IntN(8*int(a.maxOrder-minOrder+1)-n))
		case 2: // the journal
			off = hdrJournal + uint64(rng.IntN(64*16))
		case 3: // tags of the blocks in use
			off = hdrTags + uint64(rng.IntN(int(a.tagIndex(a.heapOff+1<<20)-hdrTags)))
		case 4: // links of a free block (the first 16 bytes of a block not in use)
			for o := a.heapOff; ; o += minBlock {
				if a.tag(o)&tagState == tagFree {
					off = o + uint64(rng.IntN(16-n+1))
					break
				}
			}
		}
		// A child process does the damage, as a faulty process of the tree
		// would.
		start(t, a, "scribble", fmt.Sprint(off, " ", n, " ", rng.Uint64()), nil, nil).wait(t)
		what := fmt.Sprintf("trial %d: %d bytes at %#x", trial, n, off)
		within(t, what, func() {
			for i := range 60 {
				var err error
				if i%3 == 2 {
					err = free()
				} else {
					err = alloc()
				}
				if errors.Is(err, ErrCorrupt) {
					corrupt++
				}
				if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNoSpace) && !errors.Is(err, ErrBadOffset) {
					t.Errorf("%s: op %d: %v", what, i, err)
					return
				}
			}
			a.Stats()
		})
		if t.Failed() {
			return
		}
	}
	a.Close()
	t.Logf("%d trials, %d operations found the metadata corrupt", trials, corrupt)
}

package ring

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/shm"
)

// killAtDestroy makes the hook SIGKILL this process at the nth Destroy
// hook, counting both kinds.
func killAtDestroy(nth int) {
	count := 0
	testHook = func(q hookPoint) {
		if q != hookDestroy && q != hookDestroyed {
			return
		}
		if count++; count == nth {
			unix.Kill(os.Getpid(), unix.SIGKILL)
			for {
				time.Sleep(time.Hour)
			}
		}
	}
}

// fillForDestroy makes a ring that owns blocks of every kind: out-of-line
// messages still queued, spares kept in cells, and an inline message; with
// grown, a growing ring of three segments.
func fillForDestroy(t *testing.T, a *shm.Arena, grown bool) *Ring {
	t.Helper()
	ctx := timeout(t)
	big := make([]byte, 200)
	if grown {
		off, err := NewGrowing(a, 0, 32)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(a, off)
		if err != nil {
			t.Fatal(err)
		}
		for range 50 { // 16 in the first segment, 32 in the second, 2 in the third
			if err := r.Put(ctx, big); err != nil {
				t.Fatal(err)
			}
		}
		for range 20 {
			if _, err := r.Get(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Put(ctx, []byte("inline")); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newRing(t, a, 8, 32)
	for range 6 {
		if err := r.Put(ctx, big); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		if _, err := r.Get(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Put(ctx, []byte("inline")); err != nil {
		t.Fatal(err)
	}
	// The ring block, 2 messages' blocks and 4 spares.
	return r
}

type arenaUse struct{ inUse, allocs int }

func use(a *shm.Arena) arenaUse { s := a.Stats(); return arenaUse{s.InUse, s.Allocs} }

// TestDestroyKilled kills a process at each step of Destroy (and
// DestroyFrom), finishes with a second call, and checks that the arena
// holds exactly what it held before the ring was made. Each step frees
// one block in one journaled allocator step, so these are all the states
// a killed Destroy can leave, bar one: killed while the allocator clears
// the ring's block before freeing it, which the "scrubbed" variant stands
// for by zeroing the ring's header.
func TestDestroyKilled(t *testing.T) {
	for _, shape := range []string{"one", "grown"} {
		for _, kind := range []string{"Destroy", "DestroyFrom", "scrubbed"} {
			t.Run(shape+"/"+kind, func(t *testing.T) { testDestroyKilled(t, kind, shape == "grown") })
		}
	}
}

func testDestroyKilled(t *testing.T, kind string, grown bool) {
	a := newArena(t, 16<<20)
	// The word DestroyFrom reads, allocated before the baseline.
	srcOff, err := a.Alloc(8)
	if err != nil {
		t.Fatal(err)
	}
	before := use(a)
	steps, owned := 0, 0
	for nth := 1; ; nth++ {
		r := fillForDestroy(t, a, grown)
		src := 0
		if kind != "Destroy" {
			src = int(srcOff)
			*a.Uint64(srcOff) = uint64(r.Offset())
		}
		if o := use(a).allocs - before.allocs; owned == 0 {
			owned = o
		} else if o != owned {
			t.Fatalf("ring holds %d blocks, held %d before", o, owned)
		}
		c := start(t, a, "destroy", fmt.Sprint(r.Offset(), 0, src, 0, 0, nth), false)
		if !c.wait(t) {
			if nth != owned+2 { // a step per block, and after the last
				t.Fatalf("Destroy finished after %d steps, want %d", nth-1, owned+1)
			}
			if got := use(a); got != before {
				t.Fatalf("after Destroy: %+v, want %+v", got, before)
			}
			break
		}
		steps++
		ringFreed := use(a).allocs == before.allocs
		if kind == "scrubbed" && use(a).allocs == before.allocs+1 {
			// Only the ring's block is left: the allocator may
			// have begun clearing it.
			clear(a.Bytes(r.Offset(), 256))
		}
		switch err := retryDestroy(a, r.Offset(), srcOff, kind); {
		case kind == "Destroy" && ringFreed:
			if !errors.Is(err, ErrBadRing) || !errors.Is(err, shm.ErrBadOffset) {
				t.Fatalf("killed at step %d after freeing the ring: second Destroy returned %v", nth, err)
			}
		case err != nil:
			t.Fatalf("killed at step %d: second %s: %v", nth, kind, err)
		}
		if got := use(a); got != before {
			t.Fatalf("killed at step %d, then %s again: %+v, want %+v", nth, kind, got, before)
		}
		if kind != "Destroy" && *a.Uint64(srcOff) != 0 {
			t.Fatalf("killed at step %d: DestroyFrom left its source word set", nth)
		}
	}
	if want := owned + 1; steps != want {
		t.Fatalf("killed at %d steps, want %d", steps, want)
	}
	if grown && owned < 20 {
		t.Fatalf("the grown ring owned only %d blocks", owned)
	}
}

func retryDestroy(a *shm.Arena, off, src shm.Offset, kind string) error {
	if kind == "Destroy" {
		return Destroy(a, off)
	}
	return DestroyFrom(a, src)
}

// TestDestroyBad: Destroy refuses what is not a ring and frees nothing;
// a ring recording a garbage block is destroyed with ErrCorrupt.
func TestDestroyBad(t *testing.T) {
	a := newArena(t, 16<<20)
	before := use(a)
	blk, err := a.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	a.Bytes(blk, 8)[0] = 1
	if err := Destroy(a, blk); !errors.Is(err, ErrBadRing) {
		t.Fatalf("Destroy of a non-ring: %v", err)
	}
	if err := Destroy(a, blk+64); !errors.Is(err, ErrBadRing) {
		t.Fatalf("Destroy inside a block: %v", err)
	}
	a.Free(blk)
	r := fillForDestroy(t, a, false)
	*(*uint64)(cellWord(r, 5, 16)) = uint64(blk + 64) // ool of a queued message
	if err := Destroy(a, r.Offset()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Destroy of a corrupt ring: %v", err)
	}
	// The garbage offset was forgotten, everything else freed, except the
	// block that was recorded in cell 5: it leaks.
	if got := use(a); got.allocs != before.allocs+1 {
		t.Fatalf("after Destroy: %+v, want %d allocations", got, before.allocs+1)
	}
}

// TestDrain: Drain shows every queued message once, then Destroy frees all.
func TestDrain(t *testing.T) {
	a := newArena(t, 16<<20)
	before := use(a)
	r := fillForDestroy(t, a, false)
	var got []int
	n, err := r.Drain(func(msg []byte) { got = append(got, len(msg)) })
	if err != nil || n != 3 || fmt.Sprint(got) != "[200 200 6]" {
		t.Fatalf("Drain: %d, %v, %v", n, err, got)
	}
	if err := Destroy(a, r.Offset()); err != nil {
		t.Fatal(err)
	}
	if got := use(a); got != before {
		t.Fatalf("after Drain and Destroy: %+v, want %+v", got, before)
	}
}

// cellWord returns a pointer to the word at offset o of cell i.
func cellWord(r *Ring, i, o int) unsafe.Pointer {
	return unsafe.Add(r.root.cells, uintptr(i)*r.root.cellSize+uintptr(o))
}

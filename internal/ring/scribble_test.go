package ring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/shm"
)

// Scribble trials: a child process writes 32 random bytes over a ring's
// header, its indices, its cells or anywhere in its block, as a buggy
// process of the tree could; the parent then uses the ring and checks that
// it gets no panic, no unbounded loop, no wait past its context, no error
// on another ring, and no silent loss: every message put before is
// delivered intact, or the ring said ErrCorrupt, or accounted for it as
// lost or skipped once Reclaim ran (a scribbled owner tag looks like a
// dead process's claim), or a message came out damaged (the kind of damage only a
// consumer's own decoding can see: a ring does not checksum payloads).

var scribbleKinds = []string{"header", "indices", "cells", "any"}

// scribbleMain is the child's part: arg is "kind seed block..."; each block
// is a segment's block, scribbled once.
func scribbleMain(a *shm.Arena, arg string) error {
	f := strings.Fields(arg)
	var seed uint64
	fmt.Sscan(f[1], &seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for _, o := range f[2:] {
		var off shm.Offset
		fmt.Sscan(o, &off)
		size, err := a.BlockSize(off)
		if err != nil {
			return err
		}
		mem := a.Bytes(off, size)
		c := int(atomic.LoadUint32(u32At(mem, hdrCap)))
		cellSize := int(atomic.LoadUint32(u32At(mem, hdrCellSize)))
		var at int
		switch f[0] {
		case "header":
			at = rng.IntN(hdrSize - 32)
		case "indices":
			at = []int{hdrTail, hdrHead}[rng.IntN(2)] - 24 + rng.IntN(32)
		case "cells":
			at = hdrSize + rng.IntN(c*cellSize-32)
		default:
			at = rng.IntN(min(size, hdrSize+c*cellSize) - 32)
		}
		for i := range 32 {
			mem[at+i] = byte(rng.Uint32())
		}
	}
	return nil
}

type scribbleOutcome struct {
	corrupt, damaged, accounted, stuck, intact, silent int
}

func TestScribbleRing(t *testing.T) {
	trials := 500
	if os.Getenv("MULTIPROC_LONG") == "1" {
		trials = 2000
	} else if testing.Short() || raceEnabled {
		trials = 100 // the race detector makes each trial some 30 times slower
	}
	const batch = 50
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for _, kind := range scribbleKinds {
		t.Run(kind, func(t *testing.T) {
			var total scribbleOutcome
			for b := 0; b < trials; b += batch {
				o := scribbleBatch(t, kind, seed+uint64(b), min(batch, trials-b))
				total.corrupt += o.corrupt
				total.damaged += o.damaged
				total.accounted += o.accounted
				total.stuck += o.stuck
				total.intact += o.intact
				total.silent += o.silent
			}
			t.Logf("%d trials: %d ErrCorrupt, %d damaged message, %d counted lost or skipped, %d waited out their context, %d all intact, %d silent losses",
				trials, total.corrupt, total.damaged, total.accounted, total.stuck, total.intact, total.silent)
			if total.silent > 0 {
				t.Errorf("%d trials lost messages without a sign", total.silent)
			}
		})
	}
}

const scribbleMsgs = 40

// scribbleBatch makes n victim rings (fixed, or grown to two segments) and
// a bystander in one arena, has a child scribble over one segment of each
// victim, and checks each.
func scribbleBatch(t *testing.T, kind string, seed uint64, n int) scribbleOutcome {
	a := newArena(t, 32<<20)
	rng := rand.New(rand.NewPCG(seed, 2))
	ctx := timeout(t)
	fill := func(r *Ring, id uint32) {
		var buf []byte
		for seq := range uint64(scribbleMsgs) {
			buf = makeMsg(buf, id, seq, msgSize(1, seq))
			if err := r.Put(ctx, buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	bystander := newGrowing(t, a, 0, DefaultInline)
	fill(bystander, 9)
	victims := make([]*Ring, n)
	blocks := []string{kind, fmt.Sprint(seed)}
	for i := range victims {
		if i%2 == 0 {
			victims[i] = newRing(t, a, 64, DefaultInline)
		} else {
			victims[i] = newGrowing(t, a, 0, DefaultInline)
		}
		fill(victims[i], 0)
		// Take a few, so that cells hold spares and the head is not 0.
		for range 3 {
			if _, err := victims[i].Get(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		var segs []*seg
		victims[i].segments(func(s *seg) { segs = append(segs, s) })
		blocks = append(blocks, fmt.Sprint(uint64(segs[rng.IntN(len(segs))].off)))
	}
	c := start(t, a, "scribble", strings.Join(blocks, " "), false)
	if c.wait(t) {
		t.Fatal("scribbler killed")
	}
	outcomes := make([]string, n)
	var wg sync.WaitGroup
	for i, r := range victims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes[i] = useScribbled(r)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("a scribbled ring hangs its caller past its context")
	}
	// The bystander is untouched.
	for seq := range uint64(scribbleMsgs) {
		m, err := bystander.TryGet(nil)
		if err != nil {
			t.Fatalf("bystander: %v", err)
		}
		if id, s, err := checkMsg(m); err != nil || id != 9 || s != seq {
			t.Fatalf("bystander: message %d/%d (%v), want %d", id, s, err, seq)
		}
	}
	fill(bystander, 9)
	var o scribbleOutcome
	for i, out := range outcomes {
		switch out {
		case "corrupt":
			o.corrupt++
		case "damaged":
			o.damaged++
		case "accounted":
			o.accounted++
		case "stuck":
			o.stuck++
		case "intact":
			o.intact++
		default:
			o.silent++
			t.Errorf("victim %d (%s at %s): %s", i, kind, blocks[2+i], out)
		}
		// Destroying a scribbled ring must not panic; it may refuse.
		Destroy(a, victims[i].Offset())
	}
	return o
}

// useScribbled puts to and drains a scribbled ring and says what it saw:
// "corrupt", "damaged", "accounted", "stuck", "intact", or a description
// of a silent loss.
func useScribbled(r *Ring) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	corrupt, damaged, stuck := false, false, false
	var buf []byte
	for seq := range uint64(5) {
		buf = makeMsg(buf, 1, seq, 50)
		switch err := r.TryPut(buf); {
		case err == nil, errors.Is(err, ErrFull), errors.Is(err, shm.ErrNoSpace), errors.Is(err, ErrClosed):
		case errors.Is(err, ErrCorrupt):
			corrupt = true
		default:
			return fmt.Sprintf("TryPut: unexpected error %v", err)
		}
	}
	r.Close()
	got := map[uint64]bool{}
	for range 1000 {
		m, err := r.Get(ctx, nil)
		if errors.Is(err, ErrClosed) {
			break
		}
		if errors.Is(err, ErrCorrupt) {
			corrupt = true
			continue
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			stuck = true
			break
		}
		if err != nil {
			return fmt.Sprintf("Get: unexpected error %v", err)
		}
		id, seq, cerr := checkMsg(m)
		if cerr != nil {
			damaged = true
			continue
		}
		if id == 0 {
			if got[seq] {
				damaged = true // delivered twice: a scribbled state made it ready again
			}
			got[seq] = true
		}
	}
	// A scribbled owner tag makes a message look taken by a process
	// that died: consumers pass over it, and whoever reclaims dead
	// processes' cells counts it lost.
	r.Reclaim()
	missing := 0
	for seq := uint64(3); seq < scribbleMsgs; seq++ {
		if !got[seq] {
			missing++
		}
	}
	switch {
	case corrupt:
		return "corrupt"
	case damaged:
		return "damaged"
	case missing > 0 && r.Lost()+r.Skipped() > 0:
		return "accounted"
	case stuck:
		return "stuck"
	case missing == 0:
		return "intact"
	}
	return fmt.Sprintf("%d of %d messages missing, no error (Lost %d, Skipped %d)", missing, scribbleMsgs-3, r.Lost(), r.Skipped())
}

// TestHeadMovedForward: a head moved forward over messages (the one
// corruption the cells at head and tail cannot show) is found by a Get
// that blocks, within a poll interval, and by one that finds the ring
// closed and drained: ErrCorrupt, not a wait for the context or a quiet
// ErrClosed.
func TestHeadMovedForward(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		a := newArena(t, 4<<20)
		r := newRing(t, a, 64, DefaultInline)
		ctx := timeout(t)
		for seq := range uint64(10) {
			if err := r.Put(ctx, makeMsg(nil, 0, seq, 30)); err != nil {
				t.Fatal(err)
			}
		}
		atomic.AddUint64(r.root.head, 5)
		if closeFirst {
			r.Close()
		}
		for seq := uint64(5); seq < 10; seq++ {
			m, err := r.Get(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, s, _ := checkMsg(m); s != seq {
				t.Fatalf("got %d, want %d", s, seq)
			}
		}
		if _, err := r.Get(ctx, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("closed %v: Get after the messages past head = %v, want ErrCorrupt", closeFirst, err)
		}
	}
}

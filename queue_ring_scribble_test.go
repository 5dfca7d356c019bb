package mp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// Queue scribble trials: a child process writes 32 random bytes over the
// ring of each of a batch of queues (its header and indices, its cells, or
// anywhere in it); the parent then uses each queue and checks: no panic,
// no wait past its context, every error ErrCorrupt (or the ErrClosed that
// ends a drain), another queue unharmed, and no silent loss: every item put
// before comes out, or Get said ErrCorrupt, or the ring counted the item
// lost once reclaimed (a scribbled owner tag looks like a dead consumer's
// claim), or an item came out changed (a scribbled payload that still
// decodes: a queue does not checksum its items, so only the consumer can
// tell).

func init() { Register(scribbleQueueRings) }

// scribbleQueueRings is the child: it scribbles once over the first
// segment of each queue's ring, where kind says.
func scribbleQueueRings(qs []*Queue[int], kind string, seed uint64) error {
	a, err := treeArena()
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	for _, q := range qs {
		off := q.r.Offset()
		size, err := a.BlockSize(off)
		if err != nil {
			return err
		}
		mem := a.Bytes(off, size)
		// The layout of internal/ring: a 512-byte header (tail at 64,
		// head at 128, capacity u32 at 8, cell size u32 at 12), cells.
		c := int(atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[8]))))
		cellSize := int(atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[12]))))
		var at int
		switch kind {
		case "header":
			at = rng.IntN(512 - 32)
		case "indices":
			at = []int{64, 128}[rng.IntN(2)] - 24 + rng.IntN(32)
		case "cells":
			at = 512 + rng.IntN(c*cellSize-32)
		default:
			at = rng.IntN(512 + c*cellSize - 32)
		}
		for i := range 32 {
			mem[at+i] = byte(rng.Uint32())
		}
	}
	return nil
}

func TestQueueRingScribble(t *testing.T) {
	trials := 100
	if os.Getenv("MULTIPROC_LONG") == "1" {
		trials = 1000
	}
	const batch = 50
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("MULTIPROC_SEED"), 10, 64); err == nil {
		seed = s // to replay a failure
	}
	t.Logf("seed %d (MULTIPROC_SEED=%[1]d replays it)", seed)
	for _, kind := range []string{"header", "indices", "cells", "any"} {
		t.Run(kind, func(t *testing.T) {
			counts := map[string]int{}
			for b := 0; b < trials; b += batch {
				scribbleQueueBatch(t, kind, seed+uint64(b), min(batch, trials-b), counts)
			}
			t.Logf("%d trials: %v", trials, counts)
		})
	}
}

func scribbleQueueBatch(t *testing.T, kind string, seed uint64, n int, counts map[string]int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const items = 40
	fill := func(q *Queue[int]) {
		for i := range items {
			if err := q.Put(ctx, i); err != nil {
				t.Fatal(err)
			}
		}
	}
	bystander, err := NewQueue[int](0)
	if err != nil {
		t.Fatal(err)
	}
	defer bystander.Close()
	fill(bystander)
	victims := make([]*Queue[int], n)
	for i := range victims {
		maxsize := 0
		if i%2 == 1 {
			maxsize = 64
		}
		if victims[i], err = NewQueue[int](maxsize); err != nil {
			t.Fatal(err)
		}
		fill(victims[i])
		for range 3 {
			if _, err := victims[i].Get(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := NewProcess(scribbleQueueRings, victims, kind, seed)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}
	outcomes := make([]string, n)
	var wg sync.WaitGroup
	for i, q := range victims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes[i] = useScribbledQueue(q, items)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("a scribbled queue hangs its caller past its context")
	}
	for i := range items {
		if v, err := bystander.TryGet(); err != nil || v != i {
			t.Fatalf("bystander: %d, %v, want %d", v, err, i)
		}
	}
	fill(bystander)
	for i, out := range outcomes {
		switch out {
		case "corrupt", "damaged", "accounted", "stuck", "intact":
			counts[out]++
		default:
			counts["silent"]++
			t.Errorf("queue %d (%s): %s", i, kind, out)
		}
	}
}

// useScribbledQueue puts to and drains a scribbled queue and says what it
// saw: "corrupt", "damaged", "accounted", "stuck", "intact", or a description of
// what went wrong.
func useScribbledQueue(q *Queue[int], items int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	corrupt, stuck, damaged := false, false, false
	for i := range 5 {
		switch err := q.TryPut(1000 + i); {
		case err == nil, errors.Is(err, ErrFull), errors.Is(err, ErrNoSpace), errors.Is(err, ErrClosed):
		case errors.Is(err, ErrCorrupt):
			corrupt = true
		default:
			return fmt.Sprintf("TryPut: unexpected error %v", err)
		}
	}
	q.Close()
	got := map[int]bool{}
	for range 1000 {
		v, err := q.Get(ctx)
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
		if got[v] || v < 3 || (v >= items && v < 1000) || v >= 1005 { // 0 to 2 were taken before
			damaged = true
		}
		got[v] = true
	}
	q.r.Reclaim()
	missing := 0
	for i := 3; i < items; i++ {
		if !got[i] {
			missing++
		}
	}
	switch {
	case corrupt:
		return "corrupt"
	case damaged:
		return "damaged"
	case missing > 0 && q.r.Lost()+q.r.Skipped() > 0:
		return "accounted"
	case stuck:
		return "stuck"
	case missing == 0:
		return "intact"
	}
	return fmt.Sprintf("%d of %d items missing, no error", missing, items-3)
}

package ring

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/multiproc/mp/internal/shm"
)

func newGrowing(t testing.TB, a *shm.Arena, limit, inline int) *Ring {
	t.Helper()
	off, err := NewGrowing(a, limit, inline)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(a, off)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func segCount(r *Ring) int {
	n := 0
	r.segments(func(*seg) { n++ })
	return n
}

// TestGrowBounded: a growing ring with a limit takes exactly limit
// messages with nobody taking any, delivers them in order, and takes
// limit again once drained; its first segment is small.
func TestGrowBounded(t *testing.T) {
	a := newArena(t, 16<<20)
	before := use(a)
	r := newGrowing(t, a, 1024, DefaultInline)
	if got := use(a).inUse - before.inUse; got > 4096 {
		t.Fatalf("an empty growing ring takes %d bytes", got)
	}
	if r.Cap() != 1024 {
		t.Fatalf("Cap %d", r.Cap())
	}
	var buf []byte
	for round := range 3 {
		n := 0
		for ; ; n++ {
			buf = makeMsg(buf, 0, uint64(n), msgSize(1, uint64(n)))
			if err := r.TryPut(buf); errors.Is(err, ErrFull) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if n != 1024 || r.Len() != 1024 {
			t.Fatalf("round %d: took %d messages (Len %d), want 1024", round, n, r.Len())
		}
		for i := range n {
			m, err := r.TryGet(nil)
			if err != nil {
				t.Fatalf("round %d, message %d: %v", round, i, err)
			}
			if _, seq, err := checkMsg(m); err != nil || seq != uint64(i) {
				t.Fatalf("round %d: got message %d (%v), want %d", round, seq, err, i)
			}
		}
		if _, err := r.TryGet(nil); !errors.Is(err, ErrEmpty) {
			t.Fatalf("drained ring: %v", err)
		}
	}
	if n := segCount(r); n != 7 { // 16, 32, ..., 1024
		t.Fatalf("%d segments, want 7", n)
	}
	r.Close()
	if err := Destroy(a, r.Offset()); err != nil {
		t.Fatal(err)
	}
	if got := use(a); got != before {
		t.Fatalf("after Destroy: %+v, want %+v", got, before)
	}
}

// TestGrowUnbounded: a ring without limit takes 100,000 messages with
// nobody taking them, as far as the arena allows, and fails with
// ErrNoSpace, not a hang, when the arena is full.
func TestGrowUnbounded(t *testing.T) {
	a := newArena(t, 128<<20)
	before := use(a)
	r := newGrowing(t, a, 0, DefaultInline)
	if r.Cap() != 0 {
		t.Fatalf("Cap %d", r.Cap())
	}
	ctx := timeout(t)
	const n = 100000
	var buf []byte
	for i := range n {
		buf = makeMsg(buf, 1, uint64(i), msgSize(0, uint64(i)))
		if err := r.Put(ctx, buf); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if r.Len() != n {
		t.Fatalf("Len %d, want %d", r.Len(), n)
	}
	// Fill the arena: the ring cannot grow without end.
	var err error
	for i := n; err == nil; i++ {
		err = r.TryPut(makeMsg(buf, 1, uint64(i), msgSize(0, uint64(i))))
	}
	if !errors.Is(err, shm.ErrNoSpace) {
		t.Fatalf("put into a full arena: %v", err)
	}
	for i := range n {
		m, err := r.TryGet(nil)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if _, seq, err := checkMsg(m); err != nil || seq != uint64(i) {
			t.Fatalf("got message %d (%v), want %d", seq, err, i)
		}
	}
	r.Close()
	for {
		if _, err := r.TryGet(nil); errors.Is(err, ErrClosed) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if err := Destroy(a, r.Offset()); err != nil {
		t.Fatal(err)
	}
	if got := use(a); got != before {
		t.Fatalf("after Destroy: %+v, want %+v", got, before)
	}
}

// TestGrowConcurrent: producers and consumers in goroutines of two
// handles on a growing ring (as two processes would have): every message
// is delivered once, in order per producer, and Close ends the consumers.
func TestGrowConcurrent(t *testing.T) {
	for _, limit := range []int{0, 256} {
		t.Run(fmt.Sprint("limit", limit), func(t *testing.T) {
			a := newArena(t, 64<<20)
			r := newGrowing(t, a, limit, DefaultInline)
			r2, err := Open(a, r.Offset())
			if err != nil {
				t.Fatal(err)
			}
			ctx := timeout(t)
			const producers, consumers, n = 4, 3, 5000
			var wg sync.WaitGroup
			errs := make(chan error, producers+consumers)
			for id := range producers {
				h := []*Ring{r, r2}[id%2]
				wg.Add(1)
				go func() {
					defer wg.Done()
					var buf []byte
					for seq := range uint64(n) {
						buf = makeMsg(buf, uint32(id), seq, msgSize(1, seq))
						if err := h.Put(ctx, buf); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			got := make([][][2]uint64, consumers)
			var cwg sync.WaitGroup
			for c := range consumers {
				h := []*Ring{r2, r}[c%2]
				cwg.Add(1)
				go func() {
					defer cwg.Done()
					var buf []byte
					for {
						m, err := h.Get(ctx, buf)
						if errors.Is(err, ErrClosed) {
							return
						}
						if err != nil {
							errs <- err
							return
						}
						buf = m
						id, seq, err := checkMsg(m)
						if err != nil {
							errs <- err
							return
						}
						got[c] = append(got[c], [2]uint64{uint64(id), seq})
					}
				}()
			}
			wg.Wait()
			r.Close()
			cwg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			seen := make([][]bool, producers)
			for i := range seen {
				seen[i] = make([]bool, n)
			}
			for _, recs := range got {
				last := make([]int64, producers)
				for i := range last {
					last[i] = -1
				}
				for _, rec := range recs {
					id, seq := rec[0], int64(rec[1])
					if seen[id][seq] || seq <= last[id] {
						t.Fatalf("message %d/%d twice or out of order", id, seq)
					}
					seen[id][seq], last[id] = true, seq
				}
			}
			for id := range seen {
				for seq, ok := range seen[id] {
					if !ok {
						t.Fatalf("message %d/%d lost", id, seq)
					}
				}
			}
			if limit == 0 && segCount(r) < 2 {
				t.Log("the ring did not grow")
			}
		})
	}
}

// TestGrowKilled kills a producer process at each step of growing the
// ring; the parent's puts then grow it (taking over from the dead
// producer), every message the producer put is delivered, and Destroy
// leaves the arena as it was.
func TestGrowKilled(t *testing.T) {
	for _, point := range []hookPoint{hookGrowAlloc, hookGrowInit, hookGrowSeal} {
		t.Run(fmt.Sprint(point), func(t *testing.T) {
			a := newArena(t, 16<<20)
			before := use(a)
			r := newGrowing(t, a, 0, DefaultInline)
			c := start(t, a, "produce", fmt.Sprint(r.Offset(), 1, 0, 0, int(point), 1), false)
			if !c.wait(t) {
				t.Fatal("producer not killed")
			}
			ctx := timeout(t)
			var buf []byte
			for i := range 100 {
				buf = makeMsg(buf, 2, uint64(i), 50)
				if err := r.Put(ctx, buf); err != nil {
					t.Fatal(err)
				}
			}
			r.Close()
			next := []uint64{0, 0, 0}
			for {
				m, err := r.Get(ctx, nil)
				if errors.Is(err, ErrClosed) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				id, seq, err := checkMsg(m)
				if err != nil || seq != next[id] {
					t.Fatalf("got %d/%d (%v), want seq %d", id, seq, err, next[id])
				}
				next[id]++
			}
			if next[1] != FirstCapacity || next[2] != 100 {
				t.Fatalf("got %d messages of the producer (want %d) and %d of the parent (want 100)",
					next[1], FirstCapacity, next[2])
			}
			if segCount(r) != 4 { // 16 of the producer, then 32, 64 and 128 cells for the parent's 100
				t.Fatalf("%d segments, want 4", segCount(r))
			}
			if err := Destroy(a, r.Offset()); err != nil {
				t.Fatal(err)
			}
			if got := use(a); got != before {
				t.Fatalf("after Destroy: %+v, want %+v", got, before)
			}
		})
	}
}

// TestGrowKilledThenClosed: a producer killed while it grows the ring, and
// no producer after it to finish the growth: a consumer of the closed ring
// finishes it, takes every message, then gets ErrClosed rather than
// waiting forever.
func TestGrowKilledThenClosed(t *testing.T) {
	for _, point := range []hookPoint{hookGrowAlloc, hookGrowInit, hookGrowSeal} {
		t.Run(fmt.Sprint(point), func(t *testing.T) {
			a := newArena(t, 16<<20)
			r := newGrowing(t, a, 0, DefaultInline)
			c := start(t, a, "produce", fmt.Sprint(r.Offset(), 1, 0, 0, int(point), 1), false)
			if !c.wait(t) {
				t.Fatal("producer not killed")
			}
			r.Close()
			ctx := timeout(t)
			n := 0
			for {
				m, err := r.Get(ctx, nil)
				if errors.Is(err, ErrClosed) {
					break
				}
				if err != nil {
					t.Fatalf("after %d messages: %v", n, err)
				}
				if _, seq, err := checkMsg(m); err != nil || seq != uint64(n) {
					t.Fatalf("message %d: seq %d, %v", n, seq, err)
				}
				n++
			}
			if n != FirstCapacity {
				t.Fatalf("took %d messages, want the producer's %d", n, FirstCapacity)
			}
			if !r.Ready() {
				t.Fatal("a closed, drained ring is not Ready")
			}
		})
	}
}

package ring

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/shm"
)

// TestProcesses: 2 producer processes and 2 consumer processes; the parent
// checks that every message was delivered exactly once, and in order per
// producer for each consumer.
func TestProcesses(t *testing.T) {
	n := 30000
	if testing.Short() {
		n = 3000
	}
	for _, mode := range []int{0, 1} {
		t.Run(fmt.Sprint("mode", mode), func(t *testing.T) {
			a := newArena(t, 16<<20)
			r := newRing(t, a, 64, DefaultInline)
			var cons, prods []*child
			for range 2 {
				cons = append(cons, start(t, a, "consume-batch", fmt.Sprint(r.Offset(), 0, 0, mode), true))
			}
			for id := range 2 {
				prods = append(prods, start(t, a, "produce", fmt.Sprint(r.Offset(), id, n, mode), true))
			}
			for _, c := range append(cons, prods...) {
				c.goAhead()
			}
			for _, p := range prods {
				if p.wait(t) {
					t.Fatal("producer killed")
				}
			}
			r.Close()
			seen := make([][]bool, 2)
			seen[0], seen[1] = make([]bool, n), make([]bool, n)
			for _, c := range cons {
				if c.wait(t) {
					t.Fatal("consumer killed")
				}
				last := []int64{-1, -1}
				for _, rec := range records(c.output()) {
					id, seq := rec[0], int64(rec[1])
					if id > 1 || seq >= int64(n) || seen[id][seq] {
						t.Fatalf("message %d/%d unexpected or delivered twice", id, seq)
					}
					if seq <= last[id] {
						t.Fatalf("consumer got %d/%d after %d", id, seq, last[id])
					}
					seen[id][seq], last[id] = true, seq
				}
			}
			for id := range seen {
				for seq, ok := range seen[id] {
					if !ok {
						t.Fatalf("message %d/%d never delivered", id, seq)
					}
				}
			}
			if s := statsTrimmed(a, r); s.Allocs != 1 || r.Lost() != 0 || r.Skipped() != 0 {
				t.Fatalf("allocations %d (want 1), lost %d, skipped %d", s.Allocs, r.Lost(), r.Skipped())
			}
		})
	}
}

// TestKillAtPoints kills a producer or consumer process at each point
// where it holds a cell, and checks that the others recover the cell,
// that nothing half-written is delivered, and the accounting.
func TestKillAtPoints(t *testing.T) {
	type tc struct {
		name   string
		point  hookPoint
		size   int // message size: inline (50) or out of line (500)
		leaked int // arena blocks the dead process leaks
	}
	var producerCases, consumerCases []tc
	for _, size := range []int{50, 500} {
		producerCases = append(producerCases,
			tc{fmt.Sprint("PutClaimed", size), hookPutClaimed, size, 0},
			tc{fmt.Sprint("PutWritten", size), hookPutWritten, size, 0})
		consumerCases = append(consumerCases,
			tc{fmt.Sprint("GetClaimed", size), hookGetClaimed, size, 0},
			tc{fmt.Sprint("GetFreed", size), hookGetFreed, size, 0})
	}
	consumerCases = append(consumerCases, tc{"GetRead500", hookGetRead, 500, 0})

	for _, c := range producerCases {
		t.Run("producer/"+c.name, func(t *testing.T) {
			a := newArena(t, 4<<20)
			r := newRing(t, a, 4, DefaultInline)
			ctx := timeout(t)
			// Dies in its 3rd put: messages 0 and 1 are in the ring.
			p := start(t, a, "produce", fmt.Sprint(r.Offset(), 7, 10, c.size, int(c.point), 3), false)
			if !p.wait(t) {
				t.Fatal("producer was not killed")
			}
			for seq := range uint64(2) {
				m, err := r.Get(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if id, s, err := checkMsg(m); err != nil || id != 7 || s != seq {
					t.Fatalf("got %d/%d (%v), want 7/%d", id, s, err, seq)
				}
			}
			// Next in the ring is the dead producer's cell: a Get waits on
			// it, finds the producer dead, skips it, and gets what follows.
			r.Put(ctx, makeMsg(nil, 1, 99, c.size))
			t0 := time.Now()
			m, err := r.Get(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if id, s, err := checkMsg(m); err != nil || id != 1 || s != 99 {
				t.Fatalf("after the dead cell got %d/%d (%v), want 1/99", id, s, err)
			}
			t.Logf("recovered in %v", time.Since(t0))
			if r.Skipped() != 1 || r.Lost() != 0 {
				t.Fatalf("skipped %d lost %d, want 1 0", r.Skipped(), r.Lost())
			}
			checkWorks(t, r)
			if got := statsTrimmed(a, r).Allocs; got != 1+c.leaked {
				t.Fatalf("%d allocations, want %d", got, 1+c.leaked)
			}
		})
	}
	for _, c := range consumerCases {
		t.Run("consumer/"+c.name, func(t *testing.T) {
			a := newArena(t, 4<<20)
			r := newRing(t, a, 4, DefaultInline)
			ctx := timeout(t)
			for seq := range uint64(4) {
				if err := r.Put(ctx, makeMsg(nil, 1, seq, c.size)); err != nil {
					t.Fatal(err)
				}
			}
			// Dies in its 2nd get: message 0 delivered, 1 lost.
			cc := start(t, a, "consume", fmt.Sprint(r.Offset(), 0, 0, 0, int(c.point), 2), false)
			if !cc.wait(t) {
				t.Fatal("consumer was not killed")
			}
			if rs := records(cc.output()); len(rs) != 1 || rs[0] != [2]uint64{1, 0} {
				t.Fatalf("consumer reported %v", rs)
			}
			// Putting a lap's worth reaches the dead consumer's cell: the
			// producer waits on it, finds the consumer dead and takes it.
			t0 := time.Now()
			for seq := uint64(4); seq < 6; seq++ { // 2 and 3 are still queued
				if err := r.Put(ctx, makeMsg(nil, 1, seq, c.size)); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("recovered in %v", time.Since(t0))
			for seq := uint64(2); seq < 6; seq++ {
				m, err := r.Get(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, s, err := checkMsg(m); err != nil || s != seq {
					t.Fatalf("got %d (%v), want %d", s, err, seq)
				}
			}
			if r.Lost() != 1 || r.Skipped() != 0 {
				t.Fatalf("lost %d skipped %d, want 1 0", r.Lost(), r.Skipped())
			}
			checkWorks(t, r)
			if got := statsTrimmed(a, r).Allocs; got != 1+c.leaked {
				t.Fatalf("%d allocations, want %d", got, 1+c.leaked)
			}
		})
	}
	t.Run("recoverer", func(t *testing.T) {
		// A producer dies holding a cell; the consumer that recovers it
		// dies while recovering; the parent recovers it again.
		a := newArena(t, 4<<20)
		r := newRing(t, a, 4, DefaultInline)
		ctx := timeout(t)
		p := start(t, a, "produce", fmt.Sprint(r.Offset(), 7, 10, 3, int(hookPutWritten), 1), false)
		if !p.wait(t) {
			t.Fatal("producer was not killed")
		}
		cc := start(t, a, "consume", fmt.Sprint(r.Offset(), 0, 1, 0, int(hookRecovering), 1), false)
		if !cc.wait(t) {
			t.Fatal("recovering consumer was not killed")
		}
		r.Put(ctx, makeMsg(nil, 1, 5, 500))
		m, err := r.Get(ctx, nil)
		if _, s, err2 := checkMsg(m); err != nil || err2 != nil || s != 5 {
			t.Fatalf("got %d: %v %v", s, err, err2)
		}
		if r.Skipped() != 1 || r.Lost() != 0 {
			t.Fatalf("skipped %d lost %d, want 1 0", r.Skipped(), r.Lost())
		}
		checkWorks(t, r)
	})
	t.Run("reclaim", func(t *testing.T) {
		// A consumer dies holding a cell of a closed ring: nobody waits on
		// it, Reclaim counts it.
		a := newArena(t, 4<<20)
		r := newRing(t, a, 4, DefaultInline)
		r.TryPut(makeMsg(nil, 1, 0, 500))
		r.Close()
		cc := start(t, a, "consume", fmt.Sprint(r.Offset(), 0, 0, 0, int(hookGetClaimed), 1), false)
		if !cc.wait(t) {
			t.Fatal("consumer was not killed")
		}
		if _, err := r.TryGet(nil); err != ErrClosed {
			t.Fatalf("TryGet: %v", err)
		}
		if n := r.Reclaim(); n != 1 || r.Lost() != 1 {
			t.Fatalf("reclaimed %d, lost %d", n, r.Lost())
		}
		if statsTrimmed(a, r).Allocs != 1 {
			t.Fatalf("%d allocations", statsTrimmed(a, r).Allocs)
		}
	})
}

// checkWorks puts and gets a few laps through r.
func checkWorks(t *testing.T, r *Ring) {
	t.Helper()
	ctx := timeout(t)
	for i := range 3 * r.Cap() {
		msg := makeMsg(nil, 3, uint64(i), msgSize(1, uint64(i)))
		if err := r.Put(ctx, msg); err != nil {
			t.Fatal(err)
		}
		m, err := r.Get(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, s, err := checkMsg(m); err != nil || s != uint64(i) {
			t.Fatalf("ring broken: got %d (%v), want %d", s, err, i)
		}
	}
	if r.Len() != 0 {
		t.Fatalf("Len %d", r.Len())
	}
}

// TestKillProducersRandom kills producer processes at random moments of a
// stream of puts, round after round, while the parent consumes: each
// producer's messages must arrive complete, in order and without gaps (its
// last put may be skipped), and the parent must never block for good.
func TestKillProducersRandom(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 6
	}
	a := newArena(t, 32<<20)
	// Cells of 4 KiB: messages up to 8 KiB, half inline, half out of line,
	// so a kill often lands while a cell is held.
	r := newRing(t, a, 16, 4096)
	ctx := timeout(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	next := map[uint32]uint64{} // next seq expected per producer id
	var mu sync.Mutex
	done := make(chan error, 1)
	const marker = 1 << 31
	markers := make(chan uint64, 1)
	go func() {
		var buf []byte
		for {
			m, err := r.Get(ctx, buf)
			if err == ErrClosed {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			buf = m
			id, seq, err := checkMsg(m)
			if err != nil {
				done <- err
				return
			}
			if id == marker {
				markers <- seq
				continue
			}
			mu.Lock()
			if want := next[id]; seq != want {
				mu.Unlock()
				done <- fmt.Errorf("producer %d: got seq %d, want %d", id, seq, want)
				return
			}
			next[id] = seq + 1
			mu.Unlock()
		}
	}()
	killed := 0
	for round := range rounds {
		var prods []*child
		for k := range 2 {
			id := uint32(round*2 + k)
			prods = append(prods, start(t, a, "produce", fmt.Sprint(r.Offset(), id, 0, 2), false))
		}
		for _, p := range prods {
			time.Sleep(time.Duration(rng.IntN(20000)) * time.Microsecond)
			p.Process.Kill()
		}
		for _, p := range prods {
			if !p.wait(t) {
				t.Fatalf("round %d: producer exited before it was killed: %s", round, p.stderr.Bytes())
			}
			killed++
		}
		// The marker comes after everything the dead producers put: once
		// it is delivered, the ring has been drained past their cells.
		if err := r.Put(ctx, makeMsg(nil, marker, uint64(round), 30)); err != nil {
			t.Fatal(err)
		}
		select {
		case seq := <-markers:
			if seq != uint64(round) {
				t.Fatalf("marker %d, want %d", seq, round)
			}
		case err := <-done:
			t.Fatalf("round %d: %v", round, err)
		}
	}
	r.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	total := uint64(0)
	for _, n := range next {
		total += n
	}
	s := statsTrimmed(a, r)
	t.Logf("%d rounds, %d producers killed, %d messages delivered, %d puts skipped, %d blocks leaked",
		rounds, killed, total, r.Skipped(), s.Allocs-1)
	if r.Skipped() > killed || r.Lost() != 0 {
		t.Fatalf("skipped %d lost %d with %d producers killed", r.Skipped(), r.Lost(), killed)
	}
	// A block leaks only if a kill lands between the allocator's commit
	// and the block's record in the cell.
	if s.Allocs-1 > killed/10 {
		t.Fatalf("%d blocks leaked by %d killed producers", s.Allocs-1, killed)
	}
	checkWorks(t, reopen(t, a, r))
}

// TestKillConsumersRandom kills consumer processes at random moments while
// the parent produces; at the end every message was delivered once, or
// counted lost, or (at most one per kill) taken by a consumer killed before
// it could report it.
func TestKillConsumersRandom(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 6
	}
	a := newArena(t, 32<<20)
	r := newRing(t, a, 16, 4096)
	ctx := timeout(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	stop := make(chan struct{})
	produced := make(chan uint64, 1)
	go func() {
		var buf []byte
		seq := uint64(0)
		defer func() { produced <- seq }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			buf = makeMsg(buf, 1, seq, msgSize(2, seq))
			if err := r.Put(ctx, buf); err != nil {
				if err != ErrClosed {
					t.Error(err)
				}
				return
			}
			seq++
		}
	}()
	var cons []*child
	killed := 0
	for range rounds {
		var batch []*child
		for range 2 {
			batch = append(batch, start(t, a, "consume", fmt.Sprint(r.Offset(), 0, 0, 0), false))
		}
		for _, c := range batch {
			time.Sleep(time.Duration(rng.IntN(20000)) * time.Microsecond)
			c.Process.Kill()
		}
		for _, c := range batch {
			if c.wait(t) {
				killed++
			}
		}
		cons = append(cons, batch...)
	}
	close(stop)
	r.Close() // unblocks the producer if the ring is full
	n := <-produced
	// Drain what is left, and count cells of dead consumers nobody has
	// come across yet.
	seen := make([]bool, n)
	dup := func(seq uint64) {
		if seq >= n || seen[seq] {
			t.Fatalf("message %d unexpected or delivered twice", seq)
		}
		seen[seq] = true
	}
	var buf []byte
	for {
		m, err := r.Get(ctx, buf)
		if err == ErrClosed {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		buf = m
		_, seq, err := checkMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		dup(seq)
	}
	r.Reclaim()
	delivered := 0
	for _, c := range cons {
		for _, rec := range records(c.output()) {
			dup(rec[1])
		}
	}
	for _, ok := range seen {
		if ok {
			delivered++
		}
	}
	missing := int(n) - delivered - r.Lost()
	t.Logf("%d messages, %d consumers killed: %d delivered, %d lost in the ring, %d taken but not reported",
		n, killed, delivered, r.Lost(), missing)
	if r.Lost() > killed || missing < 0 || missing > killed {
		t.Fatalf("accounting: %d messages, %d delivered, %d lost, %d kills", n, delivered, r.Lost(), killed)
	}
	if r.Skipped() != 0 {
		t.Fatalf("skipped %d", r.Skipped())
	}
	if s := statsTrimmed(a, r); s.Allocs-1 > killed {
		t.Fatalf("%d blocks leaked by %d killed consumers", s.Allocs-1, killed)
	}
}

// reopen returns a fresh ring in a, r being closed.
func reopen(t *testing.T, a *shm.Arena, r *Ring) *Ring {
	return newRing(t, a, r.Cap(), r.Inline())
}

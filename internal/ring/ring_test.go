package ring

import (
	"bytes"
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/shm"
)

func TestFIFOAndFullEmpty(t *testing.T) {
	a := newArena(t, shm.MinSize)
	r := newRing(t, a, 5, DefaultInline) // rounded up to 8
	if r.Cap() != 8 || r.Inline() != 96 {
		t.Fatalf("cap %d inline %d, want 8 96", r.Cap(), r.Inline())
	}
	if _, err := r.TryGet(nil); err != ErrEmpty {
		t.Fatalf("TryGet on a new ring: %v", err)
	}
	for lap := range 5 {
		for i := range 8 {
			if err := r.TryPut([]byte{byte(lap), byte(i)}); err != nil {
				t.Fatalf("lap %d put %d: %v", lap, i, err)
			}
		}
		if err := r.TryPut([]byte{9}); err != ErrFull {
			t.Fatalf("put into a full ring: %v", err)
		}
		if r.Len() != 8 {
			t.Fatalf("Len %d, want 8", r.Len())
		}
		var buf []byte
		for i := range 8 {
			m, err := r.TryGet(buf)
			if err != nil || !bytes.Equal(m, []byte{byte(lap), byte(i)}) {
				t.Fatalf("lap %d get %d: %v %v", lap, i, m, err)
			}
			buf = m
		}
		if _, err := r.TryGet(buf); err != ErrEmpty {
			t.Fatalf("get from an empty ring: %v", err)
		}
		if r.Len() != 0 {
			t.Fatalf("Len %d, want 0", r.Len())
		}
	}
}

func TestSizes(t *testing.T) {
	a := newArena(t, 512<<20)
	r := newRing(t, a, 4, DefaultInline)
	base := statsTrimmed(a, r).Allocs
	ctx := timeout(t)
	big := make([]byte, MaxMessage)
	for i := range big {
		big[i] = byte(i * 7)
	}
	var buf []byte
	for _, n := range []int{0, 1, r.Inline() - 1, r.Inline(), r.Inline() + 1, 4096, 1 << 20, MaxMessage} {
		msg := big[:n]
		if err := r.Put(ctx, msg); err != nil {
			t.Fatalf("put %d bytes: %v", n, err)
		}
		m, err := r.Get(ctx, buf)
		if err != nil {
			t.Fatalf("get %d bytes: %v", n, err)
		}
		if m == nil || !bytes.Equal(m, msg) {
			t.Fatalf("%d-byte message came back as %d bytes (nil %v)", n, len(m), m == nil)
		}
		buf = m
		if got := statsTrimmed(a, r).Allocs; got != base {
			t.Fatalf("after a %d-byte message: %d allocations, want %d", n, got, base)
		}
	}
	// The empty message is a message, also with a nil dst.
	r.TryPut(nil)
	if m, err := r.TryGet(nil); err != nil || m == nil || len(m) != 0 {
		t.Fatalf("empty message: %v %v", m, err)
	}
	if err := r.TryPut(make([]byte, MaxMessage+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize TryPut: %v", err)
	}
	if err := r.Put(ctx, make([]byte, MaxMessage+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize Put: %v", err)
	}
}

func TestArenaFull(t *testing.T) {
	a := newArena(t, shm.MinSize)
	r := newRing(t, a, 4, DefaultInline)
	ctx := timeout(t)
	if err := r.Put(ctx, make([]byte, shm.MinSize)); !errors.Is(err, shm.ErrNoSpace) {
		t.Fatalf("Put bigger than the arena: %v", err)
	}
	if err := r.TryPut(make([]byte, shm.MinSize/2+1)); !errors.Is(err, shm.ErrNoSpace) {
		t.Fatalf("TryPut bigger than the arena's free space: %v", err)
	}
	// The cells the failed puts had claimed are given back: gets pass
	// over them.
	if _, err := r.TryGet(nil); err != ErrEmpty || r.Len() != 0 {
		t.Fatalf("after failed puts: %v, Len %d", err, r.Len())
	}
	checkWorks(t, r)
	if statsTrimmed(a, r).Allocs != 1 {
		t.Fatalf("%d allocations", statsTrimmed(a, r).Allocs)
	}
}

func TestBigInlineCells(t *testing.T) {
	a := newArena(t, 4<<20)
	r := newRing(t, a, 16, 4096)
	if r.Inline() != 4096+32 {
		t.Fatalf("inline %d", r.Inline())
	}
	base := statsTrimmed(a, r).Allocs
	ctx := timeout(t)
	for _, n := range []int{4096, r.Inline(), r.Inline() + 1} {
		msg := makeMsg(nil, 1, uint64(n), n)
		if err := r.Put(ctx, msg); err != nil {
			t.Fatal(err)
		}
		if n <= r.Inline() && statsTrimmed(a, r).Allocs != base {
			t.Fatalf("%d-byte message went out of line", n)
		}
		m, err := r.Get(ctx, nil)
		if err != nil || !bytes.Equal(m, msg) {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
}

func TestClose(t *testing.T) {
	a := newArena(t, shm.MinSize)
	r := newRing(t, a, 8, DefaultInline)
	ctx := timeout(t)
	for i := range 3 {
		r.Put(ctx, make([]byte, i*100)) // inline and out of line
	}
	r.Close()
	r.Close()
	if !r.Closed() {
		t.Fatal("not closed")
	}
	if err := r.TryPut([]byte("x")); err != ErrClosed {
		t.Fatalf("TryPut after Close: %v", err)
	}
	if err := r.Put(ctx, []byte("x")); err != ErrClosed {
		t.Fatalf("Put after Close: %v", err)
	}
	for i := range 3 {
		m, err := r.Get(ctx, nil)
		if err != nil || len(m) != i*100 {
			t.Fatalf("drain %d: %d bytes, %v", i, len(m), err)
		}
	}
	if _, err := r.Get(ctx, nil); err != ErrClosed {
		t.Fatalf("Get from a closed, drained ring: %v", err)
	}
	if _, err := r.TryGet(nil); err != ErrClosed {
		t.Fatalf("TryGet from a closed, drained ring: %v", err)
	}
	if statsTrimmed(a, r).Allocs != 1 {
		t.Fatalf("%d allocations, want the ring only", statsTrimmed(a, r).Allocs)
	}
}

func TestCloseWakesBlocked(t *testing.T) {
	a := newArena(t, shm.MinSize)
	empty := newRing(t, a, 2, DefaultInline)
	full := newRing(t, a, 2, DefaultInline)
	full.TryPut(nil)
	full.TryPut(nil)
	ctx := timeout(t)
	errs := make(chan error, 20)
	for range 10 {
		go func() { _, err := empty.Get(ctx, nil); errs <- err }()
		go func() { errs <- full.Put(ctx, []byte("x")) }()
	}
	time.Sleep(50 * time.Millisecond)
	empty.Close()
	full.Close()
	for range 20 {
		if err := <-errs; err != ErrClosed {
			t.Fatalf("blocked call after Close: %v", err)
		}
	}
}

func TestContextCancel(t *testing.T) {
	a := newArena(t, shm.MinSize)
	r := newRing(t, a, 2, DefaultInline)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := r.Get(ctx, nil); err != context.DeadlineExceeded {
		t.Fatalf("Get: %v", err)
	}
	r.TryPut(nil)
	r.TryPut(make([]byte, 1000))
	base := statsTrimmed(a, r).Allocs
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel2()
	if err := r.Put(ctx2, make([]byte, 1000)); err != context.DeadlineExceeded {
		t.Fatalf("Put: %v", err)
	}
	if statsTrimmed(a, r).Allocs != base {
		t.Fatal("a cancelled Put leaked its out-of-line block")
	}
	// A waiter that gives up does not swallow a wake-up meant for another.
	r2 := newRing(t, a, 2, DefaultInline)
	got := make(chan error, 1)
	go func() { _, err := r2.Get(timeout(t), nil); got <- err }()
	short, cancel3 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel3()
	r2.Get(short, nil)
	r2.TryPut([]byte("x"))
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not woken")
	}
}

func TestOpenValidates(t *testing.T) {
	a := newArena(t, shm.MinSize)
	if _, err := Open(a, 12345); !errors.Is(err, ErrBadRing) {
		t.Fatalf("garbage offset: %v", err)
	}
	off, _ := a.Alloc(4096)
	if _, err := Open(a, off); !errors.Is(err, ErrBadRing) {
		t.Fatalf("zeroed block: %v", err)
	}
	roff, _ := New(a, 4)
	*(*uint32)(unsafe.Pointer(&a.Bytes(roff, hdrSize)[hdrCap])) = 3
	if _, err := Open(a, roff); !errors.Is(err, ErrBadRing) {
		t.Fatalf("corrupt capacity: %v", err)
	}
	for _, bad := range [][2]int{{0, 1}, {MaxCapacity + 1, 1}, {4, -1}, {4, MaxInline + 1}} {
		if _, err := NewSized(a, bad[0], bad[1]); err == nil {
			t.Fatalf("NewSized%v succeeded", bad)
		}
	}
}

func TestCorruptCells(t *testing.T) {
	a := newArena(t, 4<<20)
	r := newRing(t, a, 4, DefaultInline)
	ctx := timeout(t)
	victim, _ := a.Alloc(1 << 16)
	corrupt := []func(c *cell){
		func(c *cell) { c.len = 1 << 31 },                     // inline, absurd length
		func(c *cell) { c.len = uint32(r.Inline() + 1) },      // inline, too long for the cell
		func(c *cell) { c.flags = 77 },                        // unknown flags
		func(c *cell) { c.ool = 0xdeadbeef00 },                // out of line, outside the arena
		func(c *cell) { c.ool = uint64(victim) + 64 },         // out of line, inside a block
		func(c *cell) { c.ool = uint64(victim); c.len = 1e8 }, // beyond MaxMessage
		func(c *cell) { c.ool = uint64(victim); c.len = 1e6 }, // longer than the block
		func(c *cell) { c.ool = 0 },                           // no block
		func(c *cell) { c.flags = flagOOL; c.len = 1 << 31 },  // huge
		func(c *cell) { c.flags = flagOOL | flagSkip; c.len = 5 },
	}
	for i, f := range corrupt {
		msg := make([]byte, 10)
		if i >= 3 && i < 8 {
			msg = make([]byte, 500)
		}
		if err := r.Put(ctx, msg); err != nil {
			t.Fatal(err)
		}
		f(r.root.cell(atomic.LoadUint64(r.root.head)))
		m, err := r.Get(ctx, nil)
		if !errors.Is(err, ErrCorrupt) || m != nil {
			t.Fatalf("corruption %d: got %d bytes, %v", i, len(m), err)
		}
		// The ring goes on working.
		if err := r.Put(ctx, []byte("ok")); err != nil {
			t.Fatal(err)
		}
		if m, err := r.Get(ctx, nil); err != nil || string(m) != "ok" {
			t.Fatalf("after corruption %d: %q %v", i, m, err)
		}
	}
	if _, err := a.BlockSize(victim); err != nil {
		t.Fatalf("the block a corrupt cell pointed into was freed: %v", err)
	}
}

// TestMPMC: producers × consumers goroutines, every message delivered
// exactly once and in order per producer for each consumer.
func TestMPMC(t *testing.T) {
	for _, tc := range []struct {
		name          string
		prod, cons, n int
		capacity      int
		mode          int
	}{
		{"small", 4, 4, 20000, 16, 0},
		{"mixed", 3, 5, 4000, 8, 1},
		{"tiny-ring", 8, 8, 3000, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			if testing.Short() {
				n /= 10
			}
			a := newArena(t, 16<<20)
			r := newRing(t, a, tc.capacity, DefaultInline)
			ctx := timeout(t)
			var pwg, cwg sync.WaitGroup
			for p := range tc.prod {
				pwg.Go(func() {
					var buf []byte
					for seq := range uint64(n) {
						buf = makeMsg(buf, uint32(p), seq, msgSize(tc.mode, seq))
						var err error
						if seq%3 == 0 {
							for err = r.TryPut(buf); err == ErrFull; err = r.TryPut(buf) {
								time.Sleep(time.Microsecond)
							}
						} else {
							err = r.Put(ctx, buf)
						}
						if err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			seen := make([][]uint64, tc.cons)
			for c := range tc.cons {
				cwg.Go(func() {
					var buf []byte
					for {
						m, err := r.Get(ctx, buf)
						if err == ErrClosed {
							return
						}
						if err != nil {
							t.Error(err)
							return
						}
						buf = m
						id, seq, err := checkMsg(m)
						if err != nil {
							t.Error(err)
							return
						}
						seen[c] = append(seen[c], uint64(id)<<32|seq)
					}
				})
			}
			pwg.Wait()
			r.Close()
			cwg.Wait()
			got := make([][]bool, tc.prod)
			for p := range got {
				got[p] = make([]bool, n)
			}
			for c, s := range seen {
				last := make([]int64, tc.prod)
				for i := range last {
					last[i] = -1
				}
				for _, v := range s {
					id, seq := v>>32, int64(uint32(v))
					if got[id][seq] {
						t.Fatalf("message %d/%d delivered twice", id, seq)
					}
					got[id][seq] = true
					if seq <= last[id] {
						t.Fatalf("consumer %d got %d/%d after %d", c, id, seq, last[id])
					}
					last[id] = seq
				}
			}
			for p := range got {
				for seq, ok := range got[p] {
					if !ok {
						t.Fatalf("message %d/%d never delivered", p, seq)
					}
				}
			}
			r.Trim()
			if s := statsTrimmed(a, r); s.Allocs != 1 {
				t.Fatalf("%d allocations left, want the ring only", s.Allocs)
			}
			if r.Lost() != 0 || r.Skipped() != 0 {
				t.Fatalf("lost %d skipped %d", r.Lost(), r.Skipped())
			}
		})
	}
}

func threads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

func TestTenThousandBlockedGets(t *testing.T) {
	a := newArena(t, 4<<20)
	r := newRing(t, a, 64, DefaultInline)
	ctx := timeout(t)
	const n = 10000
	before := threads(t)
	var entered atomic.Int32
	got := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			entered.Add(1)
			m, err := r.Get(ctx, nil)
			if err != nil {
				t.Error(err)
				return
			}
			got <- len(m)
		})
	}
	for entered.Load() < n {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let them all reach their parking spot
	during := threads(t)
	if during > before+20 {
		t.Fatalf("%d threads with %d goroutines blocked in Get (%d before)", during, n, before)
	}
	for i := range n {
		if err := r.Put(ctx, make([]byte, i%200)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(got)
	total := 0
	for range got {
		total++
	}
	if total != n {
		t.Fatalf("%d of %d gets returned", total, n)
	}
	t.Logf("threads: %d before, %d with %d goroutines blocked, %d after", before, during, n, threads(t))
}

func TestStartTime(t *testing.T) {
	start, ok := proc.StartTime(os.Getpid())
	if !ok || start == 0 {
		t.Fatalf("startTime of self: %d %v", start, ok)
	}
	if !ownerAlive(selfTag()) {
		t.Fatal("self is not alive")
	}
	if tag := selfTag(); tag&pidMask != uint32(os.Getpid()) {
		t.Fatalf("tag %#x for pid %d", tag, os.Getpid())
	}
	// Same pid, other start time: a different process.
	other := selfTag() ^ 1<<pidBits
	if other>>pidBits != 0 && ownerAlive(other) {
		t.Fatal("a tag with another start time is alive")
	}
	if ownerAlive(1<<pidBits - 1) {
		t.Fatal("pid 2^22-1 is alive")
	}
}

// statsTrimmed returns a's statistics once r's spare blocks are freed, so
// that a count of allocations shows leaks only.
func statsTrimmed(a *shm.Arena, r *Ring) shm.Stats {
	r.Trim()
	return a.Stats()
}

// TestGetInto: a message that fits is copied into the buffer, without
// allocating; one longer than the buffer is left in the ring, its length
// reported, for a later get with a buffer big enough, inline or out of
// line, with several consumers at once.
func TestGetInto(t *testing.T) {
	a := newArena(t, shm.MinSize)
	r := newRing(t, a, 8, DefaultInline)
	small, big := []byte("hello"), bytes.Repeat([]byte("x"), 1000)
	for _, m := range [][]byte{small, big, {}, small} {
		if err := r.TryPut(m); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 16)
	if n, err := r.TryGetInto(buf); err != nil || !bytes.Equal(buf[:n], small) {
		t.Fatalf("TryGetInto = %d %v", n, err)
	}
	for range 3 {
		if n, err := r.TryGetInto(buf); n != len(big) || !errors.Is(err, ErrShortBuffer) {
			t.Fatalf("TryGetInto of a %d-byte message into %d bytes = %d %v", len(big), len(buf), n, err)
		}
	}
	if r.Len() != 3 {
		t.Fatalf("Len %d after short gets, want 3", r.Len())
	}
	large := make([]byte, 1000)
	if n, err := r.GetInto(timeout(t), large); err != nil || !bytes.Equal(large[:n], big) {
		t.Fatalf("GetInto with room = %d %v", n, err)
	}
	if n, err := r.TryGetInto(nil); n != 0 || err != nil {
		t.Fatalf("TryGetInto of an empty message into nil = %d %v", n, err)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		if err := r.TryPut(small); err != nil {
			t.Fatal(err)
		}
		if _, err := r.GetInto(context.Background(), buf); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Fatalf("%v allocations per put and GetInto", allocs)
	}

	// Consumers with short and long buffers race for the same messages:
	// the long ones get every message once, the short ones none.
	const n = 2000
	r2 := newRing(t, a, 64, DefaultInline)
	var got sync.Map
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 8+992*(i%2))
			for {
				select {
				case <-stop:
					return
				default:
				}
				k, err := r2.TryGetInto(b)
				switch {
				case errors.Is(err, ErrShortBuffer), err == ErrEmpty:
					if len(b) > 8 && errors.Is(err, ErrShortBuffer) {
						t.Errorf("a %d-byte buffer is short for %d bytes", len(b), k)
					}
				case err != nil:
					t.Error(err)
					return
				default:
					if len(b) == 8 {
						t.Errorf("a %d-byte message got into an 8-byte buffer", k)
					}
					if _, dup := got.LoadOrStore(string(b[:k]), true); dup {
						t.Errorf("message %q taken twice", b[:k])
					}
				}
			}
		}()
	}
	for i := range n {
		m := []byte(strconv.Itoa(i) + strings.Repeat(".", 20+i%200))
		if err := r2.Put(timeout(t), m); err != nil {
			t.Fatal(err)
		}
	}
	for r2.Len() > 0 {
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	count := 0
	got.Range(func(any, any) bool { count++; return true })
	if count != n {
		t.Fatalf("%d messages taken, want %d", count, n)
	}
}

package shm

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func newArena(t testing.TB, size int) *Arena {
	t.Helper()
	a, err := New(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return a
}

func mustCheck(t testing.TB, a *Arena) {
	t.Helper()
	if err := a.check(); err != nil {
		t.Fatalf("arena invariants broken:\n%v", err)
	}
}

// blockSize is the usable size Alloc(n) must give.
func blockSize(n int) int { return max(minBlock, 1<<bits.Len(uint(n-1))) }

func TestNewSizes(t *testing.T) {
	for _, tc := range []struct{ ask, want int }{
		{1, MinSize},
		{MinSize - 1, MinSize},
		{MinSize, MinSize},
		{MinSize + 1, 2 * MinSize},
		{3 << 20, 4 << 20},
		{1 << 30, 1 << 30},
	} {
		a := newArena(t, tc.ask)
		if a.Size() != tc.want {
			t.Errorf("New(%d).Size() = %d, want %d", tc.ask, a.Size(), tc.want)
		}
		if s := a.Stats(); s.Size != tc.want || s.Free != tc.want || s.InUse != 0 || s.Allocs != 0 {
			t.Errorf("New(%d).Stats() = %+v", tc.ask, s)
		}
		mustCheck(t, a)
	}
	for _, bad := range []int{0, -1, MaxSize + 1} {
		if a, err := New(bad); err == nil {
			a.Close()
			t.Errorf("New(%d) succeeded", bad)
		}
	}
}

// A 1 GiB arena must cost address space, not memory.
func TestNewIsSparse(t *testing.T) {
	a := newArena(t, 1<<30)
	off, err := a.Alloc(1 << 29)
	if err != nil {
		t.Fatal(err)
	}
	a.Bytes(off, 1)[0] = 1
	if err := a.Free(off); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(a.Fd(), &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 64<<20 {
		t.Errorf("1 GiB arena occupies %d bytes of memory after use", used)
	}
}

func TestAllocAlignmentAndSize(t *testing.T) {
	a := newArena(t, 16<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	var offs []Offset
	for range 500 {
		n := 1 + rng.IntN(10000)
		off, err := a.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		if off%64 != 0 {
			t.Fatalf("Alloc(%d) = %#x, not 64-byte aligned", n, off)
		}
		size, err := a.BlockSize(off)
		if err != nil {
			t.Fatal(err)
		}
		if size != blockSize(n) {
			t.Fatalf("BlockSize(Alloc(%d)) = %d, want %d", n, size, blockSize(n))
		}
		b := a.Bytes(off, size)
		for i := range b {
			b[i] = 0xa5
		}
		*a.Uint64(off) = 1
		*a.Uint32(off + Offset(size) - 4) = 2
		offs = append(offs, off)
	}
	mustCheck(t, a)
	for _, off := range offs {
		if err := a.Free(off); err != nil {
			t.Fatal(err)
		}
	}
	if s := a.Stats(); s.InUse != 0 || s.Allocs != 0 {
		t.Errorf("after freeing everything: %+v", s)
	}
	mustCheck(t, a)
	if err := a.checkFreeZero(); err != nil {
		t.Error(err)
	}
}

func TestAllocInvalid(t *testing.T) {
	a := newArena(t, MinSize)
	for _, n := range []int{0, -1} {
		if _, err := a.Alloc(n); err == nil || errors.Is(err, ErrNoSpace) {
			t.Errorf("Alloc(%d) = %v, want a size error", n, err)
		}
	}
	if _, err := a.Alloc(MinSize + 1); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Alloc(more than the arena) = %v, want ErrNoSpace", err)
	}
	// The whole heap is one block.
	off, err := a.Alloc(MinSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Free(off); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
}

func TestZeroAfterReuse(t *testing.T) {
	a := newArena(t, 4<<20)
	fill := func(off Offset, n int) {
		for i, b := 0, a.Bytes(off, n); i < n; i++ {
			b[i] = byte(i) | 1
		}
	}
	wantZero := func(off Offset, n int) {
		t.Helper()
		for i, c := range a.Bytes(off, n) {
			if c != 0 {
				t.Fatalf("block %#x of %d bytes: byte %d is %#x, want 0", off, n, i, c)
			}
		}
	}
	// Same size, small and large (scrubbed by writing zeros and by punching
	// a hole): the block comes back, zeroed.
	for _, n := range []int{64, 1000, punchMin / 2, punchMin, 2 * punchMin} {
		off, err := a.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		wantZero(off, n)
		fill(off, n)
		if err := a.Free(off); err != nil {
			t.Fatal(err)
		}
		again, err := a.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		if again != off {
			t.Errorf("Alloc(%d) after freeing %#x returned %#x", n, off, again)
		}
		wantZero(again, n)
		if err := a.Free(again); err != nil {
			t.Fatal(err)
		}
	}
	// Small blocks merged into a big one: the free-list links they carried
	// must not show through.
	var small []Offset
	for range 64 {
		off, err := a.Alloc(64)
		if err != nil {
			t.Fatal(err)
		}
		fill(off, 64)
		small = append(small, off)
	}
	for _, off := range small {
		if err := a.Free(off); err != nil {
			t.Fatal(err)
		}
	}
	big, err := a.Alloc(a.Size())
	if err != nil {
		t.Fatal(err)
	}
	wantZero(big, 1<<16) // the small blocks were at the start
	if err := a.Free(big); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	if err := a.checkFreeZero(); err != nil {
		t.Error(err)
	}
}

// Filling the arena with the smallest blocks and freeing them in random
// order must coalesce everything back into one block.
func TestCoalescing(t *testing.T) {
	a := newArena(t, MinSize)
	var offs []Offset
	for {
		off, err := a.Alloc(minBlock)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	if len(offs) != MinSize/minBlock {
		t.Fatalf("fit %d %d-byte blocks in a %d-byte arena", len(offs), minBlock, MinSize)
	}
	mustCheck(t, a)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(offs), func(i, j int) { offs[i], offs[j] = offs[j], offs[i] })
	for _, off := range offs {
		if err := a.Free(off); err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, a)
	off, err := a.Alloc(a.Size())
	if err != nil {
		t.Fatalf("whole-arena allocation after freeing everything: %v", err)
	}
	if err := a.Free(off); err != nil {
		t.Fatal(err)
	}
}

func TestExhaustion(t *testing.T) {
	a := newArena(t, MinSize)
	var offs []Offset
	var err error
	for {
		var off Offset
		if off, err = a.Alloc(4096); err != nil {
			break
		}
		offs = append(offs, off)
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Alloc on a full arena: %v, want ErrNoSpace", err)
	}
	if len(offs) != MinSize/4096 {
		t.Errorf("fit %d 4 KiB blocks in 1 MiB", len(offs))
	}
	for _, want := range []string{"shared memory", "requested 4096 bytes", "0 bytes free"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Still usable: free two buddies, a block of twice the size fits, a
	// bigger one does not.
	mustCheck(t, a)
	for _, off := range offs[2:4] {
		if err := a.Free(off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Alloc(16384); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "8192 bytes free, largest free block 8192 bytes") {
		t.Errorf("Alloc(16384) with 8 KiB free = %v", err)
	}
	off, err := a.Alloc(8192)
	if err != nil {
		t.Fatalf("Alloc(8192) after freeing 8 KiB: %v", err)
	}
	offs[2], offs[3] = off, 0
	for _, off := range offs {
		if off != 0 {
			if err := a.Free(off); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s := a.Stats(); s.InUse != 0 {
		t.Errorf("after freeing everything: %+v", s)
	}
	mustCheck(t, a)
}

func TestBadOffset(t *testing.T) {
	a := newArena(t, MinSize)
	off, err := a.Alloc(256)
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.Alloc(256)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Free(off); err != nil {
		t.Fatal(err)
	}
	heap := Offset(a.heapOff)
	for _, bad := range []Offset{
		off,                     // double free
		0,                       // nil
		64,                      // metadata
		heap - 64,               // metadata
		other + 1,               // unaligned
		other + 64,              // inside a block
		other + 256,             // a free block
		heap + Offset(a.Size()), // past the end
		1 << 62,                 // garbage
	} {
		if err := a.Free(bad); !errors.Is(err, ErrBadOffset) {
			t.Errorf("Free(%#x) = %v, want ErrBadOffset", bad, err)
		}
		if _, err := a.BlockSize(bad); !errors.Is(err, ErrBadOffset) {
			t.Errorf("BlockSize(%#x) = %v, want ErrBadOffset", bad, err)
		}
	}
	if s := a.Stats(); s.Allocs != 1 || s.InUse != 256 {
		t.Errorf("bad frees changed the counters: %+v", s)
	}
	mustCheck(t, a)
	if err := a.Free(other); err != nil {
		t.Fatal(err)
	}
}

func TestAccessorsPanic(t *testing.T) {
	a := newArena(t, MinSize)
	off, err := a.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	end := Offset(a.heapOff) + Offset(a.Size())
	for name, f := range map[string]func(){
		"Bytes past the end":   func() { a.Bytes(end-8, 16) },
		"Bytes into metadata":  func() { a.Bytes(0, 8) },
		"Uint32 unaligned":     func() { a.Uint32(off + 2) },
		"Uint64 unaligned":     func() { a.Uint64(off + 4) },
		"Uint64 past the end":  func() { a.Uint64(end) },
		"Bytes negative count": func() { a.Bytes(off, -1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
	}
	if got := len(a.Bytes(end-8, 8)); got != 8 {
		t.Errorf("last 8 bytes: got %d", got)
	}
}

func TestAttach(t *testing.T) {
	a := newArena(t, MinSize)
	off, err := a.Alloc(100)
	if err != nil {
		t.Fatal(err)
	}
	copy(a.Bytes(off, 5), "hello")
	fd, err := unix.FcntlInt(uintptr(a.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Attach(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if b.Fd() != fd || b.Size() != a.Size() {
		t.Errorf("attached arena: fd %d size %d, want %d %d", b.Fd(), b.Size(), fd, a.Size())
	}
	if got := string(b.Bytes(off, 5)); got != "hello" {
		t.Errorf("attached arena reads %q", got)
	}
	if err := b.Free(off); err != nil {
		t.Fatal(err)
	}
	if s := a.Stats(); s.Allocs != 0 {
		t.Errorf("free through the other mapping not seen: %+v", s)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if b.Fd() != -1 {
		t.Errorf("Fd after Close = %d", b.Fd())
	}
	mustCheck(t, a) // a's mapping survives b's Close
}

func TestAttachGarbage(t *testing.T) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	zeros, err := os.CreateTemp(t.TempDir(), "zeros")
	if err != nil {
		t.Fatal(err)
	}
	defer zeros.Close()
	if err := zeros.Truncate(2 << 20); err != nil {
		t.Fatal(err)
	}

	// An arena whose file was resized no longer matches its header.
	a := newArena(t, MinSize)
	truncated, err := unix.FcntlInt(uintptr(a.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(truncated)
	if err := unix.Ftruncate(truncated, int64(a.heapOff)+int64(a.Size())/2); err != nil {
		t.Fatal(err)
	}

	for name, fd := range map[string]int{
		"negative":    -1,
		"closed":      1 << 20,
		"/dev/null":   int(devNull.Fd()),
		"pipe":        int(r.Fd()),
		"zero file":   int(zeros.Fd()),
		"wrong size":  truncated,
		"directory":   dirFd(t),
		"empty memfd": emptyMemfd(t),
	} {
		if b, err := Attach(fd); err == nil {
			b.Close()
			t.Errorf("Attach(%s) succeeded", name)
		} else if !strings.HasPrefix(err.Error(), "shm: attach") {
			t.Errorf("Attach(%s): unclear error %q", name, err)
		}
	}
	// Attach leaves the fd to the caller on error.
	if _, err := unix.FcntlInt(devNull.Fd(), unix.F_GETFD, 0); err != nil {
		t.Errorf("Attach closed the fd it rejected: %v", err)
	}
}

func dirFd(t *testing.T) int {
	f, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

func emptyMemfd(t *testing.T) int {
	fd, err := unix.MemfdCreate("empty", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestCloseIdempotent(t *testing.T) {
	a, err := New(MinSize)
	if err != nil {
		t.Fatal(err)
	}
	fd := a.Fd()
	for range 2 {
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Errorf("fd %d still open after Close", fd)
	}
}

// hammer allocates and frees blocks of random sizes up to maxSize, keeping
// at most maxLive of them, for iters rounds (forever if iters is 0). Every
// block must be zero when handed out; it is then filled with a pattern
// unique to id and the block, which must be intact when it is freed, so any
// block handed out twice, to this or another goroutine or process, is
// caught. It frees everything before returning.
func hammer(a *Arena, id uint64, iters, maxLive, maxSize int, rng *rand.Rand) error {
	type block struct {
		off Offset
		n   int
	}
	var live []block
	pattern := func(off Offset, i int) uint64 { return id<<48 ^ uint64(off)<<8 ^ uint64(i) }
	release := func(i int) error {
		blk := live[i]
		live[i] = live[len(live)-1]
		live = live[:len(live)-1]
		for j := range blk.n / 8 {
			if got, want := *a.Uint64(blk.off + Offset(8*j)), pattern(blk.off, j); got != want {
				return fmt.Errorf("%d: block %#x word %d is %#x, want %#x: someone else wrote it", id, blk.off, j, got, want)
			}
		}
		return a.Free(blk.off)
	}
	for it := 0; iters == 0 || it < iters; it++ {
		if len(live) == maxLive || len(live) > 0 && rng.IntN(2) == 0 {
			if err := release(rng.IntN(len(live))); err != nil {
				return err
			}
			continue
		}
		// Mostly small blocks, some up to maxSize.
		n := 8 * (1 + rng.IntN(max(1, 1<<rng.IntN(bits.Len(uint(maxSize/8))))))
		n = min(n, maxSize)
		off, err := a.Alloc(n)
		if errors.Is(err, ErrNoSpace) && len(live) > 0 {
			if err := release(0); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		for i, c := range a.Bytes(off, blockSize(n)) {
			if c != 0 {
				return fmt.Errorf("%d: new block %#x of %d bytes has byte %d = %#x", id, off, blockSize(n), i, c)
			}
		}
		for j := range n / 8 {
			*a.Uint64(off + Offset(8*j)) = pattern(off, j)
		}
		live = append(live, block{off, n})
	}
	for len(live) > 0 {
		if err := release(0); err != nil {
			return err
		}
	}
	return nil
}

func TestConcurrentGoroutines(t *testing.T) {
	a := newArena(t, 4<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			errs <- hammer(a, uint64(g+1), 3000, 32, 8192, rand.New(rand.NewPCG(uint64(g), 5)))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if s := a.Stats(); s.InUse != 0 || s.Allocs != 0 {
		t.Errorf("after all goroutines freed everything: %+v", s)
	}
	mustCheck(t, a)
	if err := a.checkFreeZero(); err != nil {
		t.Error(err)
	}
}

// The deepest split and merge in a 1 GiB arena must stay within the bound
// that doc.go derives, which sizes the journal for the largest arena.
func TestJournalBound(t *testing.T) {
	a := newArena(t, 1<<30)
	// Fill the lists an allocation and free touch, so neighbour links are
	// written too: one free block of each order below the top.
	pin, err := a.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	var most uint64
	crashHook = func() { most = max(most, a.get(hdrJournalLen)) }
	defer func() { crashHook = nil }()
	off, err := a.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Free(pin); err != nil {
		t.Fatal(err)
	}
	if err := a.Free(off); err != nil {
		t.Fatal(err)
	}
	levels := uint64(30 - minOrder)
	if bound := 5*levels + 7; most > bound || most < levels {
		t.Errorf("journal reached %d entries, bound %d", most, bound)
	}
	t.Logf("journal reached %d entries for %d levels", most, levels)
	mustCheck(t, a)
}

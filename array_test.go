package mp_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp"
)

// arrayIncrementer adds 1 to every element of a, n times, each time under
// one Update: a read-modify-write of all elements at once.
func arrayIncrementer(a *mp.Array[int16], n int, start *mp.Event) error {
	start.Wait(context.Background())
	for range n {
		if err := a.Update(func(s []int16) {
			for i := range s {
				s[i]++
			}
		}); err != nil {
			return err
		}
	}
	return nil
}

// byteOwner is the only writer of a[i]: it sets it n times, checking each
// time that it reads back what it wrote, and that no neighbour's write in
// the same 32-bit word has undone its own.
func byteOwner(a *mp.Array[uint8], i, n int, start *mp.Event) error {
	start.Wait(context.Background())
	for k := range n {
		a.Set(i, uint8(k))
		if got := a.At(i); got != uint8(k) {
			return errors.New("element " + strconv.Itoa(i) + " changed under its only writer")
		}
	}
	return nil
}

// halfUpdate writes the first half of a, says so in a file, and blocks
// forever in the middle of the Update.
func halfUpdate(a *mp.Array[int64], flag string) error {
	return a.Update(func(s []int64) {
		for i := range s[:len(s)/2] {
			s[i] = -1
		}
		writeFile(flag, "held")
		select {}
	})
}

// bounceArray sets element 0 to 1 and sends the Array back through q.
func bounceArray(a *mp.Array[float32], q *mp.Queue[*mp.Array[float32]]) error {
	a.Set(0, 1)
	return q.Put(context.Background(), a)
}

func init() { mp.Register(arrayIncrementer, byteOwner, halfUpdate, bounceArray) }

func TestArrayBasics(t *testing.T) {
	a := mp.Must(mp.NewArray[int32](5))
	if a.Len() != 5 {
		t.Fatalf("Len = %d", a.Len())
	}
	got := make([]int32, 7)
	for i := range got {
		got[i] = 99
	}
	if n := a.CopyTo(got); n != 5 || !slicesEqual(got, []int32{0, 0, 0, 0, 0, 99, 99}) {
		t.Fatalf("CopyTo of a new Array: %d, %v", n, got)
	}
	a.Set(4, -7)
	if a.At(4) != -7 {
		t.Fatalf("At(4) = %d after Set(4, -7)", a.At(4))
	}
	if n := a.CopyFrom([]int32{1, 2, 3}); n != 3 {
		t.Fatalf("CopyFrom of 3 = %d", n)
	}
	if n := a.CopyFrom(make([]int32, 9)); n != 5 {
		t.Fatalf("CopyFrom of 9 into 5 = %d", n)
	}
	a.CopyFrom([]int32{1, 2, 3, 4, 5})
	if err := a.Update(func(s []int32) {
		if len(s) != 5 {
			t.Errorf("Update's slice has %d elements", len(s))
		}
		s[0], s[4] = s[4], s[0]
	}); err != nil {
		t.Fatal(err)
	}
	if n := a.CopyTo(got[:2]); n != 2 || got[0] != 5 || got[1] != 2 || a.At(4) != 1 {
		t.Fatalf("after the swap: CopyTo %d, %v, At(4) = %d", n, got[:2], a.At(4))
	}

	empty := mp.Must(mp.NewArray[bool](0))
	if empty.Len() != 0 || empty.CopyTo(make([]bool, 3)) != 0 {
		t.Fatal("an empty Array is not empty")
	}
	empty.Update(func(s []bool) {
		if len(s) != 0 {
			t.Errorf("Update of an empty Array: %d elements", len(s))
		}
	})

	a.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := a.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire of a locked Array = %v", err)
	}
	a.Set(0, 10) // Set does not take the lock
	a.Unlock()
	if a.At(0) != 10 {
		t.Fatal("Set under someone else's lock was lost")
	}
}

func TestArrayBadArguments(t *testing.T) {
	if _, err := mp.NewArray[int](-1); !errors.Is(err, mp.ErrBadArguments) {
		t.Errorf("NewArray(-1) = %v, want ErrBadArguments", err)
	}
	if _, err := mp.NewArray[int64](math.MaxInt / 4); !errors.Is(err, mp.ErrNoSpace) {
		t.Errorf("NewArray of 2^61 int64 = %v, want ErrNoSpace", err)
	}
	if _, err := mp.NewArray[int64](1 << 40); !errors.Is(err, mp.ErrNoSpace) {
		t.Errorf("NewArray of 8 TiB = %v, want ErrNoSpace", err)
	}
	if _, err := mp.NewArray[int](1, mp.WithLock(new(mp.Lock))); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Errorf("WithLock of a zero Lock: %v, want ErrInvalidHandle", err)
	}
	a := mp.Must(mp.NewArray[uint8](3))
	for _, i := range []int{-1, 3, math.MaxInt, math.MinInt} {
		for name, f := range map[string]func(){"At": func() { a.At(i) }, "Set": func() { a.Set(i, 1) }} {
			func() {
				defer func() {
					if r, _ := recover().(error); !errors.Is(r, mp.ErrOutOfRange) {
						t.Errorf("%s(%d) of 3: panic %v, want ErrOutOfRange", name, i, r)
					}
				}()
				f()
			}()
		}
	}
	if got := mp.Must(mp.NewArray[uint8](3)).CopyTo(make([]uint8, 3)); got != 3 {
		t.Fatal("a bad index broke the Array")
	}
}

// checkArray sets each element of an Array of T to each of values in turn
// and checks that every other element is left as it was.
func checkArray[T mp.Scalar](t *testing.T, values ...T) {
	t.Helper()
	const n = 9 // not a multiple of any word size: the last word is partial
	a := mp.Must(mp.NewArray[T](n))
	var zero T
	for i := range n {
		for _, x := range values {
			a.Set(i, x)
			if got := a.At(i); bitsOf(got) != bitsOf(x) {
				t.Fatalf("%T: At(%d) = %v after Set(%d, %v)", x, i, got, i, x)
			}
		}
		for j := range n {
			if j == i {
				continue
			}
			if got := a.At(j); bitsOf(got) != bitsOf(zero) {
				t.Fatalf("%T: element %d is %v after Sets of element %d", zero, j, got, i)
			}
		}
		a.Set(i, zero)
	}
	src := make([]T, n)
	for i := range src {
		src[i] = values[i%len(values)]
	}
	a.CopyFrom(src)
	dst := make([]T, n)
	a.CopyTo(dst)
	if !bytes.Equal(sliceBytes(src), sliceBytes(dst)) {
		t.Fatalf("%T: CopyFrom then CopyTo: %v, want %v", zero, dst, src)
	}
}

func sliceBytes[T any](s []T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(*new(T))))
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestArrayEveryType(t *testing.T) {
	checkArray(t, -1, math.MaxInt, math.MinInt)
	checkArray[int8](t, -1, math.MaxInt8, math.MinInt8)
	checkArray[int16](t, -1, math.MaxInt16, math.MinInt16)
	checkArray[int32](t, -1, math.MaxInt32, math.MinInt32)
	checkArray[int64](t, -1, math.MaxInt64, math.MinInt64)
	checkArray[uint](t, math.MaxUint, 1)
	checkArray[uint8](t, math.MaxUint8, 1)
	checkArray[uint16](t, math.MaxUint16, 1)
	checkArray[uint32](t, math.MaxUint32, 1)
	checkArray[uint64](t, math.MaxUint64, 1)
	checkArray[uintptr](t, ^uintptr(0), 1)
	checkArray(t, float32(math.Copysign(0, -1)), float32(math.NaN()), -1.5)
	checkArray(t, math.Copysign(0, -1), math.Float64frombits(0xfff8_0000_dead_beef), -1.5)
	checkArray(t, true)
}

// TestArrayAcrossProcesses: Updates from several processes and goroutines
// lose nothing, and neither do Sets of neighbouring bytes of one word.
func TestArrayAcrossProcesses(t *testing.T) {
	a := mp.Must(mp.NewArray[int16](7))
	const procs, goroutines, n = 3, 2, 1000
	owned := mp.Must(mp.NewArray[uint8](8))
	const sets = 20000
	start := mp.Must(mp.NewEvent())
	var ps []*mp.Process
	for i := range procs {
		ps = append(ps, mp.NewProcess(arrayIncrementer, a, n, start), mp.NewProcess(byteOwner, owned, i, sets, start))
	}
	for _, p := range ps {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	start.Set()
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			if err := arrayIncrementer(a, n, start); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			if err := byteOwner(owned, procs+i, sets, start); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, p := range ps {
		if err := join(t, p); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]int16, a.Len())
	a.CopyTo(got)
	for i, x := range got {
		if x != (procs+goroutines)*n {
			t.Fatalf("element %d = %d, want %d: %v", i, x, (procs+goroutines)*n, got)
		}
	}
	for i := range procs + goroutines {
		if got := owned.At(i); got != uint8((sets-1)%256) {
			t.Errorf("byte %d = %d, want its owner's last Set, %d", i, got, (sets-1)%256)
		}
	}
}

// TestArrayOwnerKilledInUpdate: the next Update after a process died in
// the middle of one reports ErrOwnerDied, and its function sees the half
// update, to repair it.
func TestArrayOwnerKilledInUpdate(t *testing.T) {
	a := mp.Must(mp.NewArray[int64](6))
	holder := startHolder(t, t.TempDir(), halfUpdate, a)
	holder.Kill()
	join(t, holder)
	var seen []int64
	err := a.Update(func(s []int64) {
		seen = append(seen, s...)
		clear(s)
	})
	if !errors.Is(err, mp.ErrOwnerDied) {
		t.Fatalf("Update after the holder died = %v, want ErrOwnerDied", err)
	}
	if !slicesEqual(seen, []int64{-1, -1, -1, 0, 0, 0}) {
		t.Fatalf("the repairing Update saw %v", seen)
	}
	if err := a.Update(func([]int64) {}); err != nil {
		t.Fatalf("Update after the repair: %v", err)
	}
	if a.At(0) != 0 {
		t.Fatal("the repair was lost")
	}
}

func TestArrayUpdatePanics(t *testing.T) {
	a := mp.Must(mp.NewArray[int](2))
	func() {
		defer func() { recover() }()
		a.Update(func(s []int) {
			s[0] = 1
			panic("in Update")
		})
	}()
	if err := a.Update(func(s []int) { s[1] = 2 }); err != nil || a.At(0) != 1 || a.At(1) != 2 {
		t.Fatalf("after a panic in Update: %v, %d %d", err, a.At(0), a.At(1))
	}
}

func TestArrayHandleThroughChild(t *testing.T) {
	a := mp.Must(mp.NewArray[float32](2))
	q := mp.Must(mp.NewQueue[*mp.Array[float32]](1))
	p := mp.NewProcess(bounceArray, a, q)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	back, err := q.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	back.Set(1, 2)
	if a.At(0) != 1 || a.At(1) != 2 || back.Len() != 2 {
		t.Fatalf("after the child's Set and one here: %v %v", a.At(0), a.At(1))
	}
	b, _ := a.MarshalBinary()
	var wrong mp.Array[float64]
	if err := wrong.UnmarshalBinary(b); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("an Array[float32] decoded as an Array[float64]: %v", err)
	}
}

// TestArrayZeroedOnReuse: a new Array is zero even in memory that held
// something else. A Dict value is written into the arena and deleted, which
// frees its block; Arrays of the same block size are made until one is in
// that memory (found through the arena's memfd and this process's mapping
// of it), and it must read as zeros.
func TestArrayZeroedOnReuse(t *testing.T) {
	const size = 3000 // a 4 KiB block, for the Dict's record and the Array alike
	pattern := bytes.Repeat([]byte("stale-array-data"), size/16)
	d := mp.Must(mp.NewDict[string, []byte]())
	if err := d.Set("k", pattern); err != nil {
		t.Fatal(err)
	}
	arena, start := arenaMapping(t)
	defer arena.Close()
	at := findInFile(t, arena, pattern)
	if at < 0 {
		t.Fatal("the Dict's value is not in the arena")
	}
	if _, err := d.Delete("k"); err != nil {
		t.Fatal(err)
	}
	// The freed block comes back once the free blocks of its size that
	// other tests left ahead of it on the allocator's list are used up.
	for try := range 1024 {
		a := mp.Must(mp.NewArray[byte](size))
		var addr uintptr
		a.Update(func(s []byte) { addr = uintptr(unsafe.Pointer(&s[0])) })
		if off := int64(addr - start); off >= at+int64(len(pattern)) || at >= off+size {
			continue
		}
		got := make([]byte, size)
		a.CopyTo(got)
		if !bytes.Equal(got, make([]byte, size)) {
			t.Fatalf("a new Array in freed memory holds %q", bytes.Trim(got, "\x00"))
		}
		t.Logf("Array %d is where the Dict's value was, and is zero", try+1)
		return
	}
	t.Skip("1024 new Arrays, and none reused the freed block: nothing to check")
}

// arenaMapping opens the tree's arena memfd and returns it with the
// address at which this process maps its offset 0.
func arenaMapping(t *testing.T) (*os.File, uintptr) {
	t.Helper()
	const name = "/memfd:multiproc-arena"
	var f *os.File
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if target, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(target, name) {
			var err error
			if f, err = os.Open("/proc/self/fd/" + e.Name()); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if f == nil {
		t.Fatal("no arena among this process's descriptors")
	}
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], name) {
			continue
		}
		lo, _, _ := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		off, err2 := strconv.ParseUint(fields[2], 16, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad line in /proc/self/maps: %s", sc.Text())
		}
		return f, uintptr(start - off)
	}
	f.Close()
	t.Fatal("the arena is not mapped")
	return nil, 0
}

// findInFile returns the offset of pat in f, reading only the parts of the
// sparse file that hold data, or -1.
func findInFile(t *testing.T, f *os.File, pat []byte) int64 {
	t.Helper()
	fd := int(f.Fd())
	buf := make([]byte, 1<<20)
	for pos := int64(0); ; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err != nil {
			return -1 // ENXIO: no data past pos
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		for at := data; at < hole; at += int64(len(buf) - len(pat)) {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-at)], at)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if i := bytes.Index(buf[:n], pat); i >= 0 {
				return at + int64(i)
			}
			if at+int64(n) >= hole {
				break
			}
		}
		pos = hole
	}
}

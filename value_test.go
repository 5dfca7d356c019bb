package mp_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/multiproc/mp"
)

// counters is what valueAdder adds to: one Value per way Add works (a
// hardware add, a compare-and-swap of a float's bits, and of a byte inside
// its word).
type counters struct {
	I *mp.Value[int64]
	F *mp.Value[float64]
	B *mp.Value[int8]
}

// valueAdder adds 1 to each counter n times, and n times to locked under
// its lock, by a read and a write: a compound update that only the lock
// makes atomic. It starts when start is set, so that all the writers of a
// test overlap.
func valueAdder(c counters, locked *mp.Value[int64], n int, start *mp.Event) error {
	start.Wait(context.Background())
	for range n {
		c.I.Add(1)
		c.F.Add(1)
		c.B.Add(1)
		locked.Lock()
		locked.Store(locked.Load() + 1)
		locked.Unlock()
	}
	return nil
}

// holdValueLock takes v's lock, says so in a file, and blocks forever.
func holdValueLock(v *mp.Value[int64], flag string) error {
	v.Lock()
	v.Store(-1) // half of an update that the next holder must repair
	writeFile(flag, "held")
	select {}
}

// bounceValue adds 1 to v and sends it back through q: the handle makes a
// round trip through a child's decoder and encoder.
func bounceValue(v *mp.Value[int64], q *mp.Queue[*mp.Value[int64]]) error {
	v.Add(1)
	return q.Put(context.Background(), v)
}

func init() { mp.Register(valueAdder, holdValueLock, bounceValue) }

// bitsOf returns x's memory, to compare values bit for bit.
func bitsOf[T any](x T) string {
	return string(unsafe.Slice((*byte)(unsafe.Pointer(&x)), unsafe.Sizeof(x)))
}

// checkValue stores and loads each of values in a Value of T, comparing
// representations, so that a NaN and -0 must come back bit for bit.
func checkValue[T mp.Scalar](t *testing.T, values ...T) {
	t.Helper()
	v, err := mp.NewValue(values[0])
	if err != nil {
		t.Fatal(err)
	}
	same := func(a, b T) bool { return bitsOf(a) == bitsOf(b) }
	if got := v.Load(); !same(got, values[0]) {
		t.Fatalf("%T: NewValue(%v).Load() = %v", got, values[0], got)
	}
	prev := values[0]
	for _, x := range values[1:] {
		if old := v.Swap(x); !same(old, prev) {
			t.Fatalf("%T: Swap(%v) returned %v, want %v", x, x, old, prev)
		}
		if got := v.Load(); !same(got, x) {
			t.Fatalf("%T: Load after Swap(%v) = %v", x, x, got)
		}
		v.Store(prev)
		if !v.CompareAndSwap(prev, x) || !same(v.Load(), x) {
			t.Fatalf("%T: CompareAndSwap(%v, %v) failed", x, prev, x)
		}
		if !same(prev, x) && v.CompareAndSwap(prev, x) {
			t.Fatalf("%T: CompareAndSwap(%v, ...) succeeded on %v", x, prev, x)
		}
		prev = x
	}
}

func TestValueEveryType(t *testing.T) {
	nan64 := math.Float64frombits(0xfff8_0000_dead_beef) // negative, with a payload
	nan32 := math.Float32frombits(0x7fc0_1234)
	checkValue(t, 0, -1, math.MaxInt, math.MinInt, 42)
	checkValue[int8](t, 0, -1, math.MaxInt8, math.MinInt8)
	checkValue[int16](t, 0, -1, math.MaxInt16, math.MinInt16)
	checkValue[int32](t, 0, -1, math.MaxInt32, math.MinInt32)
	checkValue[int64](t, 0, -1, math.MaxInt64, math.MinInt64)
	checkValue[uint](t, 0, math.MaxUint, 1)
	checkValue[uint8](t, 0, math.MaxUint8, 1)
	checkValue[uint16](t, 0, math.MaxUint16, 1)
	checkValue[uint32](t, 0, math.MaxUint32, 1)
	checkValue[uint64](t, 0, math.MaxUint64, 1)
	checkValue[uintptr](t, 0, ^uintptr(0), 1)
	checkValue(t, float32(0), float32(math.Copysign(0, -1)), -1.5, math.MaxFloat32, -math.SmallestNonzeroFloat32, nan32, float32(math.Inf(-1)))
	checkValue(t, 0.0, math.Copysign(0, -1), -1.5, math.MaxFloat64, -math.SmallestNonzeroFloat64, nan64, math.Inf(1))
	checkValue(t, false, true, false)
	checkValue(t, time.Duration(0), -time.Hour, time.Duration(math.MinInt64))
}

func TestValueAdd(t *testing.T) {
	i8 := mp.Must(mp.NewValue[int8](math.MaxInt8))
	if got := i8.Add(1); got != math.MinInt8 {
		t.Errorf("int8 127 + 1 = %d, want -128 (wrapped)", got)
	}
	if got := i8.Add(-3); got != math.MaxInt8-2 {
		t.Errorf("int8 -128 - 3 = %d, want 125 (wrapped)", got)
	}
	u16 := mp.Must(mp.NewValue[uint16](1))
	if got := u16.Add(math.MaxUint16); got != 0 {
		t.Errorf("uint16 1 + 65535 = %d, want 0", got)
	}
	i := mp.Must(mp.NewValue(-10))
	if got := i.Add(-5); got != -15 || i.Load() != -15 {
		t.Errorf("int -10 - 5 = %d (Load %d)", got, i.Load())
	}
	f := mp.Must(mp.NewValue(float32(1.5)))
	if got := f.Add(-4); got != -2.5 {
		t.Errorf("float32 1.5 - 4 = %v", got)
	}
	d := mp.Must(mp.NewValue(time.Second))
	if got := d.Add(-2 * time.Second); got != -time.Second {
		t.Errorf("Duration 1s - 2s = %v", got)
	}

	b := mp.Must(mp.NewValue(true))
	defer func() {
		if r, _ := recover().(error); !errors.Is(r, mp.ErrNotSupported) {
			t.Errorf("Add on a Value[bool]: panic %v, want ErrNotSupported", r)
		}
		if !b.Load() {
			t.Error("the failed Add changed the bool")
		}
	}()
	b.Add(true)
}

// TestValueCompareAndSwapComparesBits: a CAS loop that read a NaN must be
// able to replace it, and -0 is not 0.
func TestValueCompareAndSwapComparesBits(t *testing.T) {
	nan := math.NaN()
	v := mp.Must(mp.NewValue(nan))
	if !v.CompareAndSwap(nan, 1) {
		t.Fatal("CompareAndSwap(NaN, 1) of a NaN failed")
	}
	v.Store(math.Copysign(0, -1))
	if v.CompareAndSwap(0, 1) {
		t.Fatal("CompareAndSwap(0, 1) of -0 succeeded")
	}
	if !v.CompareAndSwap(math.Copysign(0, -1), 1) || v.Load() != 1 {
		t.Fatal("CompareAndSwap(-0, 1) of -0 failed")
	}
}

// TestValueAcrossProcesses: processes and goroutines adding to the same
// Values lose no update, whichever way Add works, and neither do compound
// updates under the Value's lock.
func TestValueAcrossProcesses(t *testing.T) {
	c := counters{I: mp.Must(mp.NewValue[int64](0)), F: mp.Must(mp.NewValue(0.0)), B: mp.Must(mp.NewValue[int8](0))}
	locked := mp.Must(mp.NewValue[int64](0))
	const procs, goroutines, n = 4, 2, 3000
	start := mp.Must(mp.NewEvent())
	var ps []*mp.Process
	for range procs {
		ps = append(ps, mp.NewProcess(valueAdder, c, locked, n, start))
	}
	for _, p := range ps {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	start.Set()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() { valueAdder(c, locked, n, start) })
	}
	wg.Wait()
	for _, p := range ps {
		if err := join(t, p); err != nil {
			t.Fatal(err)
		}
	}
	const want = (procs + goroutines) * n
	if got := c.I.Load(); got != want {
		t.Errorf("int64: %d, want %d", got, want)
	}
	if got := c.F.Load(); got != want {
		t.Errorf("float64: %v, want %d", got, want)
	}
	if got := c.B.Load(); got != int8(want%256) {
		t.Errorf("int8: %d, want %d", got, int8(want%256))
	}
	if got := locked.Load(); got != want {
		t.Errorf("under the lock: %d, want %d", got, want)
	}
}

// TestValueOwnerKilled: a process killed holding a Value's lock, in the
// middle of an update, leaves the lock to the next Acquire with
// ErrOwnerDied, and the Value usable.
func TestValueOwnerKilled(t *testing.T) {
	v := mp.Must(mp.NewValue[int64](10))
	holder := startHolder(t, t.TempDir(), holdValueLock, v)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := v.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire of a lock held by a live process = %v, want DeadlineExceeded", err)
	}
	holder.Kill()
	join(t, holder)
	if err := v.Acquire(context.Background()); !errors.Is(err, mp.ErrOwnerDied) {
		t.Fatalf("Acquire after the holder was killed = %v, want ErrOwnerDied", err)
	}
	if v.Load() == -1 {
		v.Store(10) // the repair
	}
	if got := v.Add(1); got != 11 {
		t.Fatalf("Add after the repair = %d", got)
	}
	if err := v.Release(); err != nil {
		t.Fatal(err)
	}
	if err := v.Release(); !errors.Is(err, mp.ErrNotAcquired) {
		t.Fatalf("second Release = %v, want ErrNotAcquired", err)
	}
	v.Lock()
	v.Unlock()
}

// TestValueWithLock: Values and Arrays made with one Lock share it, here
// and in a child process that received them.
func TestValueWithLock(t *testing.T) {
	l := mp.Must(mp.NewLock())
	v := mp.Must(mp.NewValue[int64](0, mp.WithLock(l)))
	a := mp.Must(mp.NewArray[int16](3, mp.WithLock(l)))
	own := mp.Must(mp.NewValue[int64](0))

	l.Lock()
	for name, acquire := range map[string]func(context.Context) error{"Value": v.Acquire, "Array": a.Acquire} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		if err := acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s.Acquire with its Lock held = %v, want DeadlineExceeded", name, err)
		}
		cancel()
	}
	own.Lock() // a Value without the option has a lock of its own
	own.Unlock()
	l.Unlock()
	v.Lock()
	if l.TryAcquire() {
		t.Fatal("the Lock was free while its Value was locked")
	}
	v.Unlock()

	holder := startHolder(t, t.TempDir(), holdValueLock, v)
	if l.TryAcquire() {
		t.Fatal("the Lock was free while a child held its Value's lock")
	}
	holder.Kill()
	join(t, holder)
	if err := a.Acquire(context.Background()); !errors.Is(err, mp.ErrOwnerDied) {
		t.Fatalf("the Array's Acquire after the Value's holder died = %v, want ErrOwnerDied", err)
	}
	a.Release()
}

// TestValueHandleThroughChild: a Value sent to a child and sent back is
// the same Value.
func TestValueHandleThroughChild(t *testing.T) {
	v := mp.Must(mp.NewValue[int64](41))
	q := mp.Must(mp.NewQueue[*mp.Value[int64]](1))
	p := mp.NewProcess(bounceValue, v, q)
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
	if back.Add(1) != 43 || v.Load() != 43 {
		t.Fatalf("after a child's Add and one here: %d", v.Load())
	}
	back.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := v.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire while the returned Value is locked = %v: it has a lock of its own", err)
	}
	back.Unlock()
}

func TestValueHandles(t *testing.T) {
	v := mp.Must(mp.NewValue[int32](7))
	b, err := v.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var same mp.Value[int32]
	if err := same.UnmarshalBinary(b); err != nil || same.Load() != 7 {
		t.Fatalf("UnmarshalBinary: %v, %d", err, same.Load())
	}
	var wide mp.Value[int64]
	if err := wide.UnmarshalBinary(b); !errors.Is(err, mp.ErrInvalidHandle) || !strings.Contains(err.Error(), "int64") {
		t.Fatalf("a Value[int32] decoded as a Value[int64]: %v", err)
	}
	arr, _ := mp.Must(mp.NewArray[int32](1)).MarshalBinary()
	if err := same.UnmarshalBinary(arr); !errors.Is(err, mp.ErrInvalidHandle) || !strings.Contains(err.Error(), "Array") {
		t.Fatalf("an Array's handle decoded as a Value: %v", err)
	}
	if same.Load() != 7 {
		t.Fatal("a failed UnmarshalBinary changed its receiver")
	}
	if _, err := mp.NewValue(0, mp.WithLock(new(mp.Lock))); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("WithLock of a zero Lock: %v, want ErrInvalidHandle", err)
	}
	if _, err := mp.NewValue(0, mp.WithLock(nil)); err != nil {
		t.Fatalf("WithLock(nil): %v", err)
	}
}

// TestValueIsSeenBySyncTools: data published with a Store and read after a
// Load of it is ordered; under -race this also checks that the race
// detector sees the ordering (it ignores atomics on shared memory).
func TestValueIsSeenBySyncTools(t *testing.T) {
	v := mp.Must(mp.NewValue(false))
	msg := ""
	go func() {
		msg = "hello"
		v.Store(true)
	}()
	for !v.Load() {
		time.Sleep(time.Microsecond)
	}
	if msg != "hello" {
		t.Fatalf("msg = %q", msg)
	}

	n := mp.Must(mp.NewValue(0))
	go func() {
		msg = "again"
		n.Add(1)
	}()
	for !n.CompareAndSwap(1, 2) {
		time.Sleep(time.Microsecond)
	}
	if msg != "again" {
		t.Fatalf("msg = %q", msg)
	}

	a := mp.Must(mp.NewArray[uint8](3))
	go func() {
		msg = "array"
		a.Set(1, 1)
	}()
	for a.At(1) == 0 {
		time.Sleep(time.Microsecond)
	}
	if msg != "array" {
		t.Fatalf("msg = %q", msg)
	}
}

func TestZeroSharedPrimitivesAreRefused(t *testing.T) {
	for name, f := range map[string]func(){
		"Value":        func() { new(mp.Value[int]).Load() },
		"Value.Lock":   func() { new(mp.Value[int]).Lock() },
		"Array":        func() { new(mp.Array[int]).Len() },
		"Array.At":     func() { new(mp.Array[int]).At(0) },
		"SharedMemory": func() { new(mp.SharedMemory).Bytes() },
		"Close":        func() { new(mp.SharedMemory).Close() },
	} {
		func() {
			defer func() {
				if r, _ := recover().(error); !errors.Is(r, mp.ErrInvalidHandle) {
					t.Errorf("zero %s: panic %v, want ErrInvalidHandle", name, r)
				}
			}()
			f()
		}()
	}
	for name, m := range map[string]interface{ MarshalBinary() ([]byte, error) }{
		"Value": new(mp.Value[int]), "Array": new(mp.Array[int]), "SharedMemory": new(mp.SharedMemory),
	} {
		if _, err := m.MarshalBinary(); !errors.Is(err, mp.ErrInvalidHandle) {
			t.Errorf("zero %s: MarshalBinary = %v, want ErrInvalidHandle", name, err)
		}
	}
	var v mp.Value[int]
	if err := v.UnmarshalBinary([]byte("garbage")); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("UnmarshalBinary(garbage) = %v", err)
	}
	lb, _ := mp.Must(mp.NewLock()).MarshalBinary()
	if err := v.UnmarshalBinary(lb); !errors.Is(err, mp.ErrInvalidHandle) || !strings.Contains(err.Error(), "Lock") {
		t.Fatalf("a Lock's handle decoded as a Value: %v", err)
	}
}

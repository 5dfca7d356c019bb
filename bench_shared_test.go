package mp_test

import (
	"context"
	"testing"

	"github.com/multiproc/mp"
)

// The shared-state benchmarks. Python's Value needs its lock for an
// increment (`with v.get_lock(): v.value += 1`, about 0.3 µs uncontended);
// here an increment is one atomic instruction on shared memory, and the
// two-process figures measure what the processors charge for handing the
// cache line back and forth.

func init() { mp.Register(benchValueAdder, benchFloatAdder) }

// benchValueAdder adds 1 to v n times once start is set.
func benchValueAdder(v *mp.Value[int64], n int, ready, start, done *mp.Event) error {
	ready.Set()
	if err := start.Wait(context.Background()); err != nil {
		return err
	}
	for range n {
		v.Add(1)
	}
	done.Set()
	return nil
}

// benchFloatAdder is benchValueAdder for a float, added by compare-and-swap.
func benchFloatAdder(v *mp.Value[float64], n int, ready, start, done *mp.Event) error {
	ready.Set()
	if err := start.Wait(context.Background()); err != nil {
		return err
	}
	for range n {
		v.Add(1)
	}
	done.Set()
	return nil
}

// BenchmarkValueAdd is two processes, this one and a child, adding 1 to one
// Value as fast as they can, b.N Adds between them: ns/op is the time per
// atomic Add under contention from another process. "int64" is a hardware
// atomic add; "float64" a compare-and-swap loop, which retries when the
// other process got in between. %interleaved is the share of this
// process's Adds that found Adds of the other since its previous one: how
// much the two really ran at once, rather than in turns on a busy machine.
func BenchmarkValueAdd(b *testing.B) {
	b.Run("int64", func(b *testing.B) {
		v := mp.Must(mp.NewValue[int64](0))
		benchAdd(b, v, benchValueAdder)
	})
	b.Run("float64", func(b *testing.B) {
		v := mp.Must(mp.NewValue(0.0))
		benchAdd(b, v, benchFloatAdder)
	})
}

func benchAdd[T int64 | float64](b *testing.B, v *mp.Value[T], partner any) {
	ready, start, done := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	mine := b.N / 2
	p := startChild(b, ready, partner, v, b.N-mine, ready, start, done)
	interleaved, last := 0, T(0)
	b.ResetTimer()
	start.Set()
	for range mine {
		n := v.Add(1)
		if n != last+1 {
			interleaved++
		}
		last = n
	}
	if err := done.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	joinChild(b, p)
	if mine > 0 {
		b.ReportMetric(100*float64(interleaved)/float64(mine), "%interleaved")
	}
	if got := v.Load(); got != T(b.N) {
		b.Fatalf("%v after %d Adds", got, b.N)
	}
}

// BenchmarkValueAddUncontended is BenchmarkValueAdd's floor: one goroutine
// adding, the cache line never leaving its core.
func BenchmarkValueAddUncontended(b *testing.B) {
	v := mp.Must(mp.NewValue[int64](0))
	for b.Loop() {
		v.Add(1)
	}
}

// BenchmarkValueLockedUpdate is Python's `with v.get_lock(): v.value += 1`:
// a compound update under the Value's lock, uncontended.
func BenchmarkValueLockedUpdate(b *testing.B) {
	v := mp.Must(mp.NewValue[int64](0))
	for b.Loop() {
		v.Lock()
		v.Store(v.Load() + 1)
		v.Unlock()
	}
}

// BenchmarkArraySetAt sets and reads back one element: a plain atomic
// store for an int64, a compare-and-swap of the surrounding word for a
// byte.
func BenchmarkArraySetAt(b *testing.B) {
	b.Run("int64", func(b *testing.B) { benchSetAt(b, mp.Must(mp.NewArray[int64](64))) })
	b.Run("uint8", func(b *testing.B) { benchSetAt(b, mp.Must(mp.NewArray[uint8](64))) })
}

func benchSetAt[T int64 | uint8](b *testing.B, a *mp.Array[T]) {
	i := 0
	for b.Loop() {
		a.Set(i&63, T(i))
		if a.At(i&63) != T(i) {
			b.Fatal("lost a Set")
		}
		i++
	}
}

// BenchmarkArrayCopyTo copies 4096 int64 (32 KiB) out under the lock.
func BenchmarkArrayCopyTo(b *testing.B) {
	a := mp.Must(mp.NewArray[int64](4096))
	dst := make([]int64, a.Len())
	b.SetBytes(int64(8 * len(dst)))
	for b.Loop() {
		a.CopyTo(dst)
	}
}

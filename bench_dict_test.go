package mp_test

import (
	"context"
	"testing"

	"github.com/multiproc/mp"
)

// The Dict benchmarks. CPython's Manager dict takes 85-104 µs for a
// read-modify-write here (a round trip to the manager's server process);
// ours is a lock and a few hundred bytes of work in shared memory.

func init() { mp.Register(benchDictHammer) }

// benchDictHammer increments d["count"] n times once start is set.
func benchDictHammer(d *mp.Dict[string, int], n int, ready, start, done *mp.Event) error {
	ready.Set()
	if err := start.Wait(context.Background()); err != nil {
		return err
	}
	for range n {
		if err := d.Update("count", incr); err != nil {
			return err
		}
	}
	done.Set()
	return nil
}

func incr(old int, _ bool) (int, bool) { return old + 1, true }

// BenchmarkDictUpdate is two processes, this one and a child, incrementing
// one key with Update as fast as they can, b.N updates between them: ns/op
// is the time per atomic read-modify-write. Target: 1 µs.
func BenchmarkDictUpdate(b *testing.B) {
	d := mp.Must(mp.NewDict[string, int]())
	ready, start, done := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	mine := b.N / 2
	p := startChild(b, ready, benchDictHammer, d, b.N-mine, ready, start, done)
	b.ResetTimer()
	start.Set()
	for range mine {
		if err := d.Update("count", incr); err != nil {
			b.Fatal(err)
		}
	}
	if err := done.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	joinChild(b, p)
	if v, _, _ := d.Get("count"); v != b.N {
		b.Fatalf("count = %d after %d updates", v, b.N)
	}
}

// BenchmarkDictGet reads a small value from a Dict of 1,000 keys.
func BenchmarkDictGet(b *testing.B) {
	d := mp.Must(mp.NewDict[string, int]())
	for i := range 1000 {
		d.Set(string(rune('a'+i%26))+string(rune(i)), i)
	}
	d.Set("count", 42)
	for b.Loop() {
		if v, ok, err := d.Get("count"); v != 42 || !ok || err != nil {
			b.Fatal(v, ok, err)
		}
	}
}

// BenchmarkDictSet replaces a small value.
func BenchmarkDictSet(b *testing.B) {
	d := mp.Must(mp.NewDict[string, int]())
	for b.Loop() {
		if err := d.Set("count", 42); err != nil {
			b.Fatal(err)
		}
	}
}

package mp_test

import (
	"context"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

func identity(x int) int { return x }

func init() { mp.Register(identity) }

func benchPool(b *testing.B) *mp.Pool {
	b.Helper()
	p, err := mp.NewPool(2)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Terminate)
	// Workers are started: a first task proves it before timing.
	if _, err := mp.Apply[int](context.Background(), p, identity, 0); err != nil {
		b.Fatal(err)
	}
	return p
}

func benchItems(n int) []int {
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	return items
}

func reportTasks(b *testing.B, n int, start time.Time) {
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "tasks/s")
}

// BenchmarkPoolMapChunk1: Map of a trivial function over b.N items, one
// item per task, 2 worker processes (CPython: 37,500 tasks/s here).
func BenchmarkPoolMapChunk1(b *testing.B) {
	p := benchPool(b)
	items := benchItems(b.N)
	b.ResetTimer()
	start := time.Now()
	if _, err := mp.Map[int](context.Background(), p, identity, items, mp.WithChunkSize(1)); err != nil {
		b.Fatal(err)
	}
	reportTasks(b, b.N, start)
}

// BenchmarkPoolMap: the same with the default chunk size (CPython: 4.2 M
// tasks/s here).
func BenchmarkPoolMap(b *testing.B) {
	p := benchPool(b)
	items := benchItems(b.N)
	b.ResetTimer()
	start := time.Now()
	if _, err := mp.Map[int](context.Background(), p, identity, items); err != nil {
		b.Fatal(err)
	}
	reportTasks(b, b.N, start)
}

// BenchmarkPoolApplyAsync: b.N ApplyAsync calls, then every Get (CPython:
// 29,000 tasks/s here).
func BenchmarkPoolApplyAsync(b *testing.B) {
	p := benchPool(b)
	rs := make([]*mp.AsyncResult[int], b.N)
	b.ResetTimer()
	start := time.Now()
	for i := range rs {
		rs[i] = mp.ApplyAsync[int](p, identity, []any{i})
	}
	ctx := context.Background()
	for _, r := range rs {
		if _, err := r.Get(ctx); err != nil {
			b.Fatal(err)
		}
	}
	reportTasks(b, b.N, start)
}

// BenchmarkPoolApply: one synchronous round trip to a worker per op.
func BenchmarkPoolApply(b *testing.B) {
	p := benchPool(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := mp.Apply[int](ctx, p, identity, i); err != nil {
			b.Fatal(err)
		}
	}
}

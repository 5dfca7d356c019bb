package ring

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// benchProcs sends b.N messages of size bytes from a producer process to
// the parent, consuming, through a ring of capacity cells holding inline
// bytes inline.
func benchProcs(b *testing.B, size, capacity, inline int) {
	a := newArena(b, 64<<20)
	r := newRing(b, a, capacity, inline)
	p := start(b, a, "bench-produce", fmt.Sprint(r.Offset(), 0, b.N, size), true)
	ctx := timeout(b)
	b.SetBytes(int64(size))
	b.ResetTimer()
	t0 := time.Now()
	p.goAhead()
	var buf []byte
	var err error
	for range b.N {
		if buf, err = r.Get(ctx, buf); err != nil {
			b.Fatal(err)
		}
	}
	el := time.Since(t0)
	b.StopTimer()
	if p.wait(b) {
		b.Fatal("producer killed")
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}

// BenchmarkRingSmall: 8-byte messages, one producer process to one
// consumer process.
func BenchmarkRingSmall(b *testing.B) { benchProcs(b, 8, 1024, DefaultInline) }

// BenchmarkRing4K: 4 KiB messages, one producer process to one consumer
// process, in cells big enough for them and out of line.
func BenchmarkRing4K(b *testing.B) {
	b.Run("inline", func(b *testing.B) { benchProcs(b, 4096, 256, 4096) })
	b.Run("out-of-line", func(b *testing.B) { benchProcs(b, 4096, 256, DefaultInline) })
}

// BenchmarkRingGoroutines: 8-byte messages between goroutines of one
// process, p producers and as many consumers.
func BenchmarkRingGoroutines(b *testing.B) {
	for _, p := range []int{1, 4} {
		b.Run(fmt.Sprintf("%dx%d", p, p), func(b *testing.B) {
			a := newArena(b, 4<<20)
			r := newRing(b, a, 1024, DefaultInline)
			ctx := timeout(b)
			msg := make([]byte, 8)
			b.ResetTimer()
			t0 := time.Now()
			var wg sync.WaitGroup
			for i := range p {
				n := b.N / p
				if i == 0 {
					n += b.N % p
				}
				wg.Go(func() {
					for range n {
						if err := r.Put(ctx, msg); err != nil {
							b.Error(err)
							return
						}
					}
				})
				wg.Go(func() {
					var buf []byte
					var err error
					for range n {
						if buf, err = r.Get(ctx, buf); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			el := time.Since(t0)
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
		})
	}
}

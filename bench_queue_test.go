package mp_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// benchProduceInts puts n ints on q.
func benchProduceInts(q *mp.Queue[int], n int) error {
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if err := q.Put(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

func benchProduceBytes(q *mp.Queue[[]byte], n, size int) error {
	ctx := context.Background()
	msg := make([]byte, size)
	for i := 0; i < n; i++ {
		if err := q.Put(ctx, msg); err != nil {
			return err
		}
	}
	return nil
}

// benchConsumeInts takes n ints from q.
func benchConsumeInts(q *mp.Queue[int], n int) error {
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if _, err := q.Get(ctx); err != nil {
			return err
		}
	}
	return nil
}

func init() { mp.Register(benchProduceInts, benchProduceBytes, benchConsumeInts) }

func reportRate(b *testing.B, n int, start time.Time) {
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkQueueSmall: one producer process -> one consumer (this process),
// int items.
func BenchmarkQueueSmall(b *testing.B) {
	q := mp.Must(mp.NewQueue[int](1024))
	p := mp.NewProcess(benchProduceInts, q, b.N)
	b.ResetTimer()
	start := time.Now()
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	if err := benchConsumeInts(q, b.N); err != nil {
		b.Fatal(err)
	}
	reportRate(b, b.N, start)
	b.StopTimer()
	if err := p.Join(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkQueue4K: one producer process -> one consumer, 4 KiB []byte.
// "Get" takes each item as a new slice, as most programs do; "GetInto"
// copies each into the same buffer, which shows the cost of the queue
// without that of allocating 4 KiB per item in Go.
func BenchmarkQueue4K(b *testing.B) {
	b.Run("Get", func(b *testing.B) {
		bench4K(b, func(q *mp.Queue[[]byte], _ []byte) ([]byte, error) {
			return q.Get(context.Background())
		})
	})
	b.Run("GetInto", func(b *testing.B) {
		bench4K(b, func(q *mp.Queue[[]byte], buf []byte) ([]byte, error) {
			err := q.GetInto(context.Background(), &buf)
			return buf, err
		})
	})
}

// bench4K takes b.N items with get, which is given the last item taken.
func bench4K(b *testing.B, get func(q *mp.Queue[[]byte], last []byte) ([]byte, error)) {
	q := mp.Must(mp.NewQueue[[]byte](1024))
	p := mp.NewProcess(benchProduceBytes, q, b.N, 4096)
	b.SetBytes(4096)
	b.ResetTimer()
	start := time.Now()
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	var item []byte
	for i := 0; i < b.N; i++ {
		var err error
		if item, err = get(q, item); err != nil {
			b.Fatal(err)
		}
		if len(item) != 4096 {
			b.Fatalf("item %d has %d bytes", i, len(item))
		}
	}
	reportRate(b, b.N, start)
	b.StopTimer()
	if err := p.Join(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkQueueMPMC: two producer processes -> two consumer processes.
func BenchmarkQueueMPMC(b *testing.B) {
	q := mp.Must(mp.NewQueue[int](1024))
	n := b.N / 2 * 2
	var ps []*mp.Process
	for i := 0; i < 2; i++ {
		ps = append(ps, mp.NewProcess(benchProduceInts, q, n/2), mp.NewProcess(benchConsumeInts, q, n/2))
	}
	b.ResetTimer()
	start := time.Now()
	for _, p := range ps {
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range ps {
		if err := p.Join(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, n, start)
}

// benchPipeEcho sends back every message it receives, until EOF.
func benchPipeEcho(c *mp.Conn, ready *mp.Event) error {
	ctx := context.Background()
	ready.Set()
	for {
		msg, err := c.RecvBytes(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.SendBytes(msg); err != nil {
			return err
		}
	}
}

func init() { mp.Register(benchPipeEcho) }

// BenchmarkPipeRoundTrip sends a 64-byte message to a child process, which
// sends it back; ns/op is one round trip. Its floor is
// BenchmarkFutexPingPong (CPython's Pipe: 48 µs here).
func BenchmarkPipeRoundTrip(b *testing.B) {
	b.Run("idle", benchPipeRoundTrip)
	b.Run("busy", func(b *testing.B) {
		busyMachine(b)
		benchPipeRoundTrip(b)
	})
}

func benchPipeRoundTrip(b *testing.B) {
	a, c, err := mp.Pipe(true)
	if err != nil {
		b.Fatal(err)
	}
	ready := mp.Must(mp.NewEvent())
	p := startChild(b, ready, benchPipeEcho, c, ready)
	ctx := context.Background()
	msg := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if err := a.SendBytes(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := a.RecvBytes(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	a.Close()
	joinChild(b, p)
}

package altbench

import (
	"bufio"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"sync"
	"testing"
	"time"
)

// Workers is the pool size of every pool benchmark, as in multiproc's.
const workers = 2

func reportRate(b *testing.B, n int, start time.Time, unit string) {
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), unit)
}

// jsonPool is the hand-rolled pool: tasks go round-robin to workers'
// stdin; a goroutine per worker reads its results.
type jsonPool struct {
	mu      sync.Mutex
	encs    []*json.Encoder
	outs    []*bufio.Writer
	next    int
	results chan result
}

func newJSONPool(b *testing.B) *jsonPool {
	p := &jsonPool{results: make(chan result, 1024)}
	var wg sync.WaitGroup
	// Cleanups run last first: this one after each worker's stdin is
	// closed and the worker has exited.
	b.Cleanup(wg.Wait)
	for range workers {
		_, in, out := start(b, "json", "", true)
		w := bufio.NewWriter(in)
		p.outs = append(p.outs, w)
		p.encs = append(p.encs, json.NewEncoder(w))
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec := json.NewDecoder(bufio.NewReader(out))
			for {
				var r result
				if err := dec.Decode(&r); err != nil {
					if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
						b.Error(err)
					}
					return
				}
				p.results <- r
			}
		}()
	}
	return p
}

func (p *jsonPool) submit(t task) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := p.next % workers
	p.next++
	return p.encs[i].Encode(t)
}

func (p *jsonPool) flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.outs {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkExecJSON: the hand-rolled pool. ApplyAsync submits b.N tasks
// (flushing every 64, as a submitter that does not know what comes next
// must do now and then), then takes every result; RoundTrip is one task
// and its result at a time through one worker.
func BenchmarkExecJSON(b *testing.B) {
	b.Run("ApplyAsync", func(b *testing.B) {
		p := newJSONPool(b)
		b.ResetTimer()
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			for range b.N {
				r := <-p.results
				if r.R != r.ID {
					done <- fmt.Errorf("task %d gave %d", r.ID, r.R)
					return
				}
			}
			done <- nil
		}()
		for i := range b.N {
			if err := p.submit(task{i, i}); err != nil {
				b.Fatal(err)
			}
			if i%64 == 63 {
				if err := p.flush(); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := p.flush(); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		reportRate(b, b.N, start, "tasks/s")
	})
	b.Run("RoundTrip", func(b *testing.B) {
		p := newJSONPool(b)
		b.ResetTimer()
		for i := range b.N {
			p.next = 0 // always the first worker
			if err := p.submit(task{i, i}); err != nil {
				b.Fatal(err)
			}
			if err := p.flush(); err != nil {
				b.Fatal(err)
			}
			if r := <-p.results; r.ID != i {
				b.Fatalf("got result %d for task %d", r.ID, i)
			}
		}
	})
}

// rpcClients starts workers net/rpc worker processes and connects to each.
func rpcClients(b *testing.B) []*rpc.Client {
	var cs []*rpc.Client
	for range workers {
		path := socketPath(b)
		_, _, out := start(b, "rpc", path, true)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			b.Fatalf("rpc worker: %q, %v", line, err)
		}
		c, err := rpc.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

// BenchmarkNetRPC: net/rpc to worker processes. ApplyAsync makes b.N
// asynchronous calls round-robin (client.Go), then waits for every one;
// RoundTrip is one synchronous call at a time.
func BenchmarkNetRPC(b *testing.B) {
	b.Run("ApplyAsync", func(b *testing.B) {
		cs := rpcClients(b)
		calls := make([]*rpc.Call, b.N)
		results := make([]int, b.N)
		b.ResetTimer()
		start := time.Now()
		for i := range calls {
			calls[i] = cs[i%workers].Go("Worker.Identity", i, &results[i], make(chan *rpc.Call, 1))
		}
		for i, c := range calls {
			<-c.Done
			if c.Error != nil || results[i] != i {
				b.Fatalf("call %d: %d, %v", i, results[i], c.Error)
			}
		}
		reportRate(b, b.N, start, "tasks/s")
	})
	b.Run("RoundTrip", func(b *testing.B) {
		cs := rpcClients(b)
		b.ResetTimer()
		for i := range b.N {
			var r int
			if err := cs[0].Call("Worker.Identity", i, &r); err != nil || r != i {
				b.Fatalf("call %d: %d, %v", i, r, err)
			}
		}
	})
}

// gobConn starts role connected to a fresh Unix socket and returns the
// accepted connection.
func gobConn(b *testing.B, role, args string) net.Conn {
	path := socketPath(b)
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	start(b, role, path+" "+args, false)
	c, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkGobSocket: a producer process sends b.N []byte items of 16
// bytes (Small) or 4 KiB (4K) over a Unix socket with encoding/gob, a
// new slice decoded for each; RoundTrip sends 64 bytes to an echoing
// process and waits for them.
func BenchmarkGobSocket(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"Small", 16}, {"4K", 4096}} {
		b.Run(size.name, func(b *testing.B) {
			b.SetBytes(int64(size.n))
			b.ResetTimer()
			start := time.Now()
			c := gobConn(b, "gob-produce", fmt.Sprint(b.N, size.n))
			dec := gob.NewDecoder(bufio.NewReader(c))
			for i := range b.N {
				var item []byte
				if err := dec.Decode(&item); err != nil || len(item) != size.n {
					b.Fatalf("item %d: %d bytes, %v", i, len(item), err)
				}
			}
			reportRate(b, b.N, start, "msgs/s")
		})
	}
	b.Run("RoundTrip", func(b *testing.B) {
		c := gobConn(b, "gob-echo", "")
		r, w := bufio.NewReader(c), bufio.NewWriter(c)
		dec, enc := gob.NewDecoder(r), gob.NewEncoder(w)
		msg := make([]byte, 64)
		b.ResetTimer()
		for range b.N {
			if err := enc.Encode(msg); err != nil {
				b.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				b.Fatal(err)
			}
			var back []byte
			if err := dec.Decode(&back); err != nil || len(back) != 64 {
				b.Fatalf("echo: %d bytes, %v", len(back), err)
			}
		}
	})
}

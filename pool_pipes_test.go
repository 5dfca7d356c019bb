package mp

import (
	"context"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

func exitOrSquare(x int) int {
	if x < 0 {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	return x * x
}

func init() { Register(exitOrSquare) }

// TestPoolClosesWorkerPipes: whenever a worker retires or dies, the
// parent has closed both ends of its pipe, and a worker that retired has
// closed its own.
func TestPoolClosesWorkerPipes(t *testing.T) {
	type pair struct{ a, b *Conn }
	var mu sync.Mutex
	var pipes []pair
	testWorkerPipe = func(a, b *Conn) {
		mu.Lock()
		pipes = append(pipes, pair{a, b})
		mu.Unlock()
	}
	defer func() { testWorkerPipe = nil }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := NewPool(1, WithMaxTasksPerChild(2))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Terminate()
	for _, x := range []int{1, 2, 3, -1, 4, 5} {
		if _, err := Apply[int](ctx, p, exitOrSquare, x); (err != nil) != (x < 0) {
			t.Fatalf("Apply(%d): %v", x, err)
		}
	}
	p.Close()
	if err := p.Join(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pipes) < 3 {
		t.Fatalf("%d workers started, want at least 3", len(pipes))
	}
	killed := 0
	for i, pp := range pipes {
		if !pp.a.closed.Load() || !pp.b.closed.Load() {
			t.Errorf("worker %d: parent's end closed %v, child's end closed in the parent %v", i, pp.a.closed.Load(), pp.b.closed.Load())
		}
		if n := pp.b.mine.total(); n != 0 {
			// Only the killed worker may still count as a holder.
			killed++
		}
	}
	if killed > 1 {
		t.Errorf("%d workers still hold their end of the pipe; only the killed one may", killed)
	}
}

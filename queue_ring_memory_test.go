package mp

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// inSmallArena runs the calling test again in a child test process whose
// arena is size bytes, and reports whether this is that child.
func inSmallArena(t *testing.T, size string) bool {
	t.Helper()
	if os.Getenv("MP_TEST_SMALL_ARENA") == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "MP_TEST_SMALL_ARENA="+t.Name(), "MULTIPROC_ARENA_SIZE="+size)
	out, err := cmd.CombinedOutput()
	t.Logf("child in a %s arena:\n%s", size, out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	return false
}

// TestQueueRingIdleCost: 1,000 idle unbounded queues and 1,000 idle duplex
// pipes fit in a 32 MiB arena (each took 8 MiB and 512 KiB), and each
// still works; each costs what the doc comments of Queue and PipeSize say.
func TestQueueRingIdleCost(t *testing.T) {
	if !inSmallArena(t, "32M") {
		return
	}
	a, err := treeArena()
	if err != nil {
		t.Fatal(err)
	}
	if a.Size() != 32<<20 {
		t.Fatalf("arena of %d bytes", a.Size())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 1000
	base := a.Stats().InUse
	qs := make([]*Queue[int], n)
	for i := range qs {
		if qs[i], err = NewQueue[int](0); err != nil {
			t.Fatalf("queue %d: %v", i, err)
		}
	}
	perQueue := (a.Stats().InUse - base) / n
	base = a.Stats().InUse
	type ends struct{ a, b *Conn }
	ps := make([]ends, n)
	for i := range ps {
		if ps[i].a, ps[i].b, err = Pipe(true); err != nil {
			t.Fatalf("pipe %d: %v", i, err)
		}
	}
	perPipe := (a.Stats().InUse - base) / n
	t.Logf("arena per idle queue: %d bytes; per idle duplex pipe: %d bytes", perQueue, perPipe)
	if perQueue > 8<<10 || perPipe > 12<<10 {
		t.Errorf("an idle queue takes %d bytes, an idle pipe %d: more than documented", perQueue, perPipe)
	}
	for i, q := range qs {
		if err := q.Put(ctx, i); err != nil {
			t.Fatal(err)
		}
		if v, err := q.Get(ctx); err != nil || v != i {
			t.Fatalf("queue %d: Get = %d, %v", i, v, err)
		}
	}
	for i, p := range ps {
		if err := p.a.Send(i); err != nil {
			t.Fatal(err)
		}
		var v int
		if err := p.b.Recv(ctx, &v); err != nil || v != i {
			t.Fatalf("pipe %d: Recv = %d, %v", i, v, err)
		}
		p.a.Close()
		p.b.Close()
	}
	for _, q := range qs {
		q.Close()
	}
}

// TestQueueRingUnbounded: a queue made with maxsize 0 takes 100,000 items
// nobody takes (it took 32,768), in order, and fails with ErrNoSpace, not
// ErrFull or a hang, once the arena is full.
func TestQueueRingUnbounded(t *testing.T) {
	if !inSmallArena(t, "128M") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := NewQueue[int](0)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const n = 100000
	for i := range n {
		if err := q.TryPut(i); err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	if q.Len() != n || q.Full() {
		t.Fatalf("Len %d, Full %v", q.Len(), q.Full())
	}
	for i := n; ; i++ {
		err := q.TryPut(i)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatalf("item %d: %v, want ErrNoSpace once the arena is full", i, err)
		}
	}
	for i := range n {
		if v, err := q.Get(ctx); err != nil || v != i {
			t.Fatalf("Get = %d, %v, want %d", v, err, i)
		}
	}
}

package mp_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp"
	"github.com/multiproc/mp/internal/leakcheck"
)

type bun struct {
	Chef string
	N    int
}

// produce puts n buns from chef on q.
func produce(q *mp.Queue[*bun], chef string, n int) error {
	for i := 0; i < n; i++ {
		if err := q.Put(context.Background(), &bun{chef, i}); err != nil {
			return err
		}
	}
	return nil
}

// consume takes buns until the nil sentinel, reporting each on out.
func consume(q *mp.Queue[*bun], out *mp.Queue[string]) error {
	for {
		b, err := q.Get(context.Background())
		if err != nil {
			return err
		}
		if b == nil {
			return nil
		}
		if err := out.Put(context.Background(), fmt.Sprintf("%s-%d", b.Chef, b.N)); err != nil {
			return err
		}
	}
}

// consumeUntilClosed is consume for a queue that is closed instead.
func consumeUntilClosed(q *mp.Queue[*bun], out *mp.Queue[string]) error {
	for {
		b, err := q.Get(context.Background())
		if errors.Is(err, mp.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := out.Put(context.Background(), fmt.Sprintf("%s-%d", b.Chef, b.N)); err != nil {
			return err
		}
	}
}

// work takes items forever, reporting and marking each done.
func work(q *mp.JoinableQueue[int], out *mp.Queue[int]) error {
	for {
		v, err := q.Get(context.Background())
		if err != nil {
			return err
		}
		if err := out.Put(context.Background(), v); err != nil {
			return err
		}
		if err := q.TaskDone(); err != nil {
			return err
		}
	}
}

func produceInts(q *mp.JoinableQueue[int], from, n int) error {
	for i := from; i < from+n; i++ {
		if err := q.Put(context.Background(), i); err != nil {
			return err
		}
	}
	return nil
}

// takeAndHang takes one item, says so, and never marks it done.
func takeAndHang(q *mp.JoinableQueue[int], flag string) error {
	if _, err := q.Get(context.Background()); err != nil {
		return err
	}
	writeFile(flag, "took")
	select {}
}

func sendLock(q *mp.Queue[*mp.Lock]) error {
	l, err := mp.NewLock()
	if err != nil {
		return err
	}
	l.Lock() // the parent must find it locked
	return q.Put(context.Background(), l)
}

func init() {
	mp.Register(produce, consume, consumeUntilClosed, work, produceInts, takeAndHang, sendLock)
}

func TestQueueAPI(t *testing.T) {
	for _, size := range []int{5, 3, 4} { // exact maxsize whether or not a power of two
		q := mp.Must(mp.NewQueue[int](size))
		for i := 0; i < size; i++ {
			if err := q.TryPut(i); err != nil {
				t.Fatalf("size %d: put %d: %v", size, i, err)
			}
		}
		if !q.Full() || q.Len() != size || q.Empty() {
			t.Fatalf("size %d: Full %v Len %d Empty %v", size, q.Full(), q.Len(), q.Empty())
		}
		if err := q.TryPut(99); !errors.Is(err, mp.ErrFull) {
			t.Fatalf("size %d: TryPut on a full queue = %v", size, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		if err := q.Put(ctx, 99); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("size %d: Put on a full queue = %v", size, err)
		}
		cancel()
		for i := 0; i < size; i++ {
			if v, err := q.TryGet(); err != nil || v != i {
				t.Fatalf("size %d: get %d = %d, %v", size, i, v, err)
			}
		}
		if _, err := q.TryGet(); !errors.Is(err, mp.ErrEmpty) || !q.Empty() {
			t.Fatalf("size %d: TryGet on an empty queue = %v", size, err)
		}
	}
}

func TestQueueCloseDrains(t *testing.T) {
	q := mp.Must(mp.NewQueue[string](0))
	q.Put(context.Background(), "a")
	q.Put(context.Background(), "")
	q.Close()
	if err := q.Put(context.Background(), "c"); !errors.Is(err, mp.ErrClosed) {
		t.Fatalf("Put after Close = %v", err)
	}
	for _, want := range []string{"a", ""} {
		if v, err := q.Get(context.Background()); err != nil || v != want {
			t.Fatalf("Get = %q, %v; want %q", v, err, want)
		}
	}
	if _, err := q.Get(context.Background()); !errors.Is(err, mp.ErrClosed) {
		t.Fatalf("Get on a closed, drained queue = %v", err)
	}
}

func TestQueueBadValues(t *testing.T) {
	q := mp.Must(mp.NewQueue[any](4))
	if err := q.Put(context.Background(), func() {}); !errors.Is(err, mp.ErrUnencodable) {
		t.Fatalf("Put(func) = %v, want ErrUnencodable", err)
	}
	if !q.Empty() {
		t.Fatal("a failed Put left an item")
	}
	big := mp.Must(mp.NewQueue[[]byte](1))
	if err := big.Put(context.Background(), make([]byte, mp.MaxMessage+1)); !errors.Is(err, mp.ErrTooLarge) {
		t.Fatalf("oversized Put = %v", err)
	}
	b, _ := q.MarshalBinary()
	var wrong mp.Queue[string]
	if err := wrong.UnmarshalBinary(b); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("a Queue[any] decoded as Queue[string]: %v", err)
	}
	var j mp.JoinableQueue[any]
	if err := j.UnmarshalBinary(b); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("a Queue decoded as JoinableQueue: %v", err)
	}
}

// TestProducerConsumerSentinels is the seeds' producer/consumer: two
// producer processes, two consumer processes, one nil sentinel per
// consumer; every bun eaten exactly once.
func TestProducerConsumerSentinels(t *testing.T) {
	for _, closeInstead := range []bool{false, true} {
		q := mp.Must(mp.NewQueue[*bun](8))
		out := mp.Must(mp.NewQueue[string](0))
		const perChef = 200
		var ps []*mp.Process
		for _, chef := range []string{"egon", "alex"} {
			ps = append(ps, mp.NewProcess(produce, q, chef, perChef))
		}
		consumer := consume
		if closeInstead {
			consumer = consumeUntilClosed
		}
		var cs []*mp.Process
		for i := 0; i < 2; i++ {
			cs = append(cs, mp.NewProcess(consumer, q, out))
		}
		for _, p := range append(ps, cs...) {
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range ps {
			if err := join(t, p); err != nil {
				t.Fatal(err)
			}
		}
		if closeInstead {
			q.Close()
		} else {
			for range cs {
				q.Put(context.Background(), nil)
			}
		}
		for _, c := range cs {
			if err := join(t, c); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[string]int{}
		for !out.Empty() {
			s, _ := out.TryGet()
			seen[s]++
		}
		if len(seen) != 2*perChef {
			t.Fatalf("close=%v: %d distinct buns eaten, want %d", closeInstead, len(seen), 2*perChef)
		}
		for s, n := range seen {
			if n != 1 {
				t.Fatalf("%s eaten %d times", s, n)
			}
		}
	}
}

// TestJoinableQueue: three producers, two daemonic consumers; Join returns
// once every item is done, each consumed exactly once.
func TestJoinableQueue(t *testing.T) {
	q := mp.Must(mp.NewJoinableQueue[int](0))
	out := mp.Must(mp.NewQueue[int](0))
	for i := 0; i < 2; i++ {
		c := mp.NewProcess(work, q, out)
		c.Daemon = true
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { c.Terminate(); join(t, c) }()
	}
	var ps []*mp.Process
	for i := 0; i < 3; i++ {
		p := mp.NewProcess(produceInts, q, i*1000, 300)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if err := join(t, p); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := q.Join(ctx); err != nil {
		t.Fatal(err)
	}
	var got []int
	for !out.Empty() {
		v, _ := out.TryGet()
		got = append(got, v)
	}
	sort.Ints(got)
	if len(got) != 900 {
		t.Fatalf("%d items consumed, want 900", len(got))
	}
	for i, v := range got {
		if want := (i/300)*1000 + i%300; v != want {
			t.Fatalf("item %d = %d, want %d", i, v, want)
		}
	}
	if err := q.TaskDone(); !errors.Is(err, mp.ErrTaskDone) {
		t.Fatalf("extra TaskDone = %v", err)
	}
}

func TestJoinableQueueConsumerKilled(t *testing.T) {
	dir := t.TempDir()
	q := mp.Must(mp.NewJoinableQueue[int](0))
	q.Put(context.Background(), 1)
	q.Put(context.Background(), 2)
	c := mp.NewProcess(takeAndHang, q, dir+"/took")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	awaitFile(t, dir+"/took")
	c.Kill()
	join(t, c)
	if _, err := q.Get(context.Background()); err != nil {
		t.Fatal(err)
	}
	q.TaskDone()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := q.Join(ctx); !errors.Is(err, mp.ErrTasksLost) {
		t.Fatalf("Join = %v, want ErrTasksLost", err)
	}
}

func TestQueueOfLocks(t *testing.T) {
	q := mp.Must(mp.NewQueue[*mp.Lock](1))
	p := mp.NewProcess(sendLock, q)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	l, err := q.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	join(t, p)
	// The child locked it and died: its death is what the next acquirer sees.
	if err := l.Acquire(context.Background()); !errors.Is(err, mp.ErrOwnerDied) {
		t.Fatalf("Acquire of a lock received through a queue = %v", err)
	}
	l.Release()
}

func TestThousandsBlockedInGet(t *testing.T) {
	q := mp.Must(mp.NewQueue[int](0))
	const n = 5000
	var got atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := q.Get(context.Background()); err == nil {
				got.Add(1)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // let them block; the bound holds at any moment
	if th := leakcheck.Threads(); th > 500 {
		t.Fatalf("%d OS threads with %d goroutines blocked in Get", th, n)
	}
	for i := 0; i < n; i++ {
		q.Put(context.Background(), i)
	}
	wg.Wait()
	if got.Load() != n {
		t.Fatalf("%d got an item", got.Load())
	}
}

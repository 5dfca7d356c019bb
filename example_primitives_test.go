package mp_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/multiproc/mp"
)

// The functions the examples below run in child processes.

// countUnderLock adds 1 to the counter 100 times, each under the lock.
func countUnderLock(lock *mp.Lock, counter *mp.Value[int64]) error {
	for i := 0; i < 100; i++ {
		if err := lock.Acquire(context.Background()); err != nil {
			return err
		}
		counter.Store(counter.Load() + 1) // a read-modify-write: the lock makes it safe
		lock.Release()
	}
	return nil
}

// enterRoom holds one of the room's permits for a moment, recording the
// most people it saw inside.
func enterRoom(room *mp.Semaphore, inside, most *mp.Value[int32]) error {
	if err := room.Acquire(context.Background()); err != nil {
		return err
	}
	n := inside.Add(1)
	for {
		m := most.Load()
		if n <= m || most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(5 * time.Millisecond)
	inside.Add(-1)
	return room.Release()
}

// waitForStart waits for the event, then reports on the queue.
func waitForStart(start *mp.Event, out *mp.Queue[string]) error {
	if err := start.Wait(context.Background()); err != nil {
		return err
	}
	return out.Put(context.Background(), "started")
}

// consumeWhenStocked waits, under the condition, until the value is positive.
func consumeWhenStocked(cond *mp.Condition, stock *mp.Value[int64], out *mp.Queue[int64]) error {
	ctx := context.Background()
	if err := cond.Acquire(ctx); err != nil {
		return err
	}
	defer cond.Release()
	if err := cond.WaitFor(ctx, func() bool { return stock.Load() > 0 }); err != nil {
		return err
	}
	return out.Put(ctx, stock.Add(-1)+1)
}

// runToBarrier waits at the barrier, then says it is past it.
func runToBarrier(b *mp.Barrier, out *mp.Queue[string]) error {
	if _, err := b.Wait(context.Background()); err != nil {
		return err
	}
	return out.Put(context.Background(), "past the barrier")
}

// putThree puts its numbers, then reports it is done.
func putThree(q *mp.Queue[int], from int) error {
	for i := from; i < from+3; i++ {
		if err := q.Put(context.Background(), i); err != nil {
			return err
		}
	}
	return nil
}

// squarer squares items of jobs onto results until jobs is closed and
// drained, marking each item done.
func squarer(jobs *mp.JoinableQueue[int], results *mp.Queue[int]) error {
	ctx := context.Background()
	for {
		n, err := jobs.Get(ctx)
		if err != nil {
			return nil // closed and drained
		}
		results.Put(ctx, n*n)
		jobs.TaskDone()
	}
}

// shout sends back, upper-cased, each message it receives, until EOF.
func shout(c *mp.Conn) error {
	ctx := context.Background()
	for {
		var s string
		if err := c.Recv(ctx, &s); err != nil {
			return nil
		}
		if err := c.Send(strings.ToUpper(s)); err != nil {
			return err
		}
	}
}

func init() {
	mp.Register(countUnderLock, enterRoom, waitForStart, consumeWhenStocked, runToBarrier, putThree, squarer, shout)
}

// run starts a child per argument list and waits for them all.
func startAndJoin(fn any, argLists ...[]any) {
	var ps []*mp.Process
	for _, args := range argLists {
		p := mp.NewProcess(fn, args...)
		if err := p.Start(); err != nil {
			panic(err)
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if err := p.Join(context.Background()); err != nil {
			panic(err)
		}
	}
}

func ExampleNewLock() {
	lock := mp.Must(mp.NewLock())
	defer lock.Close()
	counter := mp.Must(mp.NewValue[int64](0))
	defer counter.Close()

	startAndJoin(countUnderLock, []any{lock, counter}, []any{lock, counter}, []any{lock, counter})
	fmt.Println(counter.Load())
	// Output: 300
}

func ExampleNewSemaphore() {
	room := mp.Must(mp.NewSemaphore(2)) // a room for two
	inside := mp.Must(mp.NewValue[int32](0))
	most := mp.Must(mp.NewValue[int32](0))
	args := []any{room, inside, most}
	startAndJoin(enterRoom, args, args, args, args, args)
	// How many were inside together depends on scheduling (on a busy
	// machine they may well come one at a time); never more than two.
	fmt.Println("at most two inside at once:", most.Load() <= 2, "- free places:", room.Value())
	// Output: at most two inside at once: true - free places: 2
}

func ExampleNewEvent() {
	start := mp.Must(mp.NewEvent())
	out := mp.Must(mp.NewQueue[string](0))
	p := mp.NewProcess(waitForStart, start, out)
	p.Start()

	fmt.Println("set:", start.IsSet())
	start.Set()
	msg, _ := out.Get(context.Background())
	fmt.Println(msg)
	p.Join(context.Background())
	// Output:
	// set: false
	// started
}

func ExampleNewCondition() {
	ctx := context.Background()
	cond := mp.Must(mp.NewCondition(nil)) // with a Lock of its own
	stock := mp.Must(mp.NewValue[int64](0))
	out := mp.Must(mp.NewQueue[int64](0))
	p := mp.NewProcess(consumeWhenStocked, cond, stock, out)
	p.Start()

	cond.Acquire(ctx)
	stock.Store(1)
	cond.NotifyAll() // wake the consumer, who sees stock > 0
	cond.Release()

	got, _ := out.Get(ctx)
	p.Join(ctx)
	fmt.Println("consumed item", got, "- left:", stock.Load())
	// Output: consumed item 1 - left: 0
}

func ExampleNewBarrier() {
	b := mp.Must(mp.NewBarrier(3, nil))
	out := mp.Must(mp.NewQueue[string](0))
	startAndJoin(runToBarrier, []any{b, out}, []any{b, out}, []any{b, out})
	fmt.Println(out.Len(), "runners past the barrier")
	// Output: 3 runners past the barrier
}

func ExampleNewQueue() {
	q := mp.Must(mp.NewQueue[int](0))
	startAndJoin(putThree, []any{q, 0}, []any{q, 10})

	var got []int
	for !q.Empty() {
		n, _ := q.Get(context.Background())
		got = append(got, n)
	}
	slices.Sort(got)
	fmt.Println(got)
	// Output: [0 1 2 10 11 12]
}

func ExampleNewJoinableQueue() {
	ctx := context.Background()
	jobs := mp.Must(mp.NewJoinableQueue[int](0))
	results := mp.Must(mp.NewQueue[int](0))
	var ps []*mp.Process
	for i := 0; i < 2; i++ {
		p := mp.NewProcess(squarer, jobs, results)
		p.Start()
		ps = append(ps, p)
	}
	for n := 1; n <= 5; n++ {
		jobs.Put(ctx, n)
	}
	jobs.Join(ctx) // every item taken and marked done
	jobs.Close()   // the workers' Get now returns ErrClosed
	for _, p := range ps {
		p.Join(ctx)
	}
	sum := 0
	for !results.Empty() {
		n, _ := results.Get(ctx)
		sum += n
	}
	fmt.Println("sum of squares:", sum)
	// Output: sum of squares: 55
}

func ExamplePipe() {
	ctx := context.Background()
	here, there, err := mp.Pipe(true)
	if err != nil {
		fmt.Println(err)
		return
	}
	p := mp.NewProcess(shout, there)
	p.Start()

	for _, s := range []string{"hello", "pipe"} {
		here.Send(s)
		var reply string
		here.Recv(ctx, &reply)
		fmt.Println(reply)
	}
	here.Close() // the shout reads io.EOF and returns
	p.Join(ctx)
	// Output:
	// HELLO
	// PIPE
}

func ExampleReadArenaStats() {
	before, _ := mp.ReadArenaStats()
	locks := make([]*mp.Lock, 10)
	for i := range locks {
		locks[i] = mp.Must(mp.NewLock())
	}
	during, _ := mp.ReadArenaStats()
	for _, l := range locks {
		l.Close()
	}
	after, _ := mp.ReadArenaStats()
	fmt.Println(during.ByKind["Lock"]-before.ByKind["Lock"], "locks made;",
		during.ByKind["Lock"]-after.ByKind["Lock"], "given back on Close")
	// Output: 10 locks made; 10 given back on Close
}

package mp_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// SIGKILL fault tests at the level of the public Queue: producer and
// consumer processes are killed at random moments of their Put and Get
// loops. Correctness never depends on when a kill lands; the random sleeps
// only spread the kills over the loops. Every wait is bounded by a minute,
// which is the failure condition, never an expected path.

// faultItem is a queue item that checks itself: Sum covers the rest.
type faultItem struct {
	P, Seq int
	Data   []byte
	Sum    uint32
}

// newFaultItem returns item seq of producer p. Its Data is long enough to
// go out of line (300 B to 8 KiB), except for every fourth item, which
// stays inline, and for every item if small: small items make the
// consumers' loops short, so that kills land more often in the few
// instructions of a Get that are most delicate.
func newFaultItem(p, seq int, small bool) faultItem {
	n := 8
	if seq%4 != 0 && !small {
		n = 300 + int(uint64(seq)*2654435761%(8<<10-300))
	}
	data := make([]byte, n)
	x := uint32(p*7919 + seq)
	for i := range data {
		x = x*1664525 + 1013904223
		data[i] = byte(x >> 24)
	}
	it := faultItem{P: p, Seq: seq, Data: data}
	it.Sum = it.sum()
	return it
}

func (it faultItem) sum() uint32 {
	var hdr [16]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(it.P))
	binary.LittleEndian.PutUint64(hdr[8:], uint64(it.Seq))
	return crc32.Update(crc32.ChecksumIEEE(hdr[:]), crc32.IEEETable, it.Data)
}

func (it faultItem) check() error {
	if it.Sum != it.sum() {
		return fmt.Errorf("item %d/%d of %d bytes: bad checksum", it.P, it.Seq, len(it.Data))
	}
	return nil
}

func faultCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

// faultProducer puts items id/0, id/1, ... until it is killed (or the queue
// is closed), releasing started once it has put its first item.
func faultProducer(q *mp.Queue[faultItem], id int, started *mp.Semaphore) error {
	ctx, cancel := faultCtx()
	defer cancel()
	for seq := 0; ; seq++ {
		if err := q.Put(ctx, newFaultItem(id, seq, false)); err != nil {
			if errors.Is(err, mp.ErrClosed) {
				return nil
			}
			return fmt.Errorf("producer %d, item %d: %w", id, seq, err)
		}
		if seq == 0 {
			if err := started.Release(); err != nil {
				return err
			}
		}
	}
}

// faultConsumer takes items until it takes a stop item (P < 0) or it is
// killed, checking each and reporting its Seq on out; with a
// JoinableQueue, it marks each done after reporting it (the stop item
// too). It releases started once it has taken its first item.
func faultConsumer(q *mp.Queue[faultItem], out *mp.Queue[int], started *mp.Semaphore) error {
	return faultConsume(q.Get, nil, out, started)
}

func faultJoinableConsumer(q *mp.JoinableQueue[faultItem], out *mp.Queue[int], started *mp.Semaphore) error {
	return faultConsume(q.Get, q.TaskDone, out, started)
}

func faultConsume(get func(context.Context) (faultItem, error), done func() error, out *mp.Queue[int], started *mp.Semaphore) error {
	ctx, cancel := faultCtx()
	defer cancel()
	for n := 0; ; n++ {
		it, err := get(ctx)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		if err := it.check(); err != nil {
			return err
		}
		if it.P < 0 {
			if done != nil {
				return done()
			}
			return nil
		}
		if err := out.Put(ctx, it.Seq); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if done != nil {
			if err := done(); err != nil {
				return fmt.Errorf("TaskDone: %w", err)
			}
		}
		if n == 0 {
			if err := started.Release(); err != nil {
				return err
			}
		}
	}
}

func init() { mp.Register(faultProducer, faultConsumer, faultJoinableConsumer) }

// startFault starts a daemonic child process that the test kills and
// joins at the end if it has not done so.
func startFault(t *testing.T, fn any, args ...any) *mp.Process {
	t.Helper()
	p := mp.NewProcess(fn, args...)
	p.Daemon = true
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.IsAlive() {
			p.Kill()
		}
		join(t, p)
	})
	return p
}

// killFault kills p, which must not have ended by itself, and waits for it.
func killFault(t *testing.T, p *mp.Process) {
	t.Helper()
	p.Kill()
	err := join(t, p)
	var pe *mp.ProcessError
	if !errors.As(err, &pe) || pe.ExitCode != -9 {
		t.Fatalf("child ended by itself before it was killed: %v", err)
	}
}

// awaitStarted acquires n permits of started, until ctx ends.
func awaitStarted(t *testing.T, ctx context.Context, started *mp.Semaphore, n int) {
	t.Helper()
	for range n {
		if err := started.Acquire(ctx); err != nil {
			t.Fatalf("children did not start their loops: %v", context.Cause(ctx))
		}
	}
}

func faultRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0x5eed))
}

// faultRounds returns n, the number of kill rounds (each kills two
// processes), or fewer with -short.
func faultRounds(n int) int {
	if testing.Short() {
		return min(n, 4)
	}
	return n
}

// checkCapacity checks that q, drained and now used only by the caller,
// still takes maxsize items: no slot went with a dead process. done, if
// not nil, marks each item taken done (JoinableQueue).
func checkCapacity(t *testing.T, q *mp.Queue[faultItem], maxsize int, done func() error) {
	t.Helper()
	t.Logf("drained queue: Len %d, Empty %v, Full %v", q.Len(), q.Empty(), q.Full())
	ctx, cancel := faultCtx()
	defer cancel()
	for i := range maxsize {
		if err := q.Put(ctx, newFaultItem(-2, i, false)); err != nil {
			t.Fatalf("Put %d of %d into the drained queue: %v (Len %d): capacity lost with killed processes",
				i+1, maxsize, err, q.Len())
		}
	}
	for i := range maxsize {
		it, err := q.TryGet()
		if err == nil {
			err = it.check()
		}
		if err != nil || it.P != -2 || it.Seq != i {
			t.Fatalf("TryGet %d: %d/%d, %v", i, it.P, it.Seq, err)
		}
		if done != nil {
			if err := done(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := q.TryGet(); !errors.Is(err, mp.ErrEmpty) {
		t.Fatalf("TryGet from the drained queue: %v", err)
	}
}

// TestQueueFaultProducersKilled: producer processes putting items of
// mixed sizes are killed at random moments while the parent consumes.
// Every item delivered is intact, each producer's items arrive in order
// with neither gaps nor duplicates (only a killed Put's item may be
// missing, and it is the producer's last), nothing blocks for good, and
// the queue keeps its full capacity.
func TestQueueFaultProducersKilled(t *testing.T) {
	for _, maxsize := range []int{16, 12} { // the ring's own capacity, and an exact maxsize
		t.Run(fmt.Sprint("maxsize", maxsize), func(t *testing.T) {
			faultProducersKilled(t, maxsize)
		})
	}
}

func faultProducersKilled(t *testing.T, maxsize int) {
	q := mp.Must(mp.NewQueue[faultItem](maxsize))
	started := mp.Must(mp.NewSemaphore(0))
	rng := faultRand(t)
	timeout, cancelTimeout := faultCtx()
	defer cancelTimeout()
	// The consumer's failure ends every wait at once, as its cause.
	ctx, cancel := context.WithCancelCause(timeout)
	defer cancel(nil)

	const marker = -1 // the parent's items: Seq is the round
	next := map[int]int{}
	markers := make(chan int)
	done := make(chan error, 1)
	go func() {
		err := func() error {
			for {
				it, err := q.Get(ctx)
				if err != nil {
					return fmt.Errorf("consumer: %w", err)
				}
				if err := it.check(); err != nil {
					return err
				}
				if it.P == marker {
					if it.Seq < 0 {
						return nil // the last marker
					}
					markers <- it.Seq
					continue
				}
				if want := next[it.P]; it.Seq != want {
					return fmt.Errorf("producer %d: got item %d, want %d", it.P, it.Seq, want)
				}
				next[it.P]++
			}
		}()
		if err != nil {
			cancel(err)
		}
		done <- err
	}()

	rounds := faultRounds(20)
	killed := 0
	for round := range rounds {
		var ps []*mp.Process
		for k := range 2 {
			ps = append(ps, startFault(t, faultProducer, q, 2*round+k, started))
		}
		awaitStarted(t, ctx, started, len(ps))
		for _, p := range ps {
			time.Sleep(time.Duration(rng.IntN(10000)) * time.Microsecond)
			killFault(t, p)
			killed++
		}
		// The marker is put after every item of the dead producers:
		// once it arrives, the consumer is past all of them.
		if err := q.Put(ctx, newFaultItem(marker, round, false)); err != nil {
			t.Fatalf("round %d: Put after the kills: %v (Len %d)", round, context.Cause(ctx), q.Len())
		}
		select {
		case seq := <-markers:
			if seq != round {
				t.Fatalf("marker %d, want %d", seq, round)
			}
		case err := <-done:
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if err := q.Put(ctx, newFaultItem(marker, -1, false)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	total := 0
	for id := range 2 * rounds {
		if next[id] == 0 {
			t.Fatalf("producer %d: none of its items arrived, though it had put one", id)
		}
		total += next[id]
	}
	t.Logf("%d producers killed; %d items delivered", killed, total)
	checkCapacity(t, q, maxsize, nil)
}

// TestQueueFaultConsumersKilled: consumer processes are killed at random
// moments while the parent produces and one consumer survives. Each kill
// may take at most one item with it; every other item is delivered exactly
// once, intact; nothing blocks for good; the queue keeps its full
// capacity; and a JoinableQueue's Join returns (nil or ErrTasksLost)
// instead of waiting for the dead consumers' items.
func TestQueueFaultConsumersKilled(t *testing.T) {
	for _, tc := range []struct {
		joinable bool
		maxsize  int // the ring's own capacity, or an exact maxsize
		small    bool
	}{
		{false, 32, false},
		{false, 24, false},
		{true, 32, false},
		{true, 24, false},
		{true, 32, true},
		{false, 24, true},
		{true, 24, true},
	} {
		name := fmt.Sprintf("queue/maxsize%d", tc.maxsize)
		if tc.joinable {
			name = fmt.Sprintf("joinable/maxsize%d", tc.maxsize)
		}
		if tc.small {
			name += "/small"
		}
		t.Run(name, func(t *testing.T) {
			faultConsumersKilled(t, tc.maxsize, tc.joinable, tc.small)
		})
	}
}

func faultConsumersKilled(t *testing.T, maxsize int, joinable, small bool) {
	var q *mp.Queue[faultItem]
	var jq *mp.JoinableQueue[faultItem]
	consumer := any(faultConsumer)
	if joinable {
		jq = mp.Must(mp.NewJoinableQueue[faultItem](maxsize))
		q = jq.Queue
		consumer = faultJoinableConsumer
	} else {
		q = mp.Must(mp.NewQueue[faultItem](maxsize))
	}
	queueArg := func() any {
		if joinable {
			return jq
		}
		return q
	}
	out := mp.Must(mp.NewQueue[int](0))
	started := mp.Must(mp.NewSemaphore(0))
	survivorStarted := mp.Must(mp.NewSemaphore(0))
	rng := faultRand(t)
	timeout, cancelTimeout := faultCtx()
	defer cancelTimeout()
	// A failure of the parent's producer or collector ends every wait at
	// once, as its cause.
	ctx, cancel := context.WithCancelCause(timeout)
	defer cancel(nil)

	// The parent produces 0, 1, 2, ... until stopped.
	stop := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	produced := make(chan result, 1)
	go func() {
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				produced <- result{seq, nil}
				return
			default:
			}
			if err := q.Put(ctx, newFaultItem(0, seq, small)); err != nil {
				err = fmt.Errorf("producer: %w (Len %d)", err, q.Len())
				cancel(err)
				produced <- result{seq, err}
				return
			}
		}
	}()
	// The parent collects the consumers' reports.
	seen := map[int]bool{}
	reports := make(chan error, 1)
	go func() {
		err := func() error {
			for {
				seq, err := out.Get(ctx)
				if errors.Is(err, mp.ErrClosed) {
					return nil
				}
				if err != nil {
					return fmt.Errorf("reports: %w", err)
				}
				if seen[seq] {
					return fmt.Errorf("item %d delivered twice", seq)
				}
				seen[seq] = true
			}
		}()
		if err != nil {
			cancel(err)
		}
		reports <- err
	}()

	survivor := startFault(t, consumer, queueArg(), out, survivorStarted)
	awaitStarted(t, ctx, survivorStarted, 1)
	// Small items make for more kills landing in the short steps of a
	// Get: more rounds for them.
	rounds := faultRounds(15)
	if small {
		rounds = faultRounds(25)
	}
	killed := 0
	for range rounds {
		var cs []*mp.Process
		for range 2 {
			cs = append(cs, startFault(t, consumer, queueArg(), out, started))
		}
		awaitStarted(t, ctx, started, len(cs))
		for _, c := range cs {
			time.Sleep(time.Duration(rng.IntN(10000)) * time.Microsecond)
			killFault(t, c)
			killed++
		}
	}
	close(stop)
	res := <-produced
	if res.err != nil {
		t.Fatal(res.err)
	}
	n := res.n
	// The survivor takes everything left, then the stop item, and ends.
	if err := q.Put(ctx, newFaultItem(-1, 0, true)); err != nil {
		t.Fatalf("Put of the stop item: %v (Len %d)", err, q.Len())
	}
	if err := join(t, survivor); err != nil {
		t.Fatalf("surviving consumer: %v", err)
	}
	out.Close()
	if err := <-reports; err != nil {
		t.Fatal(err)
	}
	for seq := range seen {
		if seq < 0 || seq >= n {
			t.Fatalf("item %d delivered, but only %d were put", seq, n)
		}
	}
	missing := n - len(seen)
	t.Logf("%d items put, %d consumers killed: %d delivered, %d taken by killed consumers", n, killed, len(seen), missing)
	if missing > killed {
		t.Fatalf("%d items missing after %d consumers were killed (at most one each)", missing, killed)
	}
	var done func() error
	if joinable {
		err := jq.Join(ctx)
		t.Logf("Join: %v", err)
		switch {
		case errors.Is(err, mp.ErrTasksLost):
		case err == nil:
			if missing > 0 {
				t.Fatalf("Join = nil with %d items taken by killed consumers and never done", missing)
			}
		default:
			t.Fatalf("Join = %v, want nil or ErrTasksLost", err)
		}
		done = jq.TaskDone
	}
	checkCapacity(t, q, maxsize, done)
	if joinable {
		if err := jq.Join(ctx); err != nil && !errors.Is(err, mp.ErrTasksLost) {
			t.Fatalf("second Join = %v", err)
		}
	}
}

// hangAt makes this process, a child, stop for good at the queue's test
// hook point, after releasing at: the parent kills it there.
func hangAt(point int, at *mp.Semaphore) {
	mp.SetQueueHook(func(p int) {
		if p == point {
			at.Release()
			select {}
		}
	})
}

// putAndHang and getAndHang put or get one item, stopping at point.
func putAndHang(q *mp.Queue[int], point int, at *mp.Semaphore) error {
	hangAt(point, at)
	ctx, cancel := faultCtx()
	defer cancel()
	if err := q.Put(ctx, -1); err != nil {
		return err
	}
	return errors.New("Put returned without passing the hook point")
}

func getAndHang(q *mp.Queue[int], point int, at *mp.Semaphore) error {
	hangAt(point, at)
	ctx, cancel := faultCtx()
	defer cancel()
	if _, err := q.Get(ctx); err != nil {
		return err
	}
	return errors.New("Get returned without passing the hook point")
}

// takeOne takes an item; then, with hang, it releases took and waits to be
// killed holding it, or else it marks the item done and, if wait is not
// nil, waits for it to be set before it ends.
func takeOne(q *mp.JoinableQueue[int], hang bool, took *mp.Semaphore, wait *mp.Event) error {
	ctx, cancel := faultCtx()
	defer cancel()
	if _, err := q.Get(ctx); err != nil {
		return err
	}
	if hang {
		if err := took.Release(); err != nil {
			return err
		}
		select {}
	}
	if err := q.TaskDone(); err != nil {
		return err
	}
	if err := took.Release(); err != nil {
		return err
	}
	if wait != nil {
		return wait.Wait(ctx)
	}
	return nil
}

// refusedOne checks that this process, one too many, can neither take from
// nor put on q.
func refusedOne(q *mp.JoinableQueue[int]) error {
	if _, err := q.TryGet(); !errors.Is(err, mp.ErrTooManyProcesses) {
		return fmt.Errorf("TryGet = %v, want ErrTooManyProcesses", err)
	}
	ctx, cancel := faultCtx()
	defer cancel()
	if err := q.Put(ctx, -1); !errors.Is(err, mp.ErrTooManyProcesses) {
		return fmt.Errorf("Put = %v, want ErrTooManyProcesses", err)
	}
	return nil
}

func init() { mp.Register(putAndHang, getAndHang, takeOne, refusedOne) }

// TestQueueKilledMidway kills a child at each point of a Put or a Get where
// it holds part of an exact maxsize's count (and of a JoinableQueue's
// tally): with a slot reserved and its item not yet in the ring; with the
// item's cell claimed from the ring and nothing recorded; and with the
// item recorded and the cell not yet released. No slot is lost: the
// parent fills the queue to maxsize again (a blocked Put reclaims what the
// child held), and none is gained: the queue is then full. Join counts the
// child's item as lost, if it had taken one.
func TestQueueKilledMidway(t *testing.T) {
	for _, tc := range []struct {
		name  string
		point int
		exact bool
	}{
		{"producer-slot-reserved", mp.HookSlotTaken, true},
		{"consumer-taking", mp.HookTaking, true},
		{"consumer-taken", mp.HookTaken, true},
	} {
		for _, joinable := range []bool{false, true} {
			name := "queue/" + tc.name
			if joinable {
				name = "joinable/" + tc.name
			}
			t.Run(name, func(t *testing.T) { killedMidway(t, tc.point, joinable, tc.exact) })
		}
	}
}

func killedMidway(t *testing.T, point int, joinable, exact bool) {
	const maxsize = 3 // not a power of two: the queue keeps its own count
	var q *mp.Queue[int]
	var jq *mp.JoinableQueue[int]
	if joinable {
		jq = mp.Must(mp.NewJoinableQueue[int](maxsize))
		q = jq.Queue
	} else {
		q = mp.Must(mp.NewQueue[int](maxsize))
	}
	at := mp.Must(mp.NewSemaphore(0))
	ctx, cancel := faultCtx()
	defer cancel()

	var left []int // what the parent is to take, in order
	took := point != mp.HookSlotTaken
	if took {
		for i := range maxsize {
			if err := q.Put(ctx, i); err != nil {
				t.Fatal(err)
			}
		}
		child := startFault(t, getAndHang, q, point, at)
		awaitStarted(t, ctx, at, 1)
		killFault(t, child)
		left = []int{1, 2} // 0 went with the child
	} else {
		child := startFault(t, putAndHang, q, point, at)
		awaitStarted(t, ctx, at, 1)
		killFault(t, child)
	}
	for len(left) < maxsize {
		v := 100 + len(left)
		if err := q.Put(ctx, v); err != nil {
			t.Fatalf("Put %d of %d after the kill: %v (Len %d): a slot went with the child", len(left)+1, maxsize, err, q.Len())
		}
		left = append(left, v)
	}
	if exact {
		if err := q.TryPut(-2); !errors.Is(err, mp.ErrFull) {
			t.Fatalf("TryPut with %d items in: %v, want ErrFull (Len %d)", maxsize, err, q.Len())
		}
	}
	for _, want := range left {
		v, err := q.TryGet()
		if err != nil || v != want {
			t.Fatalf("TryGet = %d, %v; want %d", v, err, want)
		}
		if joinable {
			if err := jq.TaskDone(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := q.TryGet(); !errors.Is(err, mp.ErrEmpty) || q.Len() != 0 {
		t.Fatalf("TryGet from the drained queue: %v (Len %d)", err, q.Len())
	}
	if joinable {
		err := jq.Join(ctx)
		switch {
		case !took && err != nil:
			t.Fatalf("Join = %v, want nil: the child died before its item counted", err)
		case point == mp.HookTaking && (!errors.Is(err, mp.ErrTasksLost) || !strings.HasSuffix(err.Error(), ": 1 items")):
			t.Fatalf("Join = %v, want ErrTasksLost for 1 item", err)
		case took && !errors.Is(err, mp.ErrTasksLost):
			t.Fatalf("Join = %v, want ErrTasksLost", err)
		}
	}
}

// TestJoinableQueueManyProcesses: more processes than a JoinableQueue has
// entries for take an item each, a few at a time, with no Join in between
// to empty the entries of those that ended; every seventh is killed
// holding its item. Join returns once the others are done, counting
// exactly the killed ones' items as lost.
func TestJoinableQueueManyProcesses(t *testing.T) {
	const n, batch = 80, 4
	jq := mp.Must(mp.NewJoinableQueue[int](0))
	took := mp.Must(mp.NewSemaphore(0))
	ctx, cancel := faultCtx()
	defer cancel()
	for i := range n {
		if err := jq.Put(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	killed := 0
	for i := 0; i < n; i += batch {
		var clean, hung []*mp.Process
		for k := i; k < i+batch; k++ {
			hang := k%7 == 6
			p := startFault(t, takeOne, jq, hang, took, (*mp.Event)(nil))
			if hang {
				hung = append(hung, p)
			} else {
				clean = append(clean, p)
			}
		}
		awaitStarted(t, ctx, took, batch)
		for _, p := range clean {
			if err := join(t, p); err != nil {
				t.Fatalf("child: %v", err)
			}
		}
		for _, p := range hung {
			killFault(t, p)
			killed++
		}
	}
	err := jq.Join(ctx)
	if !errors.Is(err, mp.ErrTasksLost) || !strings.HasSuffix(err.Error(), fmt.Sprintf(": %d items", killed)) {
		t.Fatalf("Join = %v, want ErrTasksLost for the %d items of the killed children", err, killed)
	}
}

// TestJoinableQueueManyLiveHolders: a JoinableQueue records the items of more
// processes than one block of its holder table has entries (the table
// used to stop at 64): 80 consumers killed holding an item each are all
// counted as lost, and Join returns instead of waiting for them.
func TestJoinableQueueManyLiveHolders(t *testing.T) {
	const children = 80
	jq := mp.Must(mp.NewJoinableQueue[int](0))
	took := mp.Must(mp.NewSemaphore(0))
	ctx, cancel := faultCtx()
	defer cancel()
	for i := range children + 1 {
		if err := jq.Put(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	var holders []*mp.Process
	for range children {
		holders = append(holders, startFault(t, takeOne, jq, true, took, (*mp.Event)(nil)))
	}
	awaitStarted(t, ctx, took, children)
	for _, p := range holders {
		killFault(t, p)
	}
	if _, err := jq.Get(ctx); err != nil {
		t.Fatal(err)
	}
	if err := jq.TaskDone(); err != nil {
		t.Fatal(err)
	}
	err := jq.Join(ctx)
	if !errors.Is(err, mp.ErrTasksLost) || !strings.HasSuffix(err.Error(), fmt.Sprintf(": %d items", children)) {
		t.Fatalf("Join = %v, want ErrTasksLost for the %d items of the killed children", err, children)
	}
}

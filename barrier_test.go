package mp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// What barrierAction records, set in every process whose parties may run
// it (by barrierParty).
var (
	barrierActionRuns *mp.Semaphore
	barrierActionLog  string
)

// barrierAction is a registered barrier action: it counts its runs in a
// semaphore and logs the pid of the process it ran in.
func barrierAction() {
	barrierActionRuns.Release()
	f, err := os.OpenFile(barrierActionLog, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	fmt.Fprintln(f, os.Getpid())
}

// barrierParty waits at b for rounds rounds (the first only after taking
// a permit of gate, if gated), checks after each that the action ran once
// per round before it left, and writes its arrival indices to out.
func barrierParty(b *mp.Barrier, runs *mp.Semaphore, log, out string, rounds int, gate *mp.Semaphore, gated bool) error {
	barrierActionRuns, barrierActionLog = runs, log
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var idx []string
	for r := range rounds {
		if gated && r == 0 {
			if err := gate.Acquire(ctx); err != nil {
				return err
			}
		}
		i, err := b.Wait(ctx)
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		if n := runs.Value(); n != r+1 {
			return fmt.Errorf("round %d: the action had run %d times when this party left", r, n)
		}
		idx = append(idx, strconv.Itoa(i))
	}
	return os.WriteFile(out, []byte(strings.Join(idx, " ")), 0o644)
}

// barrierOnce waits at b once.
func barrierOnce(b *mp.Barrier) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := b.Wait(ctx)
	return err
}

func init() { mp.Register(barrierAction, barrierParty, barrierOnce) }

type waitResult struct {
	idx int
	err error
}

// barrierWaiters starts n goroutines that each Wait(ctx) once.
func barrierWaiters(ctx context.Context, b *mp.Barrier, n int) chan waitResult {
	res := make(chan waitResult, n)
	for range n {
		go func() {
			i, err := b.Wait(ctx)
			res <- waitResult{i, err}
		}()
	}
	return res
}

// checkRound checks that a full round of results has each index once.
func checkRound(t *testing.T, res chan waitResult, parties int) {
	t.Helper()
	var idx []int
	for range parties {
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		idx = append(idx, r.idx)
	}
	slices.Sort(idx)
	for i, x := range idx {
		if x != i {
			t.Fatalf("indices of a round: %v", idx)
		}
	}
}

// barrierRounds runs parties goroutines through rounds rounds and checks
// each round: the indices are a permutation of 0..parties-1, the action ran
// exactly once before anyone left, and what every party wrote before Wait
// is visible to all after it (plain memory, which the race detector checks
// too).
func barrierRounds(t *testing.T, parties, rounds int) {
	ran := 0 // written by the action only
	b := mp.Must(mp.NewBarrier(parties, func() { ran++ }))
	ctx := minuteCtx(t)
	data := [2][]int{make([]int, parties), make([]int, parties)}
	seen := make([][]atomic.Int32, rounds)
	for r := range seen {
		seen[r] = make([]atomic.Int32, parties)
	}
	errs := make(chan error, parties)
	var wg sync.WaitGroup
	for p := range parties {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				data[r%2][p] = r
				i, err := b.Wait(ctx)
				if err != nil {
					errs <- fmt.Errorf("party %d round %d: %w", p, r, err)
					return
				}
				if ran != r+1 {
					errs <- fmt.Errorf("party %d round %d: the action had run %d times", p, r, ran)
					return
				}
				for q, v := range data[r%2] {
					if v != r {
						errs <- fmt.Errorf("party %d round %d: party %d's value is %d", p, r, q, v)
						return
					}
				}
				seen[r][i].Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for r := range rounds {
		for i := range parties {
			if n := seen[r][i].Load(); n != 1 {
				t.Fatalf("round %d: index %d returned %d times", r, i, n)
			}
		}
	}
	if b.NWaiting() != 0 || b.Broken() {
		t.Fatalf("after the rounds: %d waiting, broken %v", b.NWaiting(), b.Broken())
	}
}

func TestBarrierRounds(t *testing.T) { barrierRounds(t, 5, 50) }

func TestBarrierAcrossProcesses(t *testing.T) {
	const children, rounds = 3, 6
	runs := mp.Must(mp.NewSemaphore(0))
	gate := mp.Must(mp.NewSemaphore(0))
	dir := t.TempDir()
	log := filepath.Join(dir, "actions")
	b := mp.Must(mp.NewBarrier(children+1, barrierAction))
	var ps []*mp.Process
	for i := range children {
		p := mp.NewProcess(barrierParty, b, runs, log, filepath.Join(dir, strconv.Itoa(i)), rounds, gate, i == 0)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	parent := make(chan error, 1)
	go func() { parent <- barrierParty(b, runs, log, filepath.Join(dir, "parent"), rounds, gate, false) }()
	// Child 0 arrives last in round 0, so that the action runs in a child:
	// only the three other parties can have arrived in that round.
	eventually(t, "three parties in round 0", func() bool { return b.NWaiting() == children })
	gate.Release()
	for _, p := range ps {
		if err := join(t, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-parent; err != nil {
		t.Fatal(err)
	}
	perRound := make([][]int, rounds)
	for _, name := range []string{"0", "1", "2", "parent"} {
		fields := strings.Fields(readFile(t, filepath.Join(dir, name)))
		if len(fields) != rounds {
			t.Fatalf("party %s: indices %v", name, fields)
		}
		for r, f := range fields {
			i, _ := strconv.Atoi(f)
			perRound[r] = append(perRound[r], i)
		}
	}
	for r, idx := range perRound {
		slices.Sort(idx)
		if !slices.Equal(idx, []int{0, 1, 2, 3}) {
			t.Fatalf("round %d: indices %v", r, idx)
		}
	}
	pids := strings.Fields(readFile(t, log))
	if len(pids) != rounds || runs.Value() != rounds {
		t.Fatalf("the action ran %d times (log %v), want %d", runs.Value(), pids, rounds)
	}
	if pids[0] != strconv.Itoa(ps[0].Pid()) {
		t.Fatalf("round 0's action ran in pid %s, want child 0 (pid %d), the last to arrive", pids[0], ps[0].Pid())
	}
}

func TestBarrierAbort(t *testing.T) {
	ctx := minuteCtx(t)
	b := mp.Must(mp.NewBarrier(3, nil))
	res := barrierWaiters(ctx, b, 2)
	eventually(t, "two waiters", func() bool { return b.NWaiting() == 2 })
	b.Abort()
	for range 2 {
		if r := <-res; !errors.Is(r.err, mp.ErrBrokenBarrier) || errors.Is(r.err, context.Canceled) {
			t.Fatalf("waiter after Abort: %d, %v", r.idx, r.err)
		}
	}
	if !b.Broken() || b.NWaiting() != 0 {
		t.Fatalf("after Abort: broken %v, %d waiting", b.Broken(), b.NWaiting())
	}
	if _, err := b.Wait(ctx); !errors.Is(err, mp.ErrBrokenBarrier) {
		t.Fatalf("Wait on a broken barrier: %v", err)
	}
	b.Reset()
	if b.Broken() {
		t.Fatal("broken after Reset")
	}
	checkRound(t, barrierWaiters(ctx, b, 3), 3)
}

func TestBarrierResetWhileWaiting(t *testing.T) {
	ctx := minuteCtx(t)
	var ran atomic.Int64
	b := mp.Must(mp.NewBarrier(3, func() { ran.Add(1) }))
	res := barrierWaiters(ctx, b, 2)
	eventually(t, "two waiters", func() bool { return b.NWaiting() == 2 })
	b.Reset()
	for range 2 {
		if r := <-res; !errors.Is(r.err, mp.ErrBrokenBarrier) {
			t.Fatalf("waiter after Reset: %d, %v", r.idx, r.err)
		}
	}
	if b.Broken() || b.NWaiting() != 0 || ran.Load() != 0 {
		t.Fatalf("after Reset: broken %v, %d waiting, action ran %d times", b.Broken(), b.NWaiting(), ran.Load())
	}
	checkRound(t, barrierWaiters(ctx, b, 3), 3)
	if ran.Load() != 1 {
		t.Fatalf("action ran %d times in one round", ran.Load())
	}
}

func TestBarrierTimeoutBreaks(t *testing.T) {
	b := mp.Must(mp.NewBarrier(3, nil))
	other := barrierWaiters(minuteCtx(t), b, 1)
	eventually(t, "a waiter", func() bool { return b.NWaiting() == 1 })
	short, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	i, err := b.Wait(short)
	if !errors.Is(err, mp.ErrBrokenBarrier) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed-out Wait: %d, %v", i, err)
	}
	if r := <-other; !errors.Is(r.err, mp.ErrBrokenBarrier) || errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("the other waiter: %v, want ErrBrokenBarrier alone", r.err)
	}
	if !b.Broken() {
		t.Fatal("not broken after a timeout")
	}
	b.Reset()
	checkRound(t, barrierWaiters(minuteCtx(t), b, 3), 3)
}

func TestBarrierActionPanics(t *testing.T) {
	b := mp.Must(mp.NewBarrier(3, func() { panic("boom") }))
	res := barrierWaiters(minuteCtx(t), b, 3)
	panicked := 0
	for range 3 {
		r := <-res
		if !errors.Is(r.err, mp.ErrBrokenBarrier) {
			t.Fatalf("Wait: %d, %v", r.idx, r.err)
		}
		if strings.Contains(r.err.Error(), "panicked: boom") {
			panicked++
		}
	}
	if panicked != 1 || !b.Broken() {
		t.Fatalf("%d errors tell of the panic (want 1, the last party's); broken %v", panicked, b.Broken())
	}
}

// An action that is not registered cannot run in a child: the barrier
// breaks, with a clear error for the child that arrived last.
func TestBarrierUnregisteredActionInChild(t *testing.T) {
	var ran atomic.Int64
	b := mp.Must(mp.NewBarrier(2, func() { ran.Add(1) }))
	res := barrierWaiters(minuteCtx(t), b, 1)
	eventually(t, "the parent's party", func() bool { return b.NWaiting() == 1 })
	p := mp.NewProcess(barrierOnce, b)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := join(t, p)
	var pe *mp.ProcessError
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "cannot run in process") || !strings.Contains(pe.Message, "mp.Register") {
		t.Fatalf("child: %v", err)
	}
	if r := <-res; !errors.Is(r.err, mp.ErrBrokenBarrier) {
		t.Fatalf("parent's party: %v", r.err)
	}
	if ran.Load() != 0 || !b.Broken() {
		t.Fatalf("action ran %d times; broken %v", ran.Load(), b.Broken())
	}
}

func TestBarrierNWaitingAndParties(t *testing.T) {
	b := mp.Must(mp.NewBarrier(4, nil))
	if b.Parties() != 4 || b.NWaiting() != 0 {
		t.Fatalf("Parties %d, NWaiting %d", b.Parties(), b.NWaiting())
	}
	ctx := minuteCtx(t)
	// Arrivals one at a time: the k-th to arrive gets index k-1.
	res := make([]chan waitResult, 4)
	for k := range 4 {
		res[k] = barrierWaiters(ctx, b, 1)
		if k < 3 {
			eventually(t, fmt.Sprintf("%d waiting", k+1), func() bool { return b.NWaiting() == k+1 })
		}
	}
	for k := range 4 {
		if r := <-res[k]; r.err != nil || r.idx != k {
			t.Fatalf("arrival %d: index %d, %v", k, r.idx, r.err)
		}
	}
	if b.NWaiting() != 0 {
		t.Fatalf("NWaiting %d after the round", b.NWaiting())
	}

	// One party: every Wait is a round.
	var ran atomic.Int64
	one := mp.Must(mp.NewBarrier(1, func() { ran.Add(1) }))
	for range 3 {
		if i, err := one.Wait(ctx); i != 0 || err != nil {
			t.Fatalf("Barrier(1).Wait: %d, %v", i, err)
		}
	}
	if ran.Load() != 3 {
		t.Fatalf("action ran %d times in 3 rounds", ran.Load())
	}
}

func TestBarrierBadArgumentsAndHandles(t *testing.T) {
	for _, n := range []int{0, -1, mp.MaxBarrierParties + 1} {
		if _, err := mp.NewBarrier(n, nil); !errors.Is(err, mp.ErrBadArguments) {
			t.Fatalf("NewBarrier(%d): %v", n, err)
		}
	}
	var ran atomic.Int64
	b := mp.Must(mp.NewBarrier(2, func() { ran.Add(1) }))
	var d mp.Barrier
	if err := d.UnmarshalBinary(mp.Must(b.MarshalBinary())); err != nil {
		t.Fatal(err)
	}
	if d.Parties() != 2 {
		t.Fatalf("decoded Parties() = %d", d.Parties())
	}
	// Half the parties through each handle: one barrier, and the decoded
	// handle in the same process runs the closure action.
	res := barrierWaiters(minuteCtx(t), b, 1)
	if _, err := d.Wait(minuteCtx(t)); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.err != nil {
		t.Fatal(r.err)
	}
	if ran.Load() != 1 {
		t.Fatalf("action ran %d times", ran.Load())
	}
	if err := d.UnmarshalBinary(mp.Must(mp.Must(mp.NewEvent()).MarshalBinary())); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("UnmarshalBinary of an Event: %v", err)
	}
}

// TestBarrierStress: many parties, many rounds; and more goroutines than
// parties, so that arrivals for the next round meet the end of the last.
func TestBarrierStress(t *testing.T) {
	t.Run("rounds", func(t *testing.T) { barrierRounds(t, 16, 300) })
	t.Run("oversubscribed", func(t *testing.T) {
		// Goroutines wait round after round until the test aborts the
		// barrier. (A fixed number of Waits each could deadlock by design:
		// two goroutines with two Waits left and nobody else.)
		const parties, goroutines, rounds = 4, 12, 300
		var ran atomic.Int64
		b := mp.Must(mp.NewBarrier(parties, func() { ran.Add(1) }))
		ctx := minuteCtx(t)
		var byIndex [parties]atomic.Int64
		errs := make(chan error, goroutines)
		var wg sync.WaitGroup
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i, err := b.Wait(ctx)
					if errors.Is(err, mp.ErrBrokenBarrier) && !errors.Is(err, ctx.Err()) {
						return // aborted
					}
					if err != nil {
						errs <- err
						return
					}
					byIndex[i].Add(1)
				}
			}()
		}
		eventually(t, fmt.Sprintf("%d rounds", rounds), func() bool { return ran.Load() >= rounds })
		b.Abort()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// Every released round returned each index once; the round whose
		// action the Abort interrupted, if any, released nobody.
		released := byIndex[0].Load()
		for i := range byIndex {
			if n := byIndex[i].Load(); n != released {
				t.Fatalf("index %d returned %d times, index 0 %d times", i, n, released)
			}
		}
		if n := ran.Load(); released < rounds || n < released || n > released+1 {
			t.Fatalf("action ran %d times for %d released rounds", n, released)
		}
	})
}

package mp_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp"
	"github.com/multiproc/mp/internal/proc"
)

// nestWork starts, from a pool task, a process that blocks and a pool of
// one worker; it reports its own pid, the process's and the inner
// worker's on q, then hangs (hold) or cleans up and returns the inner
// worker's pid.
func nestWork(q *mp.Queue[int], hold bool) (int, error) {
	ctx := context.Background()
	child := mp.NewProcess(blockForever)
	if err := child.Start(); err != nil {
		return 0, err
	}
	defer child.Join(ctx)
	defer child.Kill()
	inner, err := mp.NewPool(1)
	if err != nil {
		return 0, err
	}
	defer inner.Terminate()
	innerPid, err := mp.Apply[int](ctx, inner, pid, 0)
	if err != nil {
		return 0, err
	}
	for _, id := range []int{os.Getpid(), child.Pid(), innerPid} {
		if err := q.Put(ctx, id); err != nil {
			return 0, err
		}
	}
	if hold {
		select {}
	}
	return innerPid, nil
}

func init() { mp.Register(nestWork) }

// waitGone waits until none of pids runs (a zombie does not), failing the
// test if ctx ends first.
func waitGone(t *testing.T, ctx context.Context, pids []int) {
	t.Helper()
	for _, id := range pids {
		for proc.Alive(proc.ID{Pid: id}) {
			if ctx.Err() != nil {
				t.Fatalf("process %d still runs", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestPoolTasksMayStartProcesses: a pool task may start processes and
// pools of its own; they die with the worker when it is killed, for a
// cancelled task or from outside.
func TestPoolTasksMayStartProcesses(t *testing.T) {
	ctx := within(t)
	q, err := mp.NewQueue[int](0)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pids := func() []int {
		var ids []int
		for range 3 {
			id, err := q.Get(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	p := newPool(t, 1)

	if _, err := mp.Apply[int](ctx, p, nestWork, q, false); err != nil {
		t.Fatalf("a task starting a process and a pool: %v", err)
	}
	ids := pids()
	waitGone(t, ctx, ids[1:])

	// Cancelled while its children run: the worker is killed, and they
	// die with it.
	tctx, cancel := context.WithCancel(ctx)
	r := make(chan error, 1)
	go func() { _, err := mp.Apply[int](tctx, p, nestWork, q, true); r <- err }()
	ids = pids()
	cancel()
	if err := <-r; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled task: %v", err)
	}
	waitGone(t, ctx, ids)

	// The worker SIGKILLed from outside (as the OOM killer does).
	a := mp.ApplyAsync[int](p, nestWork, []any{q, true})
	ids = pids()
	syscall.Kill(ids[0], syscall.SIGKILL)
	if _, err := a.Get(ctx); !errors.Is(err, mp.ErrWorkerLost) {
		t.Fatalf("task of a killed worker: %v", err)
	}
	waitGone(t, ctx, ids)
	closeAndJoin(t, p)

	// A daemonic process still may not start children.
	d := mp.NewProcess(tryChild)
	d.Daemon = true
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if err := d.Join(ctx); err == nil {
		t.Fatal("a daemonic process started a child")
	}
}

package mp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

func poolNamed(t *testing.T, name string) mp.PoolStatus {
	t.Helper()
	for _, p := range readStatus(t).Pools {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no pool named %q", name)
	return mp.PoolStatus{}
}

func TestStatusPoolCounts(t *testing.T) {
	ctx := within(t)
	p := newPool(t, 2)
	p.SetName("status-pool")
	if _, err := mp.Map[int](ctx, p, square, ints(20)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		_, err := mp.Apply[int](ctx, p, panicOnTwo, i)
		if (err != nil) != (i == 2) {
			t.Fatalf("panicOnTwo(%d): %v", i, err)
		}
	}
	s := poolNamed(t, "status-pool")
	if s.Done != 24 || s.Failed != 1 || s.Queued != 0 || s.Running != 0 || s.Lost != 0 || s.Restarts != 0 || s.Size != 2 {
		t.Fatalf("status %+v, want 24 done, 1 failed, nothing queued, running or restarted", s)
	}
	if len(s.Workers) != 2 || s.Workers[0].Pid == 0 || s.Workers[0].Task != "" {
		t.Fatalf("workers %+v, want 2 idle ones", s.Workers)
	}
	if s.Latency.Count < 6 || s.Latency.P50 <= 0 || s.Latency.P50 > s.Latency.Max || s.Latency.P99 > s.Latency.Max {
		t.Fatalf("latency %+v", s.Latency)
	}
	// Every worker is among the processes, by name.
	names := map[int]string{}
	for _, pr := range readStatus(t).Processes {
		names[pr.Pid] = pr.Name
	}
	pipes := map[string]bool{}
	for _, q := range readStatus(t).Queues {
		pipes[q.Name] = q.Kind == "Pipe"
	}
	for _, w := range s.Workers {
		if names[w.Pid] != w.Name || !strings.HasPrefix(w.Name, "PoolWorker-") {
			t.Fatalf("worker %+v listed as %q", w, names[w.Pid])
		}
		if !pipes["status-pool/"+w.Name] {
			t.Fatalf("no pipe named after %s in %v", w.Name, pipes)
		}
	}
	// A running task shows with its age.
	r := mp.ApplyAsync[int](p, hang, []any{1})
	deadline := time.Now().Add(time.Minute)
	for {
		s = poolNamed(t, "status-pool")
		busy := 0
		for _, w := range s.Workers {
			if strings.HasSuffix(w.Task, "hang") && w.TaskAge > 0 {
				busy++
			}
		}
		if busy == 1 && s.Running == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hanging task never showed: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
	p.Terminate()
	if _, err := r.Get(ctx); !errors.Is(err, mp.ErrPoolTerminated) {
		t.Fatal(err)
	}
	if s := poolNamed(t, "status-pool"); !s.Terminated {
		t.Fatalf("%+v: not terminated", s)
	}
}

func TestStatusPoolFaults(t *testing.T) {
	ctx := within(t)
	t.Run("lost", func(t *testing.T) {
		p := newPool(t, 1)
		p.SetName("status-lost")
		if _, err := mp.Apply[int](ctx, p, dieOn, 5, 5); !errors.Is(err, mp.ErrWorkerLost) {
			t.Fatal(err)
		}
		s := poolNamed(t, "status-lost")
		if s.Lost != 1 || s.Failed != 1 || s.Restarts != 1 || s.RestartsBy["killed by signal 9"] != 1 || s.TimedOut != 0 ||
			!strings.Contains(s.LastRestart, "killed by signal 9") {
			t.Fatalf("status %+v, want 1 task lost, 1 restart for signal 9", s)
		}
		closeAndJoin(t, p)
	})
	t.Run("retried", func(t *testing.T) {
		p := newPool(t, 1, mp.WithRetries(1))
		p.SetName("status-retried")
		if _, err := mp.Apply[int](ctx, p, dieOn, 5, 5); !errors.Is(err, mp.ErrWorkerLost) {
			t.Fatal(err)
		}
		if _, err := mp.Apply[int](ctx, p, square, 3); err != nil {
			t.Fatal(err)
		}
		s := poolNamed(t, "status-retried")
		if s.Retried != 1 || s.Lost != 1 || s.Failed != 1 || s.Done != 1 || s.Restarts != 2 {
			t.Fatalf("status %+v, want 1 retry, then lost; 2 restarts", s)
		}
		closeAndJoin(t, p)
	})
	t.Run("timed out", func(t *testing.T) {
		p := newPool(t, 1, mp.WithTaskTimeout(300*time.Millisecond))
		p.SetName("status-timeout")
		// The timeout runs from when the task is handed over: let the
		// worker be ready to read it (see the report on issue 17).
		if _, err := mp.Apply[int](ctx, p, square, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := mp.Apply[int](ctx, p, hang, 1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		s := poolNamed(t, "status-timeout")
		if s.TimedOut != 1 || s.Failed != 1 || s.Done != 1 || s.Lost != 0 || s.Restarts != 1 || s.RestartsBy["killed by the pool (task timeout or context)"] != 1 {
			t.Fatalf("status %+v, want 1 timeout and its restart", s)
		}
		closeAndJoin(t, p)
	})
	t.Run("thread pool", func(t *testing.T) {
		p, err := mp.NewThreadPool(2)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Terminate()
		p.SetName("status-threads")
		if _, err := mp.Map[int](ctx, p, func(x int) (int, error) {
			if x == 3 {
				return 0, errors.New("three")
			}
			return x, nil
		}, ints(10), mp.WithChunkSize(1)); err == nil {
			t.Fatal("no error")
		}
		s := poolNamed(t, "status-threads")
		if !s.Threads || s.Done != 9 || s.Failed != 1 || s.Latency.Count != 10 {
			t.Fatalf("status %+v, want 9 done, 1 failed, 10 tasks timed", s)
		}
	})
}

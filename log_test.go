package mp_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// recorder is a slog.Handler that keeps the records it is given.
type recorder struct {
	mu   sync.Mutex
	recs []logged
}

type logged struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	l := logged{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool { l.attrs[a.Key] = a.Value.String(); return true })
	r.mu.Lock()
	r.recs = append(r.recs, l)
	r.mu.Unlock()
	return nil
}

// record sends the library's events to a new recorder for the test.
func record(t *testing.T) *recorder {
	r := &recorder{}
	mp.SetLogger(slog.New(r))
	t.Cleanup(func() { mp.SetLogger(nil) })
	return r
}

// find returns the first record of msg whose attributes include want.
func (r *recorder) find(msg string, want map[string]string) (logged, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
next:
	for _, l := range r.recs {
		if l.msg != msg {
			continue
		}
		for k, v := range want {
			if l.attrs[k] != v {
				continue next
			}
		}
		return l, true
	}
	return logged{}, false
}

// await waits up to a minute for the record (some are logged off the
// caller's goroutine).
func (r *recorder) await(t *testing.T, msg string, want map[string]string) logged {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if l, ok := r.find(msg, want); ok {
			return l
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("no %q record with %v in %+v", msg, want, r.recs)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLogProcessLifecycle(t *testing.T) {
	rec := record(t)
	p := mp.NewProcess(noop)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(p.Pid())
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	rec.await(t, "process started", map[string]string{"name": p.Name, "pid": pid, "process": "MainProcess"})
	if l := rec.await(t, "process exited", map[string]string{"name": p.Name, "pid": pid, "status": "0"}); l.level != slog.LevelInfo {
		t.Fatalf("clean exit logged at %v", l.level)
	}
	e := mp.NewProcess(fail, "no")
	e.Start()
	join(t, e)
	if l := rec.await(t, "process exited", map[string]string{"name": e.Name, "status": "1"}); l.level != slog.LevelWarn {
		t.Fatalf("failed exit logged at %v", l.level)
	}
	l := mp.Must(mp.NewLock())
	defer l.Close()
	holder := startHolder(t, t.TempDir(), holdLock, l)
	holder.Kill()
	join(t, holder)
	rec.await(t, "process killed", map[string]string{"name": holder.Name, "signal": "SIGKILL", "by": "Kill"})
}

func TestLogPoolEvents(t *testing.T) {
	rec := record(t)
	ctx := within(t)
	p := newPool(t, 1, mp.WithRetries(1))
	p.SetName("log-pool")
	if _, err := mp.Apply[int](ctx, p, dieOn, 5, 5); !errors.Is(err, mp.ErrWorkerLost) {
		t.Fatal(err)
	}
	rec.await(t, "task retried", map[string]string{"pool": "log-pool", "func": "github.com/multiproc/mp_test.dieOn", "exit": "-9", "retries_left": "0"})
	rec.await(t, "task lost", map[string]string{"pool": "log-pool", "exit": "-9"})
	rec.await(t, "pool worker replaced", map[string]string{"pool": "log-pool", "reason": "killed by signal 9"})
	closeAndJoin(t, p)

	q := newPool(t, 1, mp.WithTaskTimeout(300*time.Millisecond))
	q.SetName("log-timeout")
	mp.Apply[int](ctx, q, square, 1) // the worker is ready: the timeout runs from the task's start
	if _, err := mp.Apply[int](ctx, q, hang, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	rec.await(t, "task timed out", map[string]string{"pool": "log-timeout", "func": "github.com/multiproc/mp_test.hang"})
	rec.await(t, "pool worker replaced", map[string]string{"pool": "log-timeout", "reason": "killed by the pool (task timeout or context)"})
	closeAndJoin(t, q)
}

func TestLogLockRecovered(t *testing.T) {
	rec := record(t)
	l := mp.Must(mp.NewLock())
	defer l.Close()
	l.SetName("log-lock")
	holder := startHolder(t, t.TempDir(), holdLock, l)
	holder.Kill()
	join(t, holder)
	if err := l.Acquire(within(t)); err != mp.ErrOwnerDied {
		t.Fatal(err)
	}
	l.Release()
	rec.await(t, "lock recovered from a dead owner", map[string]string{"kind": "Lock", "name": "log-lock", "dead_pid": strconv.Itoa(holder.Pid())})
}

func TestLogQueueItemsLost(t *testing.T) {
	rec := record(t)
	q := mp.Must(mp.NewQueue[int](3))
	defer q.Close()
	q.SetName("log-queue")
	at := mp.Must(mp.NewSemaphore(0))
	defer at.Close()
	ctx, cancel := faultCtx()
	defer cancel()
	for i := range 3 {
		if err := q.Put(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	child := startFault(t, getAndHang, q, mp.HookTaking, at)
	awaitStarted(t, ctx, at, 1)
	killFault(t, child)
	rec.await(t, "queue items lost", map[string]string{"kind": "Queue", "name": "log-queue", "lost": "1",
		"dead_pid": strconv.Itoa(child.Pid())})
}

func TestLogSilentByDefault(t *testing.T) {
	rec := &recorder{}
	old := slog.Default()
	slog.SetDefault(slog.New(rec))
	defer slog.SetDefault(old)
	p := mp.NewProcess(noop)
	p.Start()
	join(t, p)
	if len(rec.recs) != 0 {
		t.Fatalf("logged without a logger: %+v", rec.recs)
	}
}

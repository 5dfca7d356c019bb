package mp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"weak"
)

// poolStats are a pool's running figures, kept in the process that owns
// the pool. They are updated under the pool's mutex, where the pool
// already is when a task starts and ends.
type poolStats struct {
	name                  string
	done, failed          uint64 // calls
	timedOut, retried     uint64 // tasks
	lost                  uint64 // tasks failed with their worker's death
	restarts              uint64
	restartsBy            map[string]uint64
	lastRestart           string
	latency               [latencyWindow]time.Duration
	latencyN, latencyNext int
}

// latencyWindow is how many recent tasks the latency percentiles cover.
const latencyWindow = 1024

func (s *poolStats) addLatency(d time.Duration) {
	s.latency[s.latencyNext] = d
	s.latencyNext = (s.latencyNext + 1) % latencyWindow
	s.latencyN = min(s.latencyN+1, latencyWindow)
}

// answered counts a task its worker answered after running it since
// start.
func (s *poolStats) answered(j *job, rep *reply, start time.Time) {
	failed := 0
	if rep.batched {
		failed = len(rep.fails)
	} else {
		for i := range rep.rs {
			if rep.rs[i].err != nil {
				failed++
			}
		}
	}
	n := j.calls()
	s.done += uint64(n - failed)
	s.failed += uint64(failed)
	if !start.IsZero() {
		s.addLatency(time.Since(start))
	}
}

// ranLocal counts a thread pool's task.
func (s *poolStats) ranLocal(rs []result, start time.Time) {
	for i := range rs {
		if rs[i].err != nil {
			s.failed++
		} else {
			s.done++
		}
	}
	if !start.IsZero() {
		s.addLatency(time.Since(start))
	}
}

// settled counts and logs what became of a dead worker's tasks.
func (s *poolStats) settled(w *worker, code int, failed []*job, errs []error, retried []*job) {
	for i, j := range failed {
		s.failed += uint64(j.calls())
		switch err := errs[i]; {
		case errors.Is(err, context.DeadlineExceeded) && j.killErr == err:
			s.timedOut++
			logEvent(slog.LevelWarn, "task timed out", slog.String("pool", s.name), slog.String("func", j.fn.name),
				slog.String("worker", w.proc.Name), slog.Int("pid", w.proc.Pid()))
		case errors.Is(err, ErrWorkerLost):
			s.lost++
			logEvent(slog.LevelWarn, "task lost", slog.String("pool", s.name), slog.String("func", j.fn.name),
				slog.String("worker", w.proc.Name), slog.Int("pid", w.proc.Pid()), slog.Int("exit", code))
		}
	}
	for _, j := range retried {
		s.retried++
		logEvent(slog.LevelWarn, "task retried", slog.String("pool", s.name), slog.String("func", j.fn.name),
			slog.String("worker", w.proc.Name), slog.Int("pid", w.proc.Pid()), slog.Int("exit", code),
			slog.Int("retries_left", j.retries))
	}
}

// replaced counts the replacement of w, which exited with code.
func (s *poolStats) replaced(w *worker, code int, killed bool) {
	why := exitReason(code)
	switch {
	case killed:
		why = "killed by the pool (task timeout or context)"
	case w.retired:
		why = "retired"
	}
	s.restarts++
	if s.restartsBy == nil {
		s.restartsBy = map[string]uint64{}
	}
	s.restartsBy[why]++
	s.lastRestart = fmt.Sprintf("%s (pid %d) %s", w.proc.Name, w.proc.Pid(), why)
	level := slog.LevelWarn
	if w.retired {
		level = slog.LevelInfo
	}
	logEvent(level, "pool worker replaced", slog.String("pool", s.name), slog.String("worker", w.proc.Name),
		slog.Int("pid", w.proc.Pid()), slog.String("reason", why))
}

func exitReason(code int) string {
	if code < 0 {
		return fmt.Sprintf("killed by signal %d", -code)
	}
	return fmt.Sprintf("exited with status %d", code)
}

// SetName names the pool for ReadStatus, the status page and the logs
// ("pool-1", "pool-2"... in the order pools were made, until then), and
// its workers' pipes after it.
func (p *Pool) SetName(name string) {
	p.mu.Lock()
	p.stats.name = name
	for w := range p.workers {
		pipeName := name + "/" + w.proc.Name
		w.conn.SetName(pipeName[max(0, len(pipeName)-MaxName):])
	}
	p.mu.Unlock()
}

// livePools are the pools of this process, for ReadStatus. A pool dropped
// without Join leaves the list when the garbage collector takes it.
var livePools struct {
	mu    sync.Mutex
	seq   int
	pools []weak.Pointer[Pool]
}

func registerPool(p *Pool) {
	livePools.mu.Lock()
	defer livePools.mu.Unlock()
	livePools.seq++
	p.stats.name = fmt.Sprintf("pool-%d", livePools.seq)
	if n := len(livePools.pools); n >= 64 && n&(n-1) == 0 {
		// A program that makes pools without reading the status keeps
		// only the live ones' entries.
		livePools.pools = slices.DeleteFunc(livePools.pools, func(w weak.Pointer[Pool]) bool { return w.Value() == nil })
	}
	livePools.pools = append(livePools.pools, weak.Make(p))
}

func eachPool(f func(*Pool)) {
	livePools.mu.Lock()
	var ps []*Pool
	live := livePools.pools[:0]
	for _, w := range livePools.pools {
		if p := w.Value(); p != nil {
			ps = append(ps, p)
			live = append(live, w)
		}
	}
	clear(livePools.pools[len(live):])
	livePools.pools = live
	livePools.mu.Unlock()
	for _, p := range ps {
		f(p)
	}
}

// PoolStatus is a pool's figures (see ReadStatus). Calls are counted one
// by one (a Map of 100 items is 100 calls); a task is what a worker is
// given at once: one call, or a chunk of a Map.
type PoolStatus struct {
	Name    string
	Threads bool // a thread pool (NewThreadPool)
	Size    int  // the number of workers asked for
	Workers []WorkerStatus
	Queued  int // calls submitted and not yet given to a worker
	Running int // calls given to workers and not yet answered

	Done     uint64 // calls that returned without error
	Failed   uint64 // calls that ran and failed: their error, a panic, their worker's death, a timeout
	TimedOut uint64 // tasks whose worker was killed for the task timeout or their context
	Retried  uint64 // tasks run again after their worker died (WithRetries)
	Lost     uint64 // tasks failed with ErrWorkerLost

	Restarts   uint64            // workers replaced
	RestartsBy map[string]uint64 // why: "killed by signal 9", "retired"...
	// LastRestart says which worker was last replaced and why; "" if none.
	LastRestart string

	// Latency is over the last 1024 tasks at most: from a task's being
	// handed to a worker to its answer.
	Latency Latency

	Closed, Terminated bool
	Broken             string // why the pool cannot run tasks, if it cannot
}

// WorkerStatus is one worker process of a pool.
type WorkerStatus struct {
	Name string
	Pid  int
	// Task is the function the worker runs now ("" when idle), TaskAge how
	// long it has run, and Given how many tasks it holds (running or
	// waiting in its pipe).
	Task    string
	TaskAge time.Duration
	Given   int
	Ready   bool // its initializer has run
}

// Latency summarises task latencies.
type Latency struct {
	Count              int // tasks measured
	P50, P90, P99, Max time.Duration
}

func (s *poolStats) latencies() Latency {
	if s.latencyN == 0 {
		return Latency{}
	}
	ds := slices.Clone(s.latency[:s.latencyN])
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return Latency{Count: len(ds), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ds[len(ds)-1]}
}

// status returns the pool's figures.
func (p *Pool) status() PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PoolStatus{
		Name: p.stats.name, Threads: p.threads, Size: p.cfg.n,
		Done: p.stats.done, Failed: p.stats.failed, TimedOut: p.stats.timedOut,
		Retried: p.stats.retried, Lost: p.stats.lost, Restarts: p.stats.restarts,
		LastRestart: p.stats.lastRestart, Latency: p.stats.latencies(),
		Closed: p.closed, Terminated: p.terminated,
	}
	if len(p.stats.restartsBy) > 0 {
		s.RestartsBy = make(map[string]uint64, len(p.stats.restartsBy))
		for k, v := range p.stats.restartsBy {
			s.RestartsBy[k] = v
		}
	}
	if p.broken != nil {
		s.Broken = p.broken.Error()
	}
	for _, j := range p.queue {
		s.Queued += j.calls()
	}
	for j := range p.running {
		s.Running += j.calls()
	}
	now := time.Now()
	for w := range p.workers {
		ws := WorkerStatus{Name: w.proc.Name, Pid: w.proc.Pid(), Given: len(w.inflight), Ready: w.ready}
		if len(w.inflight) > 0 && w.inflight[0] != nil {
			ws.Task = w.inflight[0].fn.name
			if !w.since.IsZero() {
				ws.TaskAge = now.Sub(w.since)
			}
		}
		for _, j := range w.inflight {
			if j != nil {
				s.Running += j.calls()
			}
		}
		s.Workers = append(s.Workers, ws)
	}
	slices.SortFunc(s.Workers, func(a, b WorkerStatus) int { return a.Pid - b.Pid })
	return s
}

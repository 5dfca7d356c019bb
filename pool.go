package mp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of pools.
var (
	// ErrPoolClosed is returned for work submitted after Close or
	// Terminate.
	ErrPoolClosed = errors.New("mp: pool is closed")
	// ErrPoolTerminated fails the tasks that had not finished when
	// Terminate was called.
	ErrPoolTerminated = errors.New("mp: pool was terminated")
	// ErrPoolBroken is what the tasks of a pool that cannot run them any
	// more fail with (wrapped, saying why): its initializer failed, or its
	// workers keep dying before they are ready.
	ErrPoolBroken = errors.New("mp: pool is broken")
	// ErrWorkerLost is what a task fails with when the worker process
	// running it died (killed, out of memory, os.Exit) and no retry was
	// left; the error is a *WorkerLostError.
	ErrWorkerLost = errors.New("mp: pool worker died while running the task")
)

// WorkerLostError reports the death of the worker that was running a task.
// It matches ErrWorkerLost with errors.Is.
type WorkerLostError struct {
	Pid int
	// ExitCode is the worker's exit status, or -N if signal N killed it.
	ExitCode int
}

func (e *WorkerLostError) Error() string {
	if e.ExitCode < 0 {
		return fmt.Sprintf("mp: pool worker %d was killed by signal %d while running the task", e.Pid, -e.ExitCode)
	}
	return fmt.Sprintf("mp: pool worker %d exited with status %d while running the task", e.Pid, e.ExitCode)
}

// Is makes errors.Is(err, ErrWorkerLost) true.
func (e *WorkerLostError) Is(target error) bool { return target == ErrWorkerLost }

// Pool is a pool of worker processes that run registered functions, or of
// goroutines that run any function (NewThreadPool): Python's
// multiprocessing.Pool and multiprocessing.pool.ThreadPool. Work is given
// to it with the package's generic functions Apply, ApplyAsync, Map,
// MapAsync, Imap, ImapUnordered and Starmap, since methods cannot have
// type parameters.
//
// A pool never hangs on a dead worker: a worker that dies (SIGKILL, out of
// memory, os.Exit) fails the one task it was running with a
// *WorkerLostError, or runs it again if retries were asked for
// (WithRetries); it is replaced, and the tasks queued behind it go to
// other workers. A task whose context ends while it runs, or that runs past
// the pool's task timeout, has its worker killed and replaced, and fails
// with the context's error.
//
// When the process stops (NotifyContext caught a signal, or the process is
// a child sent SIGTERM), its pools start no queued task (those fail with
// ErrStopped) and replace no worker; the running tasks see their contexts
// cancelled and have the grace period to return, and their results are
// delivered. A thread pool's running tasks fail at once with their
// context's error, if it was the cancelled one, as goroutines cannot be
// killed.
//
// A task's returned error or panic is not printed: it goes to the caller
// (as Python's pools return a task's exception), a panic with the worker's
// stack in TaskError.Stack. Only a worker's own failure, such as that of
// its initializer, is printed on its stderr, as a Process's is (see
// Process.QuietErrors).
//
// A process pool's tasks may start processes and pools of their own
// (Python's daemonic workers may not); those die with the worker if it is
// killed or dies. A task should join or terminate what it started: a
// worker waits for its non-daemonic children before it exits.
//
// A process pool's tasks travel to its workers, and their results back,
// through a pipe that carries up to MaxMessage (64 MiB) per task; larger
// ones are refused, not carried: a task whose arguments (or a Map chunk
// whose items) encode to more fails with ErrTooLarge when it is
// submitted, and a result that does not fit (with the results before it
// in its chunk) fails its call with ErrTooLarge. The worker stays in
// service either way. Pass large data through SharedMemory or a file.
// (Isolated workers, for code the program does not trust, use a socket
// instead, with the same bound: see WithIsolatedWorkers.)
//
// A Pool's methods may be called from any goroutine.
//
// The zero Pool is not usable: make one with NewPool or NewThreadPool.
type Pool struct {
	cfg     poolConfig
	threads bool

	mu           sync.Mutex
	cond         *sync.Cond // signalled when work, window room or state changes
	queue        []*job     // submitted, not yet given to a worker (a deque)
	workers      map[*worker]struct{}
	closed       bool
	terminated   bool
	stopping     bool  // the process is stopping (NotifyContext, SIGTERM): nothing more starts
	admitted     int   // submitters admitted before Close that may still submit (Map, MapAsync, Imap)
	broken       error // an initializer failed: every task fails with it
	failedStarts int   // workers in a row that died before they were ready
	nextID       uint64
	seq          int               // workers started, for names
	running      map[*job]struct{} // thread pools: jobs being run
	initOnce     sync.Once         // thread pools: the initializer
	wg           sync.WaitGroup
	exited       chan struct{} // closed once the workers are gone (after Join)
	joined       chan struct{} // closed once, besides, the callbacks have run

	callbacks callbackRunner
	stats     poolStats // guarded by mu
}

type poolConfig struct {
	n        int
	initFn   any
	init     *target
	initArgs []any
	maxTasks int
	timeout  time.Duration
	retries  int
	maxRSS   int64 // bytes; 0: no limit
	window   int   // tasks a worker process is given at a time
	isolated bool  // WithIsolatedWorkers
	limits   Limits
}

// PoolOption configures a pool made by NewPool or NewThreadPool.
type PoolOption func(*poolConfig)

// WithInitializer makes each worker call fn(args...) once before its first
// task (Python's initializer and initargs); fn must be registered for a
// process pool. If it fails or panics, the pool is broken: every task not
// yet finished, and every later one, fails with an error wrapping
// ErrPoolBroken that says so (rather than Python's endless restarting of
// workers). So does a pool whose workers die, 2n+1 times in a row (n
// workers), before they are ready: killed at start, or exiting from the
// initializer.
func WithInitializer(fn any, args ...any) PoolOption {
	return func(c *poolConfig) { c.initFn, c.initArgs = fn, args }
}

// WithMaxTasksPerChild makes each worker process exit after n tasks (a
// chunk of Map counts as one), to be replaced by a new one: Python's
// maxtasksperchild, to bound what a leaking library can hold. It has no
// effect on thread pools.
func WithMaxTasksPerChild(n int) PoolOption { return func(c *poolConfig) { c.maxTasks = n } }

// WithMaxMemoryPerChild makes each worker process exit, to be replaced by
// a new one, after a task that leaves its resident memory (its current
// RSS, not its peak) above bytes: loky's and billiard's recycling of
// workers that grow. The memory is measured after each task, which is
// never interrupted; 0 means no limit. It has no effect on thread pools.
func WithMaxMemoryPerChild(bytes int64) PoolOption {
	return func(c *poolConfig) { c.maxRSS = bytes }
}

// WithTaskTimeout bounds how long a task may run, counted from when it
// starts; past it, its worker is killed and replaced and the task fails
// with context.DeadlineExceeded (a function that takes a context sees the
// deadline too). A call's context deadline applies as well, whichever is
// sooner.
func WithTaskTimeout(d time.Duration) PoolOption { return func(c *poolConfig) { c.timeout = d } }

// WithRetries makes a task whose worker died run again, up to n more
// times, before it fails with ErrWorkerLost. Tasks killed for their
// timeout or context are not retried.
func WithRetries(n int) PoolOption { return func(c *poolConfig) { c.retries = n } }

// NewPool starts n worker processes (0 means CPUCount()) and returns the
// pool. It returns an error wrapping ErrBadArguments for a negative n or
// option, ErrNotInitialized if Init was not called, and the error of a
// worker that cannot be started.
func NewPool(n int, opts ...PoolOption) (*Pool, error) {
	p, err := newPool(n, false, opts)
	if err != nil {
		return nil, err
	}
	for range p.cfg.n {
		if err := p.startWorker(); err != nil {
			p.Terminate()
			return nil, err
		}
	}
	return p, nil
}

// NewThreadPool returns a pool of n goroutines (0 means CPUCount()),
// Python's ThreadPool: for I/O-bound work, or functions that cannot run in
// another process (function literals are fine here). The calls are the
// same as for a process pool. A goroutine cannot be killed: a task past its
// timeout or context fails at once with the context's error, and the
// goroutine is given the ended context (if the function takes one) and
// is free again when the function returns.
func NewThreadPool(n int, opts ...PoolOption) (*Pool, error) {
	p, err := newPool(n, true, opts)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.cfg.n {
		p.startThreadLocked()
	}
	return p, nil
}

func newPool(n int, threads bool, opts []PoolOption) (*Pool, error) {
	if n < 0 {
		return nil, badValue("a pool of %d workers: the number must be 0 (CPUCount) or more", n)
	}
	if n == 0 {
		n = CPUCount()
	}
	cfg := poolConfig{n: n, window: 2}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.initFn != nil {
		var err error
		if threads {
			cfg.init, err = localTarget(cfg.initFn)
		} else {
			cfg.init, err = lookup(cfg.initFn)
		}
		if err != nil {
			return nil, fmt.Errorf("mp: pool initializer: %w", err)
		}
		if _, err := cfg.init.bind(cfg.initArgs); err != nil {
			return nil, fmt.Errorf("mp: pool initializer: %w", err)
		}
	}
	switch {
	case cfg.timeout < 0:
		return nil, badValue("WithTaskTimeout(%v): a task timeout must be 0 (none) or more", cfg.timeout)
	case cfg.maxTasks < 0:
		return nil, badValue("WithMaxTasksPerChild(%d): the number of tasks must be 0 (no limit) or more", cfg.maxTasks)
	case cfg.retries < 0:
		return nil, badValue("WithRetries(%d): the number of retries must be 0 or more", cfg.retries)
	case cfg.maxRSS < 0:
		return nil, badValue("WithMaxMemoryPerChild(%d): the number of bytes must be 0 (no limit) or more", cfg.maxRSS)
	}
	if cfg.isolated {
		if err := cfg.checkIsolated(threads); err != nil {
			return nil, err
		}
	}
	if !threads && !initialized.Load() {
		return nil, ErrNotInitialized
	}
	p := &Pool{cfg: cfg, threads: threads, workers: make(map[*worker]struct{}), running: make(map[*job]struct{})}
	p.cond = sync.NewCond(&p.mu)
	p.callbacks.start()
	registerPool(p)
	stopIfStopping(p)
	return p, nil
}

// stopForTree is what a stopping process does to its pool: no queued task
// starts (they fail with ErrStopped), and no worker is replaced; the tasks
// running go on, their contexts cancelled by the stop, for the grace
// period.
func (p *Pool) stopForTree() {
	p.mu.Lock()
	p.stopping = true
	q := p.drainLocked()
	p.cond.Broadcast()
	p.mu.Unlock()
	for _, j := range q {
		j.fail(ErrStopped)
	}
}

// Close stops the pool from accepting work; it never drops work: what was
// submitted still runs, exactly once, with its callbacks, including the
// rest of a Map, MapAsync, Starmap, Imap or ImapUnordered begun before
// Close (an Imap goes on to the end of its input, or until its loop is
// left). A worker that dies meanwhile is replaced while work is left to
// give out. The workers exit when it is done, and Join waits for that.
// Closing twice does nothing.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Terminate stops the pool now: it kills the worker processes and their
// whole process trees, fails every unfinished task with
// ErrPoolTerminated, and waits for the workers to be gone. A thread pool's
// goroutines cannot be killed: their tasks fail at once, and the
// goroutines end when their functions return. Called from a callback
// (WithCallback, WithErrorCallback), Terminate does not wait for the
// callbacks queued behind the calling one: they run after it returns,
// with the tasks' outcomes (ErrPoolTerminated for those it failed).
func (p *Pool) Terminate() {
	p.mu.Lock()
	q := p.terminateLocked()
	p.mu.Unlock()
	for _, j := range q {
		j.fail(ErrPoolTerminated)
	}
	if !p.threads {
		p.wg.Wait()
	}
	p.callbacks.stop()
}

// terminateLocked kills the workers and returns the queued jobs, for the
// caller to fail once it has released p.mu.
func (p *Pool) terminateLocked() []*job {
	p.closed = true
	p.cond.Broadcast()
	if p.terminated {
		return nil
	}
	p.terminated = true
	for w := range p.workers {
		w.kill(ErrPoolTerminated)
	}
	for t := range p.running {
		t.fail(ErrPoolTerminated)
	}
	return p.drainLocked()
}

// Join waits, until ctx ends, for the workers to exit after Close or
// Terminate, and for the callbacks of finished tasks to have run. It
// returns an error wrapping ErrBadArguments if the pool is neither closed
// nor terminated (as Python raises ValueError), or ctx.Err(); once the
// pool is done, it returns nil even if ctx has ended too. Called from a
// callback (WithCallback, WithErrorCallback), Join waits for the workers
// only: the callbacks queued behind the calling one run after it returns.
func (p *Pool) Join(ctx context.Context) error {
	p.mu.Lock()
	closed := p.closed
	if closed && p.joined == nil {
		// One waiter for every Join, for as long as it takes.
		p.exited, p.joined = make(chan struct{}), make(chan struct{})
		go func() {
			p.wg.Wait()
			close(p.exited)
			p.callbacks.stop()
			close(p.joined)
		}()
	}
	exited, joined := p.exited, p.joined
	p.mu.Unlock()
	if !closed {
		return fmt.Errorf("%w: Join before Close or Terminate would wait forever", ErrBadArguments)
	}
	done := joined
	if p.callbacks.onRunner() {
		done = exited
	}
	return waitDone(ctx, done)
}

// waitDone waits for done to be closed until ctx ends; done wins if both
// are.
func waitDone(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		select {
		case <-done:
			return nil
		default:
			return ctx.Err()
		}
	}
}

// admit lets a call that submits its work in several steps (Map,
// MapAsync, Imap) go on submitting after Close: the work was given before
// Close, so it runs. The workers do not retire while a call is admitted.
// Each admit that returns nil is paired with a release.
func (p *Pool) admit() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return ErrPoolClosed
	case p.broken != nil:
		return p.broken
	case p.stopping:
		return ErrStopped
	}
	p.admitted++
	return nil
}

// release ends an admission.
func (p *Pool) release() {
	p.mu.Lock()
	p.admitted--
	p.cond.Broadcast()
	p.mu.Unlock()
}

// drainedLocked reports whether a closed pool has no work left to give
// out: nothing queued and no admitted call that may submit more.
func (p *Pool) drainedLocked() bool {
	return p.closed && len(p.queue) == 0 && p.admitted == 0
}

// submit queues jobs, in order, for the workers. An admitted call may
// submit after Close.
func (p *Pool) submit(admitted bool, jobs ...*job) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.terminated && admitted:
		return ErrPoolTerminated
	case p.closed && !admitted:
		return ErrPoolClosed
	case p.broken != nil:
		return p.broken
	case p.stopping:
		return ErrStopped
	}
	for _, j := range jobs {
		p.nextID++
		j.id = p.nextID
		if j.retries == 0 {
			j.retries = p.cfg.retries
		}
	}
	p.queue = append(p.queue, jobs...)
	p.cond.Broadcast()
	return nil
}

// nextLocked waits for a job for a worker that has room for one (room),
// and returns it, or nil once the pool is terminated or broken, or the
// worker should stop (retire, asked only when there is nothing for it to
// take). Jobs whose context has ended meanwhile are failed here rather
// than given out. It is called with p.mu held.
func (p *Pool) nextLocked(room, retire func() bool, steal func() *job) *job {
	for {
		if p.terminated || p.broken != nil || p.stopping {
			return nil
		}
		if len(p.queue) == 0 && steal != nil && room() {
			if j := steal(); j != nil {
				return j
			}
		}
		if len(p.queue) > 0 && room() {
			j := p.queue[0]
			p.queue[0] = nil
			p.queue = p.queue[1:]
			if err := j.expired(); err != nil {
				p.mu.Unlock()
				j.fail(err)
				p.mu.Lock()
				continue
			}
			return j
		}
		if retire() {
			return nil
		}
		p.cond.Wait()
	}
}

// requeueLocked puts jobs back at the head of the queue, in order.
func (p *Pool) requeueLocked(jobs []*job) {
	if len(jobs) == 0 {
		return
	}
	p.queue = append(append(make([]*job, 0, len(jobs)+len(p.queue)), jobs...), p.queue...)
	p.cond.Broadcast()
}

// drainLocked empties the queue and returns what it held.
func (p *Pool) drainLocked() []*job {
	q := p.queue
	p.queue = nil
	return q
}

// breakLocked records why the pool cannot run tasks any more (its
// initializer failed); the caller fails the queued jobs.
func (p *Pool) breakLocked(err error) {
	if p.broken == nil {
		p.broken = err
	}
	p.cond.Broadcast()
}

// callbackRunner runs result callbacks in the parent one at a time, in the
// order results arrived.
type callbackRunner struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending []func()
	stopped bool
	done    chan struct{}
	gid     atomic.Uint64 // the goroutine that runs the callbacks
}

func (r *callbackRunner) start() {
	r.cond = sync.NewCond(&r.mu)
	r.done = make(chan struct{})
	go r.run()
}

func (r *callbackRunner) add(f func()) {
	r.mu.Lock()
	if r.stopped {
		// After Join or Terminate: a late result (a task failed by
		// Terminate) still gets its callback, though not on the runner.
		r.mu.Unlock()
		f()
		return
	}
	r.pending = append(r.pending, f)
	r.cond.Signal()
	r.mu.Unlock()
}

func (r *callbackRunner) run() {
	r.gid.Store(goid())
	defer close(r.done)
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		for len(r.pending) == 0 && !r.stopped {
			r.cond.Wait()
		}
		if len(r.pending) == 0 {
			return
		}
		f := r.pending[0]
		r.pending[0] = nil
		r.pending = r.pending[1:]
		r.mu.Unlock()
		f()
		r.mu.Lock()
	}
}

// onRunner reports whether the caller is a callback: the pool's calls
// must not wait for what the callback itself holds up.
func (r *callbackRunner) onRunner() bool {
	g := r.gid.Load()
	return g != 0 && g == goid()
}

// stop makes the runner exit once the callbacks queued so far have run,
// and waits for that, unless a callback calls it (which the runner waits
// for in turn).
func (r *callbackRunner) stop() {
	r.mu.Lock()
	if !r.stopped {
		r.stopped = true
		r.cond.Signal()
	}
	r.mu.Unlock()
	if !r.onRunner() {
		<-r.done
	}
}

// MarshalBinary always fails with an error wrapping ErrUnencodable: a pool
// cannot be passed to a process pool's task or to a Process (nor travel
// through a queue or a pipe), since its workers belong to the process that
// made it. A task may make a pool of its own.
func (p *Pool) MarshalBinary() ([]byte, error) {
	return nil, fmt.Errorf("%w: a *Pool cannot leave the process that made it (a task may start a pool of its own)", ErrUnencodable)
}

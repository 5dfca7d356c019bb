package mp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/ring"
)

// A worker process receives tasks and sends results over a duplex pipe.
// The parent gives each worker at most window tasks at a time, so that it
// always has the next one at hand without a long line forming behind a
// slow task. The worker takes them in order and answers each before taking
// the next, which is what makes a death exact to account for: after the
// worker is gone, the tasks still in the pipe never started and go back to
// the queue, and the one task sent, not answered and not in the pipe is the
// one it was running.

// testWorkerPipe, if set (by tests), is given the two ends of each
// worker's pipe.
var testWorkerPipe func(parent, child *Conn)

// worker is the parent's side of one worker process.
type worker struct {
	p    *Pool
	proc *Process
	conn *Conn    // the worker's pipe in the arena; nil for isolated workers
	iso  *isoLink // isolated workers: their socket (see pool_isolate.go)

	// Guarded by p.mu.
	inflight []*job // sent (or being sent), not answered, in order
	quota    int    // tasks it may still be given; < 0: no limit
	ready    bool   // its initializer has run
	retired  bool   // told to exit (its pipe closed)
	dead     bool
	stop     func()    // disarms the timers of the running task
	since    time.Time // when inflight[0] was handed over or became the one running
}

// startWorker starts a worker process and its goroutines. It is called
// without p.mu held, as starting a process takes a while.
func (p *Pool) startWorker() error {
	if p.cfg.isolated {
		return p.startIsolatedWorker()
	}
	a, b, err := Pipe(true)
	if err != nil {
		return err
	}
	if testWorkerPipe != nil {
		testWorkerPipe(a, b)
	}
	spec := workerSpec{MaxRSS: p.cfg.maxRSS}
	if t := p.cfg.init; t != nil {
		vals, _ := t.bind(p.cfg.initArgs)
		if spec.Init, err = codec.MarshalArgs(vals); err != nil {
			a.Close()
			b.Close()
			return fmt.Errorf("mp: pool initializer: %w", err)
		}
		spec.InitFn, spec.NInit = t.name, len(p.cfg.initArgs)
	}
	p.mu.Lock()
	p.seq++
	name := fmt.Sprintf("PoolWorker-%d", p.seq)
	pipeName := p.stats.name + "/" + name
	p.mu.Unlock()
	a.SetName(pipeName[max(0, len(pipeName)-MaxName):]) // for the status page
	proc := NewProcess(poolWorker, b, spec)
	proc.Name, proc.Daemon = name, true
	err = proc.Start()
	// The worker holds its end now (or never will): the parent's hold on
	// it goes, so that the pipe is given back once both sides are done.
	b.Close()
	if err != nil {
		a.Close()
		return err
	}
	p.addWorker(&worker{p: p, proc: proc, conn: a})
	return nil
}

func (p *Pool) workerName() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	return fmt.Sprintf("PoolWorker-%d", p.seq)
}

// addWorker puts a started worker in service.
func (p *Pool) addWorker(w *worker) {
	w.quota = -1
	if p.cfg.maxTasks > 0 {
		w.quota = p.cfg.maxTasks
	}
	p.mu.Lock()
	p.workers[w] = struct{}{}
	terminated := p.terminated
	p.mu.Unlock()
	if terminated {
		w.proc.Kill()
	}
	p.wg.Add(1)
	go w.run()
}

func (w *worker) run() {
	defer w.p.wg.Done()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.send() }()
	go func() { defer wg.Done(); w.receive() }()
	w.proc.Join(context.Background())
	w.p.mu.Lock()
	w.dead = true
	w.p.cond.Broadcast()
	w.p.mu.Unlock()
	// The worker is gone: end both directions, so that the receiver reads
	// the results sent before the death and stops, and the sender stops.
	if w.iso != nil {
		w.iso.shut()
	} else {
		w.conn.shut()
	}
	wg.Wait()
	w.settle()
}

// send gives the worker tasks while it has room for them, and tells it to
// exit (by closing its direction of the pipe) once it should retire.
func (w *worker) send() {
	p := w.p
	room := func() bool { return !w.dead && w.quota != 0 && len(w.inflight) < p.cfg.window }
	// Close is no reason to retire while work is left: the queue is
	// emptied first.
	retire := func() bool { return w.dead || (len(w.inflight) == 0 && (w.quota == 0 || p.drainedLocked())) }
	steal := func() *job {
		// A task sent down an isolated worker's socket cannot be taken
		// back: those workers are given one task at a time instead.
		if len(w.inflight) == 0 && w.iso == nil {
			return p.stealLocked(w)
		}
		return nil
	}
	var frame []byte
	for {
		p.mu.Lock()
		j := p.nextLocked(room, retire, steal)
		if j == nil || w.dead {
			if j != nil {
				p.requeueLocked([]*job{j})
			}
			dead := w.dead
			w.retired = !dead
			p.mu.Unlock()
			if !dead {
				// The worker reads what it was given, then EOF, and
				// exits. Only this direction closes: results still to
				// come are read until it is gone (settle closes the rest).
				if w.iso != nil {
					w.iso.closeWrite()
				} else {
					w.conn.send.Close()
				}
			}
			return
		}
		w.inflight = append(w.inflight, j)
		if w.quota > 0 {
			w.quota--
		}
		if len(w.inflight) == 1 {
			w.armLocked(j)
		}
		p.mu.Unlock()
		var err error
		if n := taskFrameSize(j.fn, len(j.body)); n > maxFrame {
			err = tooLarge(j.fn, n, j.calls() > 1) // submit refuses these; in case
		} else {
			frame = appendTask(frame[:0], j, p.cfg.timeout)
			if w.iso != nil {
				err = w.iso.send(frame)
			} else {
				err = w.conn.SendBytes(frame)
			}
		}
		if cap(frame) > keepBuffer {
			frame = nil // a large task's buffer is not kept for the small ones
		}
		p.mu.Lock()
		j.sent = err == nil
		gone := errors.Is(err, io.ErrClosedPipe) || errors.Is(err, ErrClosed)
		if err != nil && !gone {
			// The task cannot travel (too large, or no shared memory for
			// it): it fails alone, and the worker goes on with the next.
			w.dropLocked(j)
		}
		// An idle worker may take this task over if this one is busy.
		p.cond.Broadcast()
		p.mu.Unlock()
		if gone {
			return // the worker is gone; settle sorts out its tasks
		}
		if err != nil {
			j.fail(fmt.Errorf("mp: cannot send a task to a pool worker: %w", err))
		}
	}
}

// dropLocked takes j, which was not sent after all, off the worker's
// hands.
func (w *worker) dropLocked(j *job) {
	i := slices.Index(w.inflight, j)
	if i < 0 {
		return
	}
	w.inflight = slices.Delete(w.inflight, i, i+1)
	if i == 0 {
		w.disarmLocked()
		if len(w.inflight) > 0 {
			w.armLocked(w.inflight[0])
		}
	}
	if w.quota >= 0 {
		w.quota++
	}
}

// receive delivers the worker's results.
func (w *worker) receive() {
	if w.iso != nil {
		w.receiveIsolated()
		return
	}
	p := w.p
	for {
		msg, err := w.conn.RecvBytes(context.Background())
		if err != nil {
			return
		}
		if len(msg) == 1 && msg[0] == frameReady {
			p.mu.Lock()
			w.ready = true
			p.failedStarts = 0
			if len(w.inflight) > 0 && w.stop == nil {
				w.armLocked(w.inflight[0])
			}
			p.mu.Unlock()
			continue
		}
		rep, err := parseResult(msg)
		p.mu.Lock()
		if err != nil || len(w.inflight) == 0 || !rep.fits(w.inflight[0]) {
			p.mu.Unlock()
			// Not what this worker was given: it cannot be trusted.
			w.proc.Kill()
			continue
		}
		j := w.inflight[0]
		p.stats.answered(j, &rep, w.since)
		w.inflight[0] = nil
		w.inflight = w.inflight[1:]
		w.disarmLocked()
		if len(w.inflight) > 0 {
			w.armLocked(w.inflight[0])
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		if rep.batched {
			j.completeBatch(rep.vals, rep.fails)
		} else {
			j.complete(rep.rs)
		}
	}
}

// armLocked starts watching the deadline and context of j, the task the
// worker runs now: if either ends first, the worker is killed. A worker
// still starting (in its initializer) runs nothing yet: its first task is
// armed when it is ready, so that a task's time limit counts from when it
// can run.
func (w *worker) armLocked(j *job) {
	if !w.ready {
		return
	}
	w.since = time.Now()
	var stops []func() bool
	if d := w.p.cfg.timeout; d > 0 {
		t := time.AfterFunc(d, func() { w.expire(j, context.DeadlineExceeded) })
		stops = append(stops, t.Stop)
	}
	if j.ctx != nil && j.ctx.Done() != nil {
		ctx := j.ctx
		stops = append(stops, context.AfterFunc(ctx, func() {
			if !stopping() { // else the worker has the stop's grace period
				w.expire(j, ctx.Err())
			}
		}))
	}
	if len(stops) > 0 {
		w.stop = func() {
			for _, s := range stops {
				s()
			}
		}
	}
}

func (w *worker) disarmLocked() {
	if w.stop != nil {
		w.stop()
		w.stop = nil
	}
}

func (w *worker) expire(j *job, err error) {
	w.p.mu.Lock()
	if len(w.inflight) == 0 || w.inflight[0] != j || j.killErr != nil {
		w.p.mu.Unlock()
		return
	}
	j.killErr = err
	w.p.mu.Unlock()
	w.proc.Kill()
}

// kill kills the worker (and its process tree), for err.
func (w *worker) kill(err error) {
	for _, j := range w.inflight {
		if j.killErr == nil {
			j.killErr = err
		}
	}
	w.proc.Kill()
}

// settle accounts for the tasks of a worker that has exited, and replaces
// it if there is still work for it.
func (w *worker) settle() {
	p := w.p
	unstarted := make(map[uint64]bool)
	if w.iso != nil {
		p.mu.Lock()
		w.iso.unstartedLocked(w.inflight, unstarted)
		p.mu.Unlock()
	} else {
		r := w.conn.send
		r.Reclaim()
		for {
			msg, err := r.TryGet(nil)
			if err != nil {
				break
			}
			if id, ok := taskID(msg); ok {
				unstarted[id] = true
			}
		}
	}
	code, _ := w.proc.ExitCode()
	initErr := w.proc.Join(context.Background())
	// The unstarted tasks are read: this side of the pipe is done with.
	if w.iso != nil {
		w.iso.close()
	} else {
		w.conn.Close()
	}
	// An isolated worker that exceeded a limit, or broke the protocol of
	// its control socket, fails the task it ran with that, not with its
	// death, and does not run it again.
	var lostErr error
	if w.iso != nil {
		lostErr = w.isolatedLoss(initErr)
	}

	p.mu.Lock()
	w.disarmLocked()
	delete(p.workers, w)
	var again, failed []*job
	var errs []error
	killed := false // by the pool, for a task's timeout or context
	var retried []*job
	for _, j := range w.inflight {
		killed = killed || j.killErr != nil
		switch {
		case j.killErr != nil && !p.terminated:
			// Its own time limit or context ended, whether or not the
			// worker had read it yet. It fails rather than goes back to
			// the queue: expire acts once per task, so on another worker
			// it would run unwatched. (Killed by Terminate, it falls to
			// the cases below, which report the pool's end instead.)
			failed, errs = append(failed, j), append(errs, j.killErr)
		case (!j.sent || unstarted[j.id]) && p.stopping:
			failed, errs = append(failed, j), append(errs, ErrStopped)
		case !j.sent || unstarted[j.id]:
			again = append(again, j)
		case j.killErr != nil:
			failed, errs = append(failed, j), append(errs, j.killErr)
		case lostErr != nil:
			failed, errs = append(failed, j), append(errs, lostErr)
		case j.retries > 0 && !p.terminated && !p.stopping:
			j.retries--
			again = append(again, j)
			retried = append(retried, j)
		default:
			failed, errs = append(failed, j), append(errs, &WorkerLostError{Pid: w.proc.Pid(), ExitCode: code})
		}
	}
	w.inflight = nil
	p.stats.settled(w, code, failed, errs, retried)
	if p.terminated {
		for _, j := range again {
			failed, errs = append(failed, j), append(errs, ErrPoolTerminated)
		}
		again = nil
	}
	p.requeueLocked(again)
	if !w.ready && !p.terminated && !p.stopping && !killed && !w.retired {
		// It died starting: in its initializer, or killed from outside.
		// Restarting it in a loop would help no one.
		p.failedStarts++
		limit := 2*p.cfg.n + 1
		switch {
		case code > 0:
			p.breakLocked(fmt.Errorf("%w: its initializer failed in %s: %w", ErrPoolBroken, w.proc.Name, initErr))
		case p.failedStarts >= limit:
			how := fmt.Sprintf("exited with status %d", code)
			if code < 0 {
				how = fmt.Sprintf("was killed by signal %d", -code)
			}
			p.breakLocked(fmt.Errorf("%w: %d workers in a row died before they were ready (the last, %s, %s); no more are started",
				ErrPoolBroken, p.failedStarts, w.proc.Name, how))
		}
	}
	if p.broken != nil {
		// Nothing runs them any more, the ones just put back included.
		for _, j := range p.drainLocked() {
			failed, errs = append(failed, j), append(errs, p.broken)
		}
	}
	// A closed pool replaces a worker only for work still to be given
	// out: the tasks other workers hold are theirs to finish, and a
	// replacement with nothing to do would retire at once.
	replace := !p.terminated && !p.stopping && p.broken == nil && len(p.workers) < p.cfg.n && !p.drainedLocked()
	if replace {
		p.stats.replaced(w, code, killed)
	}
	p.mu.Unlock()

	for i, j := range failed {
		j.fail(errs[i])
	}
	if replace {
		if err := p.startWorker(); err != nil {
			p.mu.Lock()
			p.breakLocked(fmt.Errorf("%w: cannot replace a pool worker: %w", ErrPoolBroken, err))
			q := p.drainLocked()
			p.mu.Unlock()
			for _, j := range q {
				j.fail(err)
			}
		}
	}
}

// stealLocked takes, for the idle worker thief, a task that another worker
// was given but has not started (it is still in that worker's pipe), so
// that no task waits behind a slow one while a worker is idle.
func (p *Pool) stealLocked(thief *worker) *job {
	for v := range p.workers {
		if v == thief || v.dead || len(v.inflight) < 2 || v.iso != nil {
			continue
		}
		msg, err := v.conn.send.TryGet(nil)
		if err != nil {
			continue
		}
		id, _ := taskID(msg)
		for i, j := range v.inflight {
			if j.id != id {
				continue
			}
			v.inflight = append(v.inflight[:i], v.inflight[i+1:]...)
			if i == 0 {
				v.disarmLocked()
				if len(v.inflight) > 0 {
					v.armLocked(v.inflight[0])
				}
			}
			j.sent = false
			if v.quota >= 0 {
				v.quota++
			}
			return j
		}
	}
	return nil
}

// Frames between the parent and a worker. A task's calls, and their
// results, travel either one by one or, for a batched Map chunk, as one
// encoded slice (see pool_chunk.go).
const (
	// id u64, deadline i64, timeout i64, fn, ncalls u32, then per call
	// nargs u16 and the encoded arguments.
	frameTask = 'T'
	// As frameTask up to ncalls, then the encoded slice of the calls'
	// single arguments.
	frameBatch = 'B'
	// id u64, ncalls u32, then per call status u8 (0: value, 1: error)
	// and the value or error.
	frameResult = 'R'
	// id u64, ncalls u32, the encoded slice of the values (empty if fn
	// returns none), then the failed calls: count u32, and per failure
	// its index u32 and error.
	frameBatchResult = 'S'
	frameReady       = 'Y' // the initializer has run
)

// maxFrame is the largest frame a worker's pipe carries, either way. A
// task or a result that would be larger fails with ErrTooLarge rather
// than travelling.
const maxFrame = ring.MaxMessage

// keepBuffer is the largest frame buffer kept for the next task: one for
// a rare huge task is not held for the life of the worker.
const keepBuffer = maxFrame / 4

// taskFrameSize is the size of the frame of a task of fn whose calls
// encode to body bytes.
func taskFrameSize(fn *target, body int) int { return 1 + 8 + 8 + 8 + 4 + len(fn.name) + 4 + body }

// appendTask encodes j; timeout is the pool's, which the worker counts
// from when it starts the task.
func appendTask(b []byte, j *job, timeout time.Duration) []byte {
	if j.batch {
		b = append(b, frameBatch)
	} else {
		b = append(b, frameTask)
	}
	b = binary.LittleEndian.AppendUint64(b, j.id)
	var dl int64
	if j.ctx != nil {
		if d, ok := j.ctx.Deadline(); ok {
			dl = d.UnixNano()
		}
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(dl))
	b = binary.LittleEndian.AppendUint64(b, uint64(timeout))
	b = appendChunk(b, j.fn.name)
	b = binary.LittleEndian.AppendUint32(b, uint32(j.ncalls))
	return append(b, j.body...)
}

func appendChunk[S ~string | ~[]byte](b []byte, p S) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// frameReader reads a frame's fields, remembering the first error.
type frameReader struct {
	b   []byte
	err error
}

func (r *frameReader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%w: truncated pool frame", ErrCorrupt)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *frameReader) u8() byte {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *frameReader) u16() int {
	if p := r.take(2); p != nil {
		return int(binary.LittleEndian.Uint16(p))
	}
	return 0
}

func (r *frameReader) u32() int {
	if p := r.take(4); p != nil {
		return int(binary.LittleEndian.Uint32(p))
	}
	return 0
}

func (r *frameReader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *frameReader) chunk() []byte { return r.take(r.u32()) }

func taskID(msg []byte) (uint64, bool) {
	if len(msg) < 9 || (msg[0] != frameTask && msg[0] != frameBatch) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(msg[1:]), true
}

// appendResult appends the frameResult of task id.
func appendResult(b []byte, id uint64, outs []workerOut) []byte {
	b = appendResultHeader(b, frameResult, id, len(outs))
	for _, o := range outs {
		b = append(b, o.status)
		b = appendChunk(b, o.data)
	}
	return b
}

// appendResultHeader begins a result frame of kind for task id, of n
// calls.
func appendResultHeader(b []byte, kind byte, id uint64, n int) []byte {
	b = append(b, kind)
	b = binary.LittleEndian.AppendUint64(b, id)
	return binary.LittleEndian.AppendUint32(b, uint32(n))
}

type workerOut struct {
	status byte // 0: value, 1: error
	data   []byte
}

// reply is a parsed result frame.
type reply struct {
	id      uint64
	n       int
	batched bool
	rs      []result  // one by one
	vals    []byte    // batched: the encoded values, nil if none
	fails   []failure // batched
}

// fits reports whether the reply answers j, as j was sent.
func (r *reply) fits(j *job) bool {
	return r.id == j.id && r.n == j.calls() && (!r.batched || j.batch)
}

func parseResult(msg []byte) (rep reply, err error) {
	r := frameReader{b: msg}
	kind := r.u8()
	rep.id, rep.n = r.u64(), r.u32()
	if r.err != nil {
		return rep, r.err
	}
	switch kind {
	case frameResult:
		if rep.n > len(r.b)/5 {
			return rep, fmt.Errorf("%w: bad result frame", ErrCorrupt)
		}
		rep.rs = make([]result, rep.n)
		for i := range rep.rs {
			status, data := r.u8(), r.chunk()
			switch {
			case r.err != nil:
				return rep, r.err
			case status == 0:
				if len(data) > 0 { // empty: fn returns no value
					rep.rs[i].raw = data
				}
			default:
				rep.rs[i].err = parseTaskError(data)
			}
		}
	case frameBatchResult:
		rep.batched = true
		if vals := r.chunk(); len(vals) > 0 {
			rep.vals = vals
		}
		nf := r.u32()
		if r.err != nil || nf > rep.n || nf > len(r.b)/8 {
			return rep, fmt.Errorf("%w: bad result frame", ErrCorrupt)
		}
		rep.fails = make([]failure, nf)
		for k := range rep.fails {
			i, data := r.u32(), r.chunk()
			if r.err != nil || i >= rep.n {
				return rep, fmt.Errorf("%w: bad result frame", ErrCorrupt)
			}
			rep.fails[k] = failure{index: i, err: parseTaskError(data)}
		}
	default:
		return rep, fmt.Errorf("%w: not a result frame", ErrCorrupt)
	}
	if len(r.b) != 0 {
		return rep, fmt.Errorf("%w: %d bytes after the results", ErrCorrupt, len(r.b))
	}
	return rep, nil
}

func parseTaskError(data []byte) error {
	var w taskErrWire
	if err := codec.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("mp: unreadable error from a pool worker: %w", err)
	}
	return w.error()
}

// encodeCallError encodes a call's failure for the parent.
func encodeCallError(ce *callError) []byte {
	if isoWorker != nil {
		return isoWorker.encodeError(ce)
	}
	b, err := codec.Marshal(wireError(ce))
	if err != nil {
		b, _ = codec.Marshal(taskErrWire{Message: ce.Message})
	}
	return b
}

// workerSpec is what a worker process is started with.
type workerSpec struct {
	InitFn string // the initializer's registered name, or ""
	Init   []byte // its encoded arguments
	NInit  int
	MaxRSS int64 // exit after a task that leaves the RSS above this; 0: never
	// Isolated workers: exit after a task once this much CPU time is used.
	CPURetire time.Duration
}

func init() { Register(poolWorker) }

// poolWorker is the main function of a pool's worker process.
func poolWorker(ctx context.Context, c *Conn, spec workerSpec) error {
	// Given up however the worker ends, so that the pipe's memory can go.
	defer c.Close()
	return serveWorker(ctx, spec, c, nil)
}

// serveWorker is a worker process's life, over its pipe c or, for an
// isolated worker, its socket sock.
func serveWorker(ctx context.Context, spec workerSpec, c *Conn, sock *isoConn) error {
	// The parent treats its workers as daemonic (Shutdown terminates
	// them), but unlike Python's, their tasks may start processes and
	// pools: these die with the worker, whichever way it ends. Set before
	// any task runs, in the goroutine that set it up.
	self.info.Daemon = false
	if spec.InitFn != "" {
		t, ok := lookupName(spec.InitFn)
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotRegistered, spec.InitFn)
		}
		args, err := codec.UnmarshalArgs(spec.Init, t.argTypes(spec.NInit))
		if err != nil {
			return err
		}
		if _, cerr := t.call(ctx, reflect.Value{}, args); cerr != nil {
			if cerr.Panicked {
				return fmt.Errorf("initializer panicked: %s\n%s", cerr.Message, cerr.Stack)
			}
			return fmt.Errorf("initializer: %s", cerr.Message)
		}
	}
	l := &workerLoop{ctx: ctx, c: c, sock: sock, targets: make(map[string]*target), done: make(chan error, 1)}
	if err := l.send([]byte{frameReady}); err != nil {
		return nil
	}
	if spec.MaxRSS > 0 {
		f, err := os.Open("/proc/self/statm")
		if err != nil {
			return fmt.Errorf("mp: pool worker: WithMaxMemoryPerChild: %w", err)
		}
		defer f.Close()
		l.rss = &rssMeter{f: f, limit: spec.MaxRSS, page: int64(os.Getpagesize())}
	}
	go l.serve(false)
	return <-l.done
}

// rssMeter measures the worker's resident memory.
type rssMeter struct {
	f     *os.File // /proc/self/statm, read again each time
	limit int64
	page  int64
	buf   [128]byte
}

// over reports whether the resident memory is above the limit.
func (m *rssMeter) over() bool {
	n, _ := m.f.ReadAt(m.buf[:], 0)
	// "size resident shared ...", in pages.
	b := m.buf[:n]
	i := 0
	for i < len(b) && b[i] != ' ' {
		i++
	}
	var pages int64
	for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		pages = pages*10 + int64(b[i]-'0')
	}
	return pages*m.page > m.limit
}

// workerLoop is a worker process's loop over its tasks. It outlives the
// goroutine that runs it if a task calls runtime.Goexit (as t.FailNow
// does): nothing can stop that goroutine from ending, so another takes
// over the task and the loop.
type workerLoop struct {
	ctx     context.Context
	c       *Conn
	sock    *isoConn // isolated workers: instead of c
	targets map[string]*target
	in, out []byte
	tr      taskRun // the task being run, reused from one to the next
	running bool    // tr is being run
	rss     *rssMeter
	done    chan error
}

// serve runs the loop, going on with the task being run if resume.
func (l *workerLoop) serve(resume bool) {
	returned := false
	defer func() {
		if returned {
			return
		}
		if !l.running {
			l.done <- errors.New("mp: pool worker: runtime.Goexit outside a task")
			return
		}
		l.tr.goexited()
		go l.serve(true)
	}()
	err := l.loop(resume)
	returned = true
	l.done <- err
}

func (l *workerLoop) loop(resume bool) error {
	for {
		if !resume {
			if stopping() {
				// SIGTERM: the tasks still in the pipe never start (the
				// parent accounts for them), and the worker exits.
				return nil
			}
			// The frame is decoded before the next is read: one buffer will do.
			msg, err := l.recv()
			if err == io.EOF || errors.Is(err, io.ErrClosedPipe) || (err != nil && stopping()) {
				return nil
			}
			if err != nil {
				return err
			}
			l.in = msg
			if err := l.tr.start(l.ctx, msg, l.targets); err != nil {
				return err
			}
			if l.sock != nil {
				if err := l.sock.started(l.tr.id); err != nil {
					return nil // the parent is gone
				}
			}
		}
		resume = false
		l.running = true
		out, err := l.tr.run(l.out[:0])
		l.running = false
		l.tr.end()
		if err != nil {
			return err
		}
		l.out = out
		if err := l.send(out); err != nil {
			if errors.Is(err, io.ErrClosedPipe) || errors.Is(err, ErrClosed) || l.sock != nil {
				return nil // the parent is gone
			}
			// The results cannot travel (no shared memory for them):
			// the task fails, saying why, and the worker goes on.
			if err := l.send(failedResult(out, err)); err != nil {
				return nil
			}
		}
		if l.sock != nil && l.sock.retire() {
			return nil // as below
		}
		if l.rss != nil && l.rss.over() {
			// Retire: the parent puts the tasks still in the pipe back in
			// its queue, and starts another worker if there is work.
			return nil
		}
		if cap(l.out) > keepBuffer {
			l.out = nil // a large result's buffer is not kept for the small ones
		}
		if cap(l.in) > keepBuffer {
			l.in = nil
		}
	}
}

func (l *workerLoop) recv() ([]byte, error) {
	if l.sock != nil {
		return l.sock.get()
	}
	return l.c.get(l.ctx, l.in[:0])
}

func (l *workerLoop) send(b []byte) error {
	if l.sock != nil {
		return l.sock.send(b)
	}
	return l.c.SendBytes(b)
}

// failedResult turns the result frame out into one of the same task with
// every call failed with err.
func failedResult(out []byte, err error) []byte {
	r := frameReader{b: out}
	r.u8()
	id, n := r.u64(), r.u32()
	outs := make([]workerOut, n)
	e := fmt.Errorf("mp: the results of a pool task cannot be sent back: %w", err)
	for i := range outs {
		outs[i] = workerOut{status: 1, data: encodeCallError(&callError{Message: e.Error(), err: e})}
	}
	return appendResult(nil, id, outs)
}

// fitOuts makes outs fit in one result frame: a value that does not fit,
// with the ones before it in its task, is replaced by an ErrTooLarge
// error.
func fitOuts(t *target, outs []workerOut) {
	size := 1 + 8 + 4
	for i := range outs {
		if n := 5 + len(outs[i].data); size+n > maxFrame {
			err := fmt.Errorf("%w: the result of %s encodes to %d bytes; with the results before it in its task, more than the %d a pool worker's pipe carries",
				ErrTooLarge, t.short(), len(outs[i].data), maxFrame)
			outs[i] = workerOut{status: 1, data: encodeCallError(&callError{Message: err.Error(), err: err})}
		}
		size += 5 + len(outs[i].data)
	}
}

// taskRun is one task frame being run in a worker, kept where a
// goroutine taking over after runtime.Goexit finds it.
type taskRun struct {
	ctx     context.Context
	cancels []context.CancelFunc
	t       *target
	id      uint64
	n       int
	r       frameReader // one by one: the calls not yet started
	outs    []workerOut // one by one: the results so far
	batch   *batchRun   // batched tasks
}

// start prepares the task of frame msg.
func (tr *taskRun) start(ctx context.Context, msg []byte, targets map[string]*target) error {
	r := frameReader{b: msg}
	kind := r.u8()
	if kind != frameTask && kind != frameBatch {
		return fmt.Errorf("%w: not a task frame", ErrCorrupt)
	}
	id := r.u64()
	deadline := int64(r.u64())
	timeout := time.Duration(r.u64())
	name := r.chunk()
	n := r.u32()
	if r.err != nil {
		return r.err
	}
	t, ok := targets[string(name)] // no allocation for the lookup
	if !ok {
		if t, ok = lookupName(string(name)); !ok {
			return fmt.Errorf("%w: %s in a pool worker", ErrNotRegistered, name)
		}
		targets[string(name)] = t
	}
	// Not deferred: the contexts live until end, across a Goexit.
	tr.cancels = tr.cancels[:0]
	if deadline != 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.Unix(0, deadline))
		tr.cancels = append(tr.cancels, cancel)
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		tr.cancels = append(tr.cancels, cancel)
	}
	tr.ctx, tr.t, tr.id, tr.n, tr.batch = ctx, t, id, n, nil
	if kind == frameBatch {
		var err error
		tr.batch, err = newBatchRun(ctx, t, id, r.b, n)
		return err
	}
	tr.r = r
	if cap(tr.outs) > 1024 {
		tr.outs = nil
	}
	tr.outs = slices.Grow(tr.outs[:0], min(n, len(r.b)/6))
	return nil
}

// run runs the task's calls not yet run, and appends its result frame to
// b.
func (tr *taskRun) run(b []byte) ([]byte, error) {
	if br := tr.batch; br != nil {
		for br.at < br.n {
			br.at = br.runFrom(br.at)
		}
		return br.appendResults(b), nil
	}
	for len(tr.outs) < tr.n {
		nargs, data := tr.r.u16(), tr.r.chunk()
		if tr.r.err != nil {
			return nil, tr.r.err
		}
		tr.outs = append(tr.outs, runCall(tr.ctx, tr.t, data, nargs))
	}
	fitOuts(tr.t, tr.outs)
	return appendResult(b, tr.id, tr.outs), nil
}

// goexited records that the call being run called runtime.Goexit: it
// fails, and the task goes on from the next.
func (tr *taskRun) goexited() {
	ce := &callError{Message: goexitMessage}
	if br := tr.batch; br != nil {
		br.fail(br.at, ce)
		br.at++
		return
	}
	tr.outs = append(tr.outs, workerOut{status: 1, data: encodeCallError(ce)})
}

// end releases the task's contexts.
func (tr *taskRun) end() {
	for _, c := range tr.cancels {
		c()
	}
	tr.ctx, tr.batch = nil, nil
}

// notStarted is the error of a call whose context had ended before it
// started: ErrStopped if the worker is stopping.
func notStarted(err error) *callError {
	if stopping() {
		err = ErrStopped
	}
	return &callError{Message: err.Error(), err: err}
}

func runCall(ctx context.Context, t *target, data []byte, nargs int) workerOut {
	fail := func(ce *callError) workerOut {
		return workerOut{status: 1, data: encodeCallError(ce)}
	}
	if err := ctx.Err(); err != nil {
		return fail(notStarted(err))
	}
	args, err := codec.UnmarshalArgs(data, t.argTypes(nargs))
	if err != nil {
		return fail(&callError{Message: err.Error(), err: err})
	}
	res, cerr := t.call(ctx, reflect.Value{}, args)
	if cerr != nil {
		return fail(cerr)
	}
	if v, ok := t.value(res); ok {
		b, err := codec.Marshal(v.Interface())
		if err != nil {
			err = fmt.Errorf("mp: the result of %s cannot be sent back: %w", t.short(), err)
			return fail(&callError{Message: err.Error(), err: err})
		}
		return workerOut{data: b}
	}
	return workerOut{}
}

// value returns a call's result value: its first result that is not the
// error, if there is one.
func (t *target) value(res []reflect.Value) (reflect.Value, bool) {
	for i, v := range res {
		if i != t.errOut {
			return v, true
		}
	}
	return reflect.Value{}, false
}

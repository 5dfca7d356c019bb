package mp

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/spawn"
)

// WithIsolatedWorkers makes every worker of a process pool an isolated
// process (see Process.Isolated), for tasks that run code the program does
// not trust: a worker does not map the tree's shared memory, and tasks and
// results travel over a socket of its own, whose every frame the parent
// reads as untrusted input. A worker that sends what it was not asked for
// (an unreadable or oversized frame, a result for a task it was not given)
// is killed and replaced, and the task it held fails with an error
// wrapping ErrCorrupt; the other tasks go on. (A worker that stops in the
// middle of a frame is, like one that loops, a task that does not end:
// WithTaskTimeout bounds it.) Tasks whose arguments hold a
// shared primitive (or an initializer's, at NewPool) fail with ErrIsolated
// when they are submitted: for Map, in the places of those items.
//
// limits apply to each worker process, as Process.Limits do to a Process
// (the zero Limits limits nothing). A task that exceeds one fails with a
// *LimitError naming it, rather than a *WorkerLostError, and is not
// retried; its worker is replaced. A worker's CPU time counts over its
// life: a worker that has used half of limits.CPUTime is replaced after
// its task, so a task is killed by that limit only after using at least
// half of it itself.
//
// Each worker is given one task at a time (a shared-memory worker holds
// two), as a task sent down a socket cannot be taken back for an idle
// worker: small tasks are dearer here; WithChunkSize helps. The other pool
// options keep their meaning. Since what a hostile task sends is not
// believed, the errors of an isolated pool's tasks carry their message and
// stack only (trimmed): registered error types and sentinels are not
// rebuilt. NewThreadPool refuses this option with ErrBadArguments.
//
// Isolation is against a task that corrupts what it can reach: it does not
// stop code running as the parent's user from reaching the parent through
// the operating system (/proc/<pid>/fd, ptrace, signals), which only
// running it as another user prevents.
func WithIsolatedWorkers(limits Limits) PoolOption {
	return func(c *poolConfig) { c.isolated, c.limits = true, limits }
}

func (c *poolConfig) checkIsolated(threads bool) error {
	if threads {
		return fmt.Errorf("%w: WithIsolatedWorkers is for process pools; a thread pool's tasks run in this process", ErrBadArguments)
	}
	if err := c.limits.check(); err != nil {
		return err
	}
	if k := sharedIn(c.initArgs...); k != "" {
		return describeIsolated("the pool initializer", k)
	}
	c.window = 1
	return nil
}

// isolatedFiles are, in an isolated child, the descriptors its parent
// handed it after its control socket (Process.files).
var isolatedFiles []int

// isoChannelFd is where an isolated pool worker finds its socket: the
// first descriptor after the control socket (see internal/spawn).
const isoChannelFd = spawn.CtlFd + 1

// frameStarted (id u64): an isolated worker starts the task. Workers in
// the arena need not say, since the parent can look into their pipe.
const frameStarted = 'G'

// isoLink is the parent's side of an isolated worker's socket.
type isoLink struct {
	conn *net.UnixConn
	r    *bufio.Reader
	// running is the task the worker said it started and has not
	// answered, 0 if none. Guarded by the pool's mutex.
	running uint64
}

// startIsolatedWorker is startWorker for WithIsolatedWorkers.
func (p *Pool) startIsolatedWorker() error {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("mp: isolated pool worker: socketpair: %w", err)
	}
	f := os.NewFile(uintptr(pair[0]), "multiproc-pool")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(pair[1])
		return fmt.Errorf("mp: isolated pool worker: %w", err)
	}
	spec := workerSpec{MaxRSS: p.cfg.maxRSS, CPURetire: p.cfg.limits.CPUTime / 2}
	if t := p.cfg.init; t != nil {
		vals, _ := t.bind(p.cfg.initArgs)
		if spec.Init, err = codec.MarshalArgs(vals); err != nil {
			c.Close()
			unix.Close(pair[1])
			return fmt.Errorf("mp: pool initializer: %w", err)
		}
		spec.InitFn, spec.NInit = t.name, len(p.cfg.initArgs)
	}
	proc := NewProcess(poolIsolatedWorker, spec)
	proc.Name, proc.Daemon = p.workerName(), true
	proc.Isolated, proc.Limits = true, p.cfg.limits
	proc.files = []int{pair[1]}
	err = proc.Start()
	unix.Close(pair[1]) // the worker's now, or nobody's
	if err != nil {
		c.Close()
		return err
	}
	uc := c.(*net.UnixConn)
	p.addWorker(&worker{p: p, proc: proc, iso: &isoLink{conn: uc, r: bufio.NewReaderSize(uc, 64<<10)}})
	return nil
}

// send writes a task frame. Any failure means the worker is gone (or its
// socket was shut, see shut).
func (l *isoLink) send(frame []byte) error {
	if err := spawn.WriteFrame(l.conn, frame); err != nil {
		return fmt.Errorf("%w: %v", io.ErrClosedPipe, err)
	}
	return nil
}

// recv reads a frame of at most maxFrame bytes, as the worker's pipe
// would carry.
func (l *isoLink) recv() ([]byte, error) { return spawn.ReadFrameMax(l.r, maxFrame) }

// closeWrite tells the worker to exit once it has read its tasks.
func (l *isoLink) closeWrite() { l.conn.CloseWrite() }

// shut ends both directions once the worker process is gone. What it sent
// before it died is in the socket's buffer and is read first; the read
// deadline only bounds a wait on a descendant that escaped the kill of the
// worker's tree with the socket.
func (l *isoLink) shut() {
	l.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	l.conn.SetWriteDeadline(time.Now())
}

func (l *isoLink) close() { l.conn.Close() }

// unstartedLocked adds to m the tasks of inflight that the worker never
// said it started.
func (l *isoLink) unstartedLocked(inflight []*job, m map[uint64]bool) {
	for _, j := range inflight {
		if j.id != l.running {
			m[j.id] = true
		}
	}
}

// receiveIsolated is receive for an isolated worker: every frame is
// checked against what the worker was given, and one that does not fit
// costs the worker its life and its task.
func (w *worker) receiveIsolated() {
	p := w.p
	for {
		msg, err := w.iso.recv()
		if err != nil {
			// The socket's own errors (ECONNRESET when the worker left
			// tasks unread, EOF) come once what it sent has been read:
			// the worker is gone, and settle accounts for its tasks.
			// Anything else is a frame over the limit.
			var oe *net.OpError
			if !errors.As(err, &oe) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				w.refuse(err)
			}
			return
		}
		switch {
		case len(msg) == 1 && msg[0] == frameReady:
			p.mu.Lock()
			ok := !w.ready
			w.ready, p.failedStarts = true, 0
			if ok && len(w.inflight) > 0 && w.stop == nil {
				w.armLocked(w.inflight[0]) // as receive does
			}
			p.mu.Unlock()
			if !ok {
				w.refuse(errors.New("said twice that it was ready"))
				return
			}
			continue
		case len(msg) == 9 && msg[0] == frameStarted:
			id := binary.LittleEndian.Uint64(msg[1:])
			p.mu.Lock()
			ok := w.ready && w.iso.running == 0 && len(w.inflight) > 0 && w.inflight[0].id == id
			if ok {
				w.iso.running = id
			}
			p.mu.Unlock()
			if !ok {
				w.refuse(fmt.Errorf("said it started task %d, which it was not given", id))
				return
			}
			continue
		}
		rep, err := parseResult(msg)
		p.mu.Lock()
		if err == nil && (len(w.inflight) == 0 || !rep.fits(w.inflight[0]) || w.iso.running != rep.id) {
			err = fmt.Errorf("sent a result for task %d, which it was not running", rep.id)
		}
		if err != nil {
			p.mu.Unlock()
			w.refuse(err)
			return
		}
		j := w.inflight[0]
		p.stats.answered(j, &rep, w.since)
		w.inflight[0] = nil
		w.inflight = w.inflight[1:]
		w.iso.running = 0
		w.disarmLocked()
		if len(w.inflight) > 0 {
			w.armLocked(w.inflight[0])
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		for i := range rep.rs {
			rep.rs[i].err = w.untrusted(rep.rs[i].err)
		}
		for i := range rep.fails {
			rep.fails[i].err = w.untrusted(rep.fails[i].err)
		}
		if rep.batched {
			j.completeBatch(rep.vals, rep.fails)
		} else {
			j.complete(rep.rs)
		}
	}
}

// refuse kills a worker that broke the protocol: the tasks it holds fail
// with why, and it is replaced.
func (w *worker) refuse(why error) {
	err := fmt.Errorf("%w: isolated pool worker %s (pid %d) %v; it was killed and replaced",
		ErrCorrupt, w.proc.Name, w.proc.Pid(), why)
	w.p.mu.Lock()
	w.kill(err)
	w.p.mu.Unlock()
}

// isolatedLoss returns what the end of an isolated worker, which Join
// reported as err, says of the task it was running: a *LimitError, or an
// error wrapping ErrCorrupt if it wrote what its parent could not read on
// its control socket; nil if it simply died.
func (w *worker) isolatedLoss(err error) error {
	var le *LimitError
	var pe *ProcessError
	switch {
	case errors.As(err, &le):
		return le
	case errors.As(err, &pe) && strings.HasPrefix(pe.Message, unreadableReport):
		return fmt.Errorf("%w: isolated pool worker %s (pid %d) wrote garbage on its control socket; it was killed and replaced",
			ErrCorrupt, w.proc.Name, w.proc.Pid())
	}
	return nil
}

// untrusted trims a task's error from an isolated worker to what the
// parent keeps, and makes it a *LimitError if it shows that the task hit
// one of the pool's limits.
func (w *worker) untrusted(err error) error {
	te, ok := err.(*TaskError)
	if !ok {
		return err
	}
	te.Message = sanitize(te.Message, isolatedMaxMessage)
	te.Stack = sanitize(te.Stack, isolatedMaxStack)
	te.matches = nil
	limit := te.limit
	te.limit = ""
	if v := w.p.cfg.limits.value(limit); v > 0 {
		pe := &ProcessError{Name: w.proc.Name, Pid: w.proc.Pid(), Message: te.Message, Panicked: te.Panicked, Stack: te.Stack}
		return &LimitError{Limit: limit, Value: v, Process: pe, task: te}
	}
	return te
}

func init() { Register(poolIsolatedWorker) }

// isoWorker is, in an isolated worker process, its socket.
var isoWorker *isoConn

// poolIsolatedWorker is the main function of an isolated worker process.
func poolIsolatedWorker(ctx context.Context, spec workerSpec) error {
	if len(isolatedFiles) < 1 || isolatedFiles[0] != isoChannelFd {
		return errors.New("mp: isolated pool worker: no socket inherited")
	}
	// Kept at its number, which the worker's own code needs not know.
	if err := unix.SetNonblock(isoChannelFd, true); err != nil {
		return fmt.Errorf("mp: isolated pool worker: %w", err)
	}
	f := os.NewFile(isoChannelFd, "multiproc-pool")
	defer f.Close()
	c := &isoConn{f: f, r: bufio.NewReaderSize(f, 64<<10), cpuRetire: spec.CPURetire}
	isoWorker = c
	return serveWorker(ctx, spec, nil, c)
}

// isoConn is an isolated worker's side of its socket.
type isoConn struct {
	f         *os.File
	r         *bufio.Reader
	cpuRetire time.Duration // retire once this much CPU time is used; 0: never
	limitHit  bool          // a task's error showed that it hit a limit
}

// get reads the next task frame; io.EOF once the parent has no more.
func (c *isoConn) get() ([]byte, error) { return spawn.ReadFrame(c.r) }

func (c *isoConn) send(b []byte) error { return spawn.WriteFrame(c.f, b) }

// started tells the parent that task id starts now.
func (c *isoConn) started(id uint64) error {
	var b [9]byte
	b[0] = frameStarted
	binary.LittleEndian.PutUint64(b[1:], id)
	return c.send(b[:])
}

// retire reports whether the worker should exit after the task it just
// answered: a task hit a limit (and may have left the worker at it), or
// the worker has used half its CPU time.
func (c *isoConn) retire() bool {
	if c.limitHit {
		return true
	}
	if c.cpuRetire > 0 {
		var ru unix.Rusage
		if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil &&
			time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) >= c.cpuRetire {
			return true
		}
	}
	return false
}

// encodeError is encodeCallError in an isolated worker: the message and
// stack travel, with the limit the error shows was hit, if any; nothing
// else would be believed.
func (c *isoConn) encodeError(ce *callError) []byte {
	w := taskErrWire{Message: ce.Message, Panicked: ce.Panicked, Stack: ce.Stack, Limit: limitOf(ce.err)}
	if w.Limit != "" {
		c.limitHit = true
	}
	b, _ := codec.Marshal(w)
	return b
}

// holdsPrimitive reports whether an item of in from lo to hi holds a
// shared primitive.
func (in mapInput) holdsPrimitive(lo, hi int) bool {
	if !lends(in.elem) {
		return false
	}
	for i := lo; i < hi; i++ {
		if sharedIn(in.args(i)...) != "" {
			return true
		}
	}
	return false
}

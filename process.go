package mp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/spawn"
	"github.com/multiproc/mp/internal/supervise"
)

// Runner is what Process and Thread have in common, so that code can switch
// between running work in a child process and in a goroutine.
type Runner interface {
	Start() error
	Join(ctx context.Context) error
	IsAlive() bool
	Pid() int
	ExitCode() (code int, exited bool)
	Terminate() error
	Kill() error
}

var (
	_ Runner = (*Process)(nil)
	_ Runner = (*Thread)(nil)
)

// Process runs a registered function, or a registered type's Run method, in
// a child process: the running binary re-executed, which Init recognises.
// It is shaped like os/exec.Cmd: set the fields, then Start, then Join.
//
// The child gets its own copy of everything: its memory is separate from the
// parent's, and only the arguments (encoded) travel to it. When the parent
// dies in any way, the child is killed with it, and so on down the tree.
//
// The methods of a Process are safe to call from several goroutines.
//
// # Containment
//
// A child gets /dev/null as stdin, the parent's stdout and stderr (or
// /dev/null where the parent has closed them), its control socket and the
// tree's arena, and no other descriptor of the parent. Its os.Args is the
// program's name alone: the parent's arguments do not reach it.
//
// If the program has closed any of its own descriptors 0-2, Start reopens
// them on /dev/null, as the C library does for set-user-ID programs, so
// that no descriptor opened later (the library's, or the program's) lands
// where the runtime and children write their output.
//
// So that ps and top tell the processes of a tree apart, a child's command
// line reads "<program> <Name>" (ps -ef, ps aux, top -c: "./tickets
// Process-3", "./tickets PoolWorker-2"), and its comm (ps -o comm, top,
// pgrep, killall) is its parent's, as for a forked process, rather than
// the "exe" of the re-executed binary; the kernel keeps 15 bytes of comm,
// too few for the name too. The child's os.Args[0] is the program's name
// again from the initialisation of this module's packages on (a package
// that does not import this module and reads os.Args in its init may run
// before, and see the title).
//
// No descendant of a process of the tree outlives the tree. Every process
// that starts children is a child subreaper (orphans below it stay below
// it), and each child runs in a process group of its own and, where the
// machine lets the library create cgroup v2 directories below its own
// cgroup, in a cgroup of its own. When a child ends, whichever way, its
// parent kills what it leaves behind before reaping it: its process group,
// and its cgroup (cgroup.kill), which holds even descendants that left the
// group with setsid; helpers a child started in the background therefore
// end with it. Kill kills the child's whole subtree: its cgroup, or, without
// one, every descendant found through /proc, each stopped as it is found.
// When a parent dies, in any way, each child gets a signal on which it
// prints why on stderr (the mark of a main that forgot mp.Shutdown), kills
// its own subtree, and dies.
//
// What remains out of reach: without cgroups, a descendant that left its
// process group (setsid, setpgid) survives when its mp ancestor is killed
// from outside the library (SIGKILL by the OOM killer, or kill -9), since
// nothing then records that it belonged there; with cgroups it dies. A
// process that a privileged descendant moved into another cgroup, or that
// got out of the tree before its ancestor's death was noticed (a double
// fork racing the kill), is not found either; a child stopped with SIGSTOP
// notices its parent's death only when continued. The reaping of adopted
// orphans leaves alone any child this process holds a pidfd for (the os
// package does for os/exec children); a child started with raw
// syscall.ForkExec, without one, may be reaped by the library.
//
// The zero Process is not usable: make one with NewProcess. Its Start fails
// with an error wrapping ErrBadArguments.
type Process struct {
	// Name is used in errors and by CurrentProcess in the child. It
	// defaults to Python's "Process-N" ("Process-1:2" for the second child
	// of Process-1; the type's name instead of "Process" for Run types).
	Name string
	// Daemon marks a process that is terminated, rather than waited for, by
	// Shutdown, and that may not start children. Set it before Start.
	Daemon bool
	// Isolated runs the child as code the tree does not trust: it does not
	// map the tree's shared memory, nor hold a descriptor of it, so that
	// nothing it does through the library can corrupt a primitive of the
	// tree, and it talks to its parent only through its own control socket,
	// whose one report the parent reads as untrusted input (bounded in
	// size, checked, trimmed). Isolation is from the tree, not from the
	// operating system: code running as the parent's user can still open
	// the parent's descriptors through /proc or trace it; run code that
	// must not, as another user. It cannot be given primitives:
	// Start fails with ErrIsolated if one is found among the arguments (or
	// the Run type's fields). Neither the child nor what it executes can
	// gain privileges (PR_SET_NO_NEW_PRIVS). It may use primitives of its
	// own, in an arena of its own, and start processes below it. Set it
	// before Start.
	Isolated bool
	// Limits bound an isolated child's resources, applied before the
	// program's own packages initialise in it. They require Isolated.
	Limits Limits
	// QuietErrors stops the child from printing its function's failure on
	// its standard error. By default, as Python prints a child's
	// traceback, a child whose function returns an error, panics or calls
	// runtime.Goexit prints "Process <Name>:" and the error, or the panic
	// with the goroutine's stack, before it exits; Join returns the same
	// failure either way. Set it before Start.
	QuietErrors bool

	fn       any
	args     []any
	identity []int
	seq      int
	files    []int // isolated only: descriptors the child inherits (see isolatedFiles)

	mu      sync.Mutex
	started bool
	child   *spawn.Child
	done    chan struct{} // closed once the child is reaped and its outcome known
	code    int
	err     error
	sent    syscall.Signal // the last signal Kill or Terminate sent, for the logs
}

// NewProcess returns a Process that will call fn(args...) in a child
// process. fn must be a function or a type with a Run method, passed to
// Register. If fn's first parameter is a context.Context, the child supplies
// it; args are the remaining parameters. Nothing is checked until Start.
func NewProcess(fn any, args ...any) *Process {
	identity, seq := nextIdentity()
	kind := "Process"
	if t := reflect.TypeOf(fn); t != nil && t.Kind() != reflect.Func {
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		kind = t.Name()
	}
	return &Process{Name: defaultName(kind, identity), fn: fn, args: args, identity: identity, seq: seq}
}

// bootstrap is what the parent sends a child on its control socket.
type bootstrap struct {
	Target   string
	Recv     []byte // the Run type's value, for Run types
	Args     []byte
	NArgs    int
	Name     string
	Daemon   bool
	Isolated bool
	Quiet    bool
	Identity []int
	Parent   ProcessInfo
	Grace    time.Duration // the child's SetShutdownGrace
}

// outcome is what a child sends back before it exits.
type outcome struct {
	Message  string
	Panicked bool
	Stack    string
	Limit    string    // the limit the child's error shows it hit (see Limits)
	Errs     errorWire // what travels of the error besides its message
}

// sanitized trims what an isolated child reported to what the parent
// keeps.
func (o *outcome) sanitized() *outcome {
	if o == nil {
		return nil
	}
	return &outcome{
		Message:  sanitize(o.Message, isolatedMaxMessage),
		Panicked: o.Panicked,
		Stack:    sanitize(o.Stack, isolatedMaxStack),
		Limit:    o.Limit,
	}
}

// Start starts the child process and returns once it is running; it does not
// wait for fn to begin or end. It returns an error, and starts nothing, if
// Init was not called, the target is not registered, the arguments do not
// match its parameters or cannot be encoded, the process was started before,
// or the calling process is daemonic.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return fmt.Errorf("%w: %s", ErrAlreadyStarted, p.Name)
	}
	if !initialized.Load() {
		return ErrNotInitialized
	}
	if self.info.Daemon {
		return fmt.Errorf("%w (%s starting %s)", ErrDaemonic, self.info.Name, p.Name)
	}
	req := spawn.Request{Title: p.Name}
	var tail *stderrTail
	if p.Isolated {
		if err := p.Limits.check(); err != nil {
			return err
		}
		if k := sharedIn(append([]any{p.fn}, p.args...)...); k != "" {
			return describeIsolated(p.Name, k)
		}
		req.Isolated, req.Limits = true, p.Limits.spawn()
	} else if p.Limits != (Limits{}) {
		return fmt.Errorf("%w: %s: Limits apply to isolated processes only (set Isolated)", ErrBadArguments, p.Name)
	}
	boot, err := p.bootstrap()
	if err != nil {
		return err
	}
	if !p.Isolated {
		a, err := treeArena()
		if err != nil {
			return err
		}
		req.Extra = []int{a.Fd()}
	} else {
		req.Extra = p.files
	}
	if p.Isolated && p.Limits.Memory > 0 {
		// The runtime's "out of memory" is the only word of a memory
		// limit that the kernel does not give.
		var w *os.File
		if tail, w, err = newStderrTail(); err != nil {
			return fmt.Errorf("mp: start %s: %w", p.Name, err)
		}
		defer w.Close()
		req.Stderr = int(w.Fd())
	}
	c, err := spawn.Start(req)
	if err != nil {
		return fmt.Errorf("mp: start %s: %w", p.Name, err)
	}
	// The child waits for its bootstrap frame before it decodes anything,
	// so pipe ends among its arguments (and the fields of a Run type) can
	// be handed over, and the primitives among them counted as its, before
	// it runs.
	if start, ok := proc.StartTime(c.Pid); ok {
		child := uint64(uint32(c.Pid)) | uint64(uint32(start))<<32
		travelling := append([]any{p.fn}, p.args...)
		for _, conn := range connsIn(travelling) {
			conn.handOver(child)
		}
		attachForChild(child, travelling)
	}
	if err := spawn.WriteFrame(c.Ctl, boot); err != nil {
		c.Kill()
		st, _ := c.Wait()
		c.Ctl.Close()
		return fmt.Errorf("mp: start %s: child %d died before reading its task (%v): %w", p.Name, c.Pid, st, err)
	}
	p.started, p.child, p.done = true, c, make(chan struct{})
	self.mu.Lock()
	self.children[p] = struct{}{}
	self.mu.Unlock()

	reported := make(chan *outcome, 1)
	maxReport := spawn.MaxFrame
	if p.Isolated {
		maxReport = isolatedMaxReport
	}
	go func() {
		out := readOutcome(c.Ctl, maxReport)
		if out != nil && p.Isolated && strings.HasPrefix(out.Message, unreadableReport) {
			c.Kill() // it broke the protocol: it would block writing the rest
		}
		reported <- out
	}()
	noteStarted(p, c.Pid) // before its end can be noted
	supervise.Watch(c, func(st spawn.Status, werr error) {
		out := <-reported
		c.Ctl.Close()
		var limit string
		if p.Isolated {
			out = out.sanitized()
			saidOOM := tail != nil && tail.wait()
			limit = limitHit(p.Limits, st, out, saidOOM, st.OOMKilled)
		}
		p.finish(st, out, werr, limit)
	})
	return nil
}

func (p *Process) bootstrap() ([]byte, error) {
	t, err := lookup(p.fn)
	if err != nil {
		return nil, err
	}
	b := bootstrap{
		Target:   t.name,
		NArgs:    len(p.args),
		Name:     p.Name,
		Daemon:   p.Daemon,
		Isolated: p.Isolated,
		Quiet:    p.QuietErrors,
		Identity: p.identity,
		Parent:   self.info,
		Grace:    time.Duration(shutdownGrace.Load()),
	}
	if t.typ != nil {
		if len(p.args) != 0 {
			return nil, fmt.Errorf("%w: %s.Run takes no arguments; set the type's fields instead", ErrBadArguments, t.typ.Name())
		}
		recv := reflect.Indirect(reflect.ValueOf(p.fn))
		if !recv.IsValid() {
			return nil, fmt.Errorf("%w: nil %s", ErrBadArguments, t.typ)
		}
		if b.Recv, err = codec.Marshal(recv.Interface()); err != nil {
			return nil, fmt.Errorf("mp: %s: %w", p.Name, err)
		}
	} else {
		vals, err := t.bind(p.args)
		if err != nil {
			return nil, err
		}
		if b.Args, err = codec.MarshalArgs(vals); err != nil {
			return nil, fmt.Errorf("mp: %s: %w", p.Name, err)
		}
	}
	return codec.Marshal(b)
}

const unreadableReport = "mp: unreadable report from child"

// readOutcome reads the child's report; nil if the child ended without one.
func readOutcome(r io.Reader, max int) *outcome {
	frame, err := spawn.ReadFrameMax(r, max)
	if err != nil {
		if max < spawn.MaxFrame && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			// An isolated child that claimed more than it may send.
			return &outcome{Message: unreadableReport + ": " + err.Error()}
		}
		return nil
	}
	var out outcome
	if codec.Unmarshal(frame, &out) != nil {
		return &outcome{Message: unreadableReport}
	}
	return &out
}

func (p *Process) finish(st spawn.Status, out *outcome, werr error, limit string) {
	self.mu.Lock()
	delete(self.children, p)
	self.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.code = st.Code
	switch {
	case werr != nil:
		p.err = fmt.Errorf("mp: %s: %w", p.Name, werr)
	case st.Code != 0 || (out != nil && out.Message != ""):
		pe := &ProcessError{Name: p.Name, Pid: p.child.Pid, ExitCode: st.Code}
		if out != nil {
			pe.Message, pe.Panicked, pe.Stack = out.Message, out.Panicked, out.Stack
			pe.errs = out.Errs.decode()
		}
		p.err = pe
		if limit != "" {
			p.err = &LimitError{Limit: limit, Value: p.Limits.value(limit), Process: pe}
		}
	}
	noteExit(p, st, limit)
	close(p.done)
}

// Join waits for the process to finish. It returns nil if the function
// returned without error and the process exited with status 0; a
// *ProcessError if the function failed or panicked, or the process exited
// otherwise (a signal, os.Exit with a non-zero status); ctx.Err() if ctx
// ends first, leaving the process running (a process that has finished
// gives its outcome, even to an ended ctx). Join may be called any number of
// times, from any goroutine.
func (p *Process) Join(ctx context.Context) error {
	p.mu.Lock()
	started, done := p.started, p.done
	p.mu.Unlock()
	if !started {
		return fmt.Errorf("%w: %s", ErrNotStarted, p.Name)
	}
	// The outcome wins over an ended ctx.
	if err := waitDone(ctx, done); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// IsAlive reports whether the process has been started and has not yet
// been reaped.
func (p *Process) IsAlive() bool {
	p.mu.Lock()
	started, done := p.started, p.done
	p.mu.Unlock()
	if !started {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Pid returns the child's process id, or 0 before Start.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.child == nil {
		return 0
	}
	return p.child.Pid
}

// ExitCode returns the exit status once the process has finished: 0 for
// success, 1 if the function returned an error or panicked, n after
// os.Exit(n), and the negated signal number if a signal ended it (-15 after
// Terminate), as Python's exitcode. exited is false while the process has not
// been started or is still running.
func (p *Process) ExitCode() (code int, exited bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return 0, false
	}
	select {
	case <-p.done:
		return p.code, true
	default:
		return 0, false
	}
}

// Terminate sends SIGTERM to the process and to its process group. If the
// function the child runs takes a context.Context, that context is
// cancelled, the child's own children are sent SIGTERM in turn, and the
// child has the grace period (SetShutdownGrace, as it was at Start) to
// return before it is killed with SIGKILL with its whole subtree (Kill
// meanwhile kills at once; another Terminate changes nothing). A function
// without a context dies at
// once, and its own children with it. Either way, unless killed after the
// grace period, the exit code is -15 (SIGTERM), as in Python: a child whose
// function returned reports its outcome, waits for its children, then ends
// itself by SIGTERM. The same holds for a SIGTERM sent by anyone else (kill
// from a shell). Terminating a process that has already finished does
// nothing.
func (p *Process) Terminate() error { return p.signal(syscall.SIGTERM) }

// Kill sends SIGKILL to the process and to its process group, and so, in
// turn, to its descendants: it is immediate, with no grace period, whatever
// the function. Killing a finished process does nothing.
func (p *Process) Kill() error { return p.signal(syscall.SIGKILL) }

func (p *Process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	c := p.child
	if c != nil {
		p.sent = sig
	}
	p.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%w: %s", ErrNotStarted, p.Name)
	}
	if err := c.Signal(sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("mp: signal %s: %w", p.Name, err)
	}
	return nil
}

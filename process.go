package mp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"syscall"

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
type Process struct {
	// Name is used in errors and by CurrentProcess in the child. It
	// defaults to Python's "Process-N" ("Process-1:2" for the second child
	// of Process-1; the type's name instead of "Process" for Run types).
	Name string
	// Daemon marks a process that is terminated, rather than waited for, by
	// Shutdown, and that may not start children. Set it before Start.
	Daemon bool

	fn       any
	args     []any
	identity []int
	seq      int

	mu      sync.Mutex
	started bool
	child   *spawn.Child
	done    chan struct{} // closed once the child is reaped and its outcome known
	code    int
	err     error
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
	Identity []int
	Parent   ProcessInfo
}

// outcome is what a child sends back before it exits.
type outcome struct {
	Message  string
	Panicked bool
	Stack    string
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
	boot, err := p.bootstrap()
	if err != nil {
		return err
	}
	a, err := treeArena()
	if err != nil {
		return err
	}
	c, err := spawn.Start(spawn.Request{Extra: []int{a.Fd()}})
	if err != nil {
		return fmt.Errorf("mp: start %s: %w", p.Name, err)
	}
	// The child waits for its bootstrap frame before it decodes anything,
	// so pipe ends among its arguments can be handed over, and the
	// primitives among them counted as its, before it runs.
	if start, ok := proc.StartTime(c.Pid); ok {
		child := uint64(uint32(c.Pid)) | uint64(uint32(start))<<32
		for _, conn := range connsIn(p.args) {
			conn.handOver(child)
		}
		attachForChild(child, p.args)
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
	go func() { reported <- readOutcome(c.Ctl) }()
	supervise.Watch(c, func(st spawn.Status, werr error) {
		out := <-reported
		c.Ctl.Close()
		p.finish(st, out, werr)
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
		Identity: p.identity,
		Parent:   self.info,
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

// readOutcome reads the child's report; nil if the child ended without one.
func readOutcome(r io.Reader) *outcome {
	frame, err := spawn.ReadFrame(r)
	if err != nil {
		return nil
	}
	var out outcome
	if codec.Unmarshal(frame, &out) != nil {
		return &outcome{Message: "mp: unreadable report from child"}
	}
	return &out
}

func (p *Process) finish(st spawn.Status, out *outcome, werr error) {
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
		}
		p.err = pe
	}
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

// Terminate sends SIGTERM to the process and to its process group. Its own
// children, in their own groups, die with it. Terminating a process that has
// already finished does nothing.
func (p *Process) Terminate() error { return p.signal(syscall.SIGTERM) }

// Kill sends SIGKILL to the process and to its process group, and so, in
// turn, to its descendants. Killing a finished process does nothing.
func (p *Process) Kill() error { return p.signal(syscall.SIGKILL) }

func (p *Process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	c := p.child
	p.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%w: %s", ErrNotStarted, p.Name)
	}
	if err := c.Signal(sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("mp: signal %s: %w", p.Name, err)
	}
	return nil
}

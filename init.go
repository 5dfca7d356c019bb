package mp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/spawn"
)

var (
	initOnce    sync.Once
	initialized atomic.Bool
)

// Init must be the first statement of main, and of TestMain in tests that
// start processes. It is Go's `if __name__ == "__main__"`: in the root
// process it returns at once; in a child started by this package it runs
// the function the parent asked for, reports the outcome to the parent, and
// exits, never returning. Whatever main does before Init, every child does
// too. Init is safe to call more than once.
func Init() {
	initOnce.Do(func() {
		inh, isChild, err := spawn.ChildFiles()
		if err != nil {
			fmt.Fprintln(os.Stderr, "mp.Init:", err)
			os.Exit(1)
		}
		initialized.Store(true)
		if isChild {
			runChild(inh)
		}
	})
}

// runChild is the whole life of a child process after the runtime's start.
func runChild(inh spawn.Inherited) {
	ctl, err := net.FileConn(inh.Ctl)
	inh.Ctl.Close()
	if err != nil {
		childFatal(nil, "control socket: %v", err)
	}
	frame, err := spawn.ReadFrame(ctl)
	if err != nil {
		os.Exit(1) // the parent died before sending the task: nobody to report to
	}
	var b bootstrap
	if err := codec.Unmarshal(frame, &b); err != nil {
		childFatal(ctl, "bad bootstrap message: %v", err)
	}
	if _, err := spawn.AddressSpaceLimit(); err != nil {
		childFatal(ctl, "memory limit: %v", err)
	}
	if !b.Isolated {
		if len(inh.Extra) < 1 {
			childFatal(ctl, "no arena inherited")
		}
		a, err := shm.Attach(inh.Extra[0])
		if err != nil {
			childFatal(ctl, "attach arena: %v", err)
		}
		arena.a = a
	} else {
		isolatedFiles = inh.Extra
	}
	parent := b.Parent
	SetShutdownGrace(b.Grace)
	self.info = ProcessInfo{Name: b.Name, Pid: os.Getpid(), Daemon: b.Daemon}
	self.parent = &parent
	self.identity = b.Identity
	spawn.SetDeathNotice(fmt.Sprintf("mp: %s (pid %d) killed: its parent %s (pid %d) ended while it was running "+
		"(a main that starts processes must defer mp.Shutdown() to wait for them)",
		strconv.Quote(b.Name), os.Getpid(), strconv.Quote(parent.Name), parent.Pid))

	go watchParent(ctl)

	t, ok := lookupName(b.Target)
	if !ok {
		childFatal(ctl, "%s is not registered in the child process: call mp.Register unconditionally, from an init function", b.Target)
	}
	var recv reflect.Value
	var args []reflect.Value
	if t.typ != nil {
		recv = reflect.New(t.typ)
		if err := codec.Unmarshal(b.Recv, recv.Interface()); err != nil {
			childFatal(ctl, "decode %s: %v", t.typ, err)
		}
	} else if args, err = codec.UnmarshalArgs(b.Args, t.argTypes(b.NArgs)); err != nil {
		childFatal(ctl, "decode arguments of %s: %v", t.name, err)
	}
	ctx := context.Background()
	if t.withCtx {
		// SIGTERM is then a request: the function sees its context
		// cancelled and has the grace period to return.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		catchTerm(cancel)
	}
	returned := false
	defer func() {
		if !returned {
			// runtime.Goexit in the target (t.FailNow does): the child
			// would wait forever once the deferred calls have run.
			if !b.Quiet {
				printFailure(b.Name, &callError{Message: goexitMessage})
			}
			ShutdownContext(context.Background())
			report(ctl, outcome{Message: goexitMessage})
			endChild(1)
		}
	}()
	_, cerr := t.call(ctx, recv, args)
	returned = true
	// A function that returns its context's error once SIGTERM stopped it
	// has not failed: it did as it was asked.
	if cerr != nil && !b.Quiet && !(stopping() && errors.Is(cerr.err, context.Canceled)) {
		printFailure(b.Name, cerr)
	}
	ShutdownContext(context.Background())
	code := 0
	var out outcome
	if cerr != nil {
		code = 1
		out = outcome{Message: cerr.Message, Panicked: cerr.Panicked, Stack: cerr.Stack, Limit: limitOf(cerr.err)}
		if !b.Isolated {
			out.Errs = encodeError(cerr.err)
		} else {
			out = *out.sanitized() // what the parent would keep, within what it reads
		}
	}
	report(ctl, out)
	endChild(code)
}

// endChild exits with code, or, if a signal stopped the child (SIGTERM),
// as killed by it: that is what the parent, and Python, expect of a
// terminated process, however gracefully it ended.
func endChild(code int) {
	if stopping() {
		if sig, ok := treeStop.sig.(syscall.Signal); ok {
			spawn.DieBySignal(sig)
		}
	}
	os.Exit(code)
}

// printFailure prints the failure of the child's function on its stderr,
// as Python prints a child's traceback: "Process <name>:", then the error,
// or the panic and the stack.
func printFailure(name string, cerr *callError) {
	var b strings.Builder
	b.WriteString("Process " + name + ":\n")
	if cerr.Panicked {
		b.WriteString("panic: " + cerr.Message + "\n\n" + cerr.Stack)
	} else {
		b.WriteString("error: " + cerr.Message)
	}
	if !strings.HasSuffix(b.String(), "\n") {
		b.WriteByte('\n')
	}
	os.Stderr.WriteString(b.String())
}

func report(ctl net.Conn, out outcome) {
	if frame, err := codec.Marshal(out); err == nil {
		spawn.WriteFrame(ctl, frame)
	}
}

// childFatal reports a failure of the machinery (not of the user's
// function) and exits with status 1.
func childFatal(ctl net.Conn, format string, args ...any) {
	msg := "mp: child: " + fmt.Sprintf(format, args...)
	if ctl != nil {
		report(ctl, outcome{Message: msg})
	} else {
		fmt.Fprintln(os.Stderr, msg)
	}
	os.Exit(1)
}

// watchParent waits for EOF on the control socket, which means the parent
// is gone, and then ends this process and its subtree, saying why on
// stderr. The kernel's death signal usually gets there first; this covers
// the cases it misses.
func watchParent(ctl net.Conn) {
	var buf [64]byte
	for {
		if _, err := ctl.Read(buf[:]); err != nil {
			break
		}
	}
	spawn.ParentGone()
}

// DefaultShutdownGrace is how long Shutdown lets a daemonic child take to
// end after SIGTERM before it kills it with SIGKILL, unless
// SetShutdownGrace says otherwise; it is also the grace period of a tree
// stopped by a signal (NotifyContext), and of a child sent SIGTERM whose
// function takes a context.
const DefaultShutdownGrace = 3 * time.Second

var shutdownGrace atomic.Int64

func init() { shutdownGrace.Store(int64(DefaultShutdownGrace)) }

// SetShutdownGrace sets how long Shutdown waits for a child it terminated
// to end before it kills it with SIGKILL, and returns the previous value. A
// zero or negative d kills at once. It is safe to call at any time. It is
// also the grace period of a stop by NotifyContext, and the one a child
// started after the call has, after SIGTERM, for its function to return
// (children inherit it, for their own children).
func SetShutdownGrace(d time.Duration) (previous time.Duration) {
	return time.Duration(shutdownGrace.Swap(int64(max(d, 0))))
}

// Shutdown is what Python does at interpreter exit: it terminates the
// daemonic child processes this process started, then waits for all of its
// child processes and its non-daemonic threads to finish. Defer it at the top
// of main, after Init. A daemonic child still running SetShutdownGrace after
// SIGTERM (one that ignores the signal) is killed with SIGKILL, so that part
// is bounded; non-daemonic children and threads are waited for as long as
// they run, which is the point of Shutdown: use ShutdownContext to bound that
// too.
//
// A program that returns from main (or calls os.Exit) without Shutdown
// still leaves no orphans: every child is killed when its parent exits, and
// says so on its standard error, naming itself and its parent.
//
// Once NotifyContext has caught a signal, Shutdown does not return: when
// the tree is down (its children ended, or killed after the grace period;
// threads waited for until then), it ends the program with status 128+n,
// 130 for SIGINT and 143 for SIGTERM, what a shell reports for a program
// the signal ended. Defer it first in main, so that it runs last.
func Shutdown() {
	if se := (*SignalError)(nil); errors.As(ShutdownContext(context.Background()), &se) {
		os.Exit(se.ExitCode())
	}
}

// ShutdownContext is Shutdown with a bound: if ctx ends while children or
// threads are still running, it terminates the child processes left (SIGTERM,
// then SIGKILL after the grace period), waits for them to be gone, and
// returns ctx.Err() without waiting for the threads left; otherwise it
// returns nil. Once NotifyContext has caught a signal, it waits for threads
// only until the grace period is over, and returns the *SignalError, for the
// caller to exit as it decides.
func ShutdownContext(ctx context.Context) error {
	defer spawn.ReapAdopted()
	children := ActiveChildren()
	var daemons []*Process
	// A stopping tree has sent its children SIGTERM, and kills them at the
	// end of its grace period, which a new one must not extend.
	if !stopping() {
		for _, p := range children {
			if p.Daemon {
				p.Terminate()
				daemons = append(daemons, p)
			}
		}
	}
	stopAll(daemons)
	var err error
	for _, p := range children {
		if p.Join(ctx) != nil && ctx.Err() != nil {
			err = ctx.Err()
			break
		}
	}
	if err != nil {
		left := ActiveChildren()
		for _, p := range left {
			p.Terminate()
		}
		stopAll(left)
		return stoppedOr(err)
	}
	self.mu.Lock()
	threads := make([]*Thread, 0, len(self.threads))
	for t := range self.threads {
		if !t.Daemon {
			threads = append(threads, t)
		}
	}
	self.mu.Unlock()
	tctx := ctx
	if stopping() {
		// Threads cannot be killed: they are waited for until the
		// children would have been.
		var cancel context.CancelFunc
		tctx, cancel = context.WithDeadline(ctx, treeStop.graceEnd)
		defer cancel()
	}
	for _, t := range threads {
		if t.Join(tctx) != nil && tctx.Err() != nil {
			return stoppedOr(ctx.Err())
		}
	}
	return stoppedOr(nil)
}

// stoppedOr returns err, or the *SignalError of a stop by NotifyContext.
func stoppedOr(err error) error {
	if se := stopSignal(); se != nil {
		return se
	}
	return err
}

// stopAll waits up to the grace period for ps, which were sent SIGTERM, to
// end, then kills those still running and waits for them.
func stopAll(ps []*Process) {
	if len(ps) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(shutdownGrace.Load()))
	defer cancel()
	for _, p := range ps {
		if p.Join(ctx) != nil && ctx.Err() != nil {
			break
		}
	}
	for _, p := range ps {
		if p.IsAlive() {
			p.Kill()
		}
	}
	for _, p := range ps {
		p.Join(context.Background())
	}
}

package mp

import (
	"context"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"

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
	if len(inh.Extra) < 1 {
		childFatal(ctl, "no arena inherited")
	}
	a, err := shm.Attach(inh.Extra[0])
	if err != nil {
		childFatal(ctl, "attach arena: %v", err)
	}
	arena.a = a
	parent := b.Parent
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
	_, cerr := t.call(context.Background(), recv, args)
	Shutdown()
	code := 0
	var out outcome
	if cerr != nil {
		code = 1
		out = outcome{Message: cerr.Message, Panicked: cerr.Panicked, Stack: cerr.Stack}
	}
	report(ctl, out)
	os.Exit(code)
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

// Shutdown is what Python does at interpreter exit: it terminates the
// daemonic child processes this process started, then waits for all of its
// child processes and its non-daemonic threads to finish. Defer it at the top
// of main, after Init. It blocks until every child has exited.
//
// A program that returns from main (or calls os.Exit) without Shutdown
// still leaves no orphans: every child is killed when its parent exits.
func Shutdown() {
	children := ActiveChildren()
	for _, p := range children {
		if p.Daemon {
			p.Terminate()
		}
	}
	for _, p := range children {
		p.Join(context.Background())
	}
	self.mu.Lock()
	threads := make([]*Thread, 0, len(self.threads))
	for t := range self.threads {
		if !t.Daemon {
			threads = append(threads, t)
		}
	}
	self.mu.Unlock()
	for _, t := range threads {
		t.Join(context.Background())
	}
}

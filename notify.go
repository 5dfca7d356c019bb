package mp

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/multiproc/mp/internal/spawn"
	"github.com/multiproc/mp/internal/supervise"
)

// How a tree stops. A program that installs nothing keeps the default:
// SIGINT or SIGTERM ends the root process at once, and every child dies
// with it (each is killed when its parent dies), with no chance to clean
// up. A program that calls NotifyContext stops gracefully instead, and so
// does any child that is sent SIGTERM (by Terminate or with kill) while its
// function takes a context.Context:
//
//   - the process stops handing out work: pools start no queued task;
//   - the contexts of the running functions are cancelled (NotifyContext's
//     in the root; in a child, the one its function was given, and so
//     those of its pool tasks), and every child of the process is sent
//     SIGTERM, which stops it the same way, down the tree;
//   - each process gets the grace period (SetShutdownGrace, as it was when
//     the process started) to return; children still running then are
//     killed with SIGKILL, with their whole subtrees;
//   - a child whose function returned after SIGTERM still exits as killed
//     by SIGTERM (ExitCode -15), once it has reported its function's
//     outcome and waited for its own children; a child whose function
//     takes no context dies at once, as without the stop;
//   - in the root, a second signal during the grace period kills the tree
//     at once; Kill does so for a child.

// ErrStopped is the error of work that never ran because the process tree
// was stopping (see NotifyContext): a pool task still queued, or a Map
// item not yet started, when the signal came.
var ErrStopped = errors.New("mp: not run: the process tree is stopping")

// SignalError is the cause (context.Cause) of the context NotifyContext
// cancels, and what ShutdownContext returns once the tree it stopped is
// down.
type SignalError struct {
	Signal os.Signal
}

func (e *SignalError) Error() string { return "mp: " + e.Signal.String() + " signal received" }

// ExitCode is the conventional exit status of a program the signal
// stopped, as a shell reports it: 128 plus the signal's number (130 for
// SIGINT, 143 for SIGTERM).
func (e *SignalError) ExitCode() int {
	if s, ok := e.Signal.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

// NotifyContext is signal.NotifyContext for a tree of processes: it returns
// a copy of parent that is cancelled when one of signals arrives (SIGINT and
// SIGTERM if none are given), with a *SignalError as its cause, and stops
// the tree gracefully. The process's pools start no more tasks; every child
// is sent SIGTERM, which cancels the context of its function if it takes
// one (and of its pool tasks and its own children, down the tree); after
// the grace period (SetShutdownGrace), the children still running are
// killed with their subtrees. Work that finished is delivered: Map returns
// the results computed and a *MapError whose NotRun items never started.
// A second signal during the grace period kills every child at once and
// exits with the conventional status.
//
// The program is expected to return from main once ctx is done; Shutdown,
// deferred in main, then waits for the tree to be down and ends the
// program with status 128+n (130 for SIGINT, 143 for SIGTERM). To exit
// otherwise, call ShutdownContext, which returns the *SignalError instead.
//
// stop, as signal.NotifyContext's, cancels ctx and restores the signals'
// default behaviour, unless one has already arrived: the stop then goes on,
// and a second signal still kills at once. Call it when the work that uses
// ctx is done.
func NotifyContext(parent context.Context, signals ...os.Signal) (ctx context.Context, stop context.CancelFunc) {
	if len(signals) == 0 {
		signals = []os.Signal{os.Interrupt, syscall.SIGTERM}
	}
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, signals...)
	var mu sync.Mutex
	caught, stopped := false, false
	quit := make(chan struct{})
	go func() {
		var s os.Signal
		select {
		case s = <-ch:
		case <-quit:
			return
		}
		mu.Lock()
		caught = !stopped
		mu.Unlock()
		if !caught {
			return
		}
		beginStop(s, true)
		cancel(&SignalError{Signal: s})
		killNow(<-ch)
	}()
	return ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		cancel(context.Canceled)
		if !caught && !stopped {
			stopped = true
			signal.Stop(ch)
			close(quit)
		}
	}
}

// treeStop is this process's stop, once begun.
var treeStop struct {
	once     sync.Once
	begun    atomic.Bool
	sig      os.Signal // set before begun
	byNotify bool      // NotifyContext began it: Shutdown exits
	graceEnd time.Time
}

// stopping reports whether this process is stopping.
func stopping() bool { return treeStop.begun.Load() }

// stopSignal returns the signal that stopped this process through
// NotifyContext, or nil.
func stopSignal() *SignalError {
	if !stopping() || !treeStop.byNotify {
		return nil
	}
	return &SignalError{Signal: treeStop.sig}
}

// stopIfStopping stops p, just registered (registerPool), if the process
// is stopping: beginStop may have gone through the pools before p was
// among them.
func stopIfStopping(p *Pool) {
	if stopping() {
		p.stopForTree()
	}
}

// beginStop stops this process's work for sig, once: the pools start no
// more tasks, the children are sent SIGTERM, and those still running after
// the grace period are killed. The caller cancels its contexts after.
func beginStop(sig os.Signal, byNotify bool) {
	treeStop.once.Do(func() {
		grace := time.Duration(shutdownGrace.Load())
		treeStop.sig, treeStop.byNotify, treeStop.graceEnd = sig, byNotify, time.Now().Add(grace)
		treeStop.begun.Store(true)
		eachPool((*Pool).stopForTree)
		supervise.SignalAll(syscall.SIGTERM)
		child := self.parent != nil
		time.AfterFunc(grace, func() {
			if child {
				spawn.KillTree() // the function did not return in time
			}
			spawn.KillAll()
		})
	})
}

// killNow is the second signal: every child and its subtree is killed, and
// the process exits at once.
func killNow(sig os.Signal) {
	spawn.KillAll()
	os.Exit((&SignalError{Signal: sig}).ExitCode())
}

// catchTerm makes SIGTERM stop this child gracefully: cancel cancels the
// context its function was given. Later SIGTERMs change nothing: one
// Terminate sends two (to the child and to its process group), and a
// service manager may signal every process of the tree besides its parent.
// Kill is the way to end it at once.
func catchTerm(cancel context.CancelCauseFunc) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	go func() {
		<-ch
		beginStop(syscall.SIGTERM, false)
		cancel(&SignalError{Signal: syscall.SIGTERM})
	}()
}

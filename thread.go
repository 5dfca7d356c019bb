package mp

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"sync"
)

// Thread runs a function in a goroutine of this process, with the same
// methods as Process, like Python's threading.Thread beside
// multiprocessing.Process. Unlike a process it shares memory with its
// caller: arguments are passed as they are, not encoded, and fn need not be
// registered.
//
// The methods of a Thread are safe to call from several goroutines.
//
// The zero Thread is not usable: make one with NewThread. Its Start fails
// with an error wrapping ErrBadArguments.
type Thread struct {
	// Name defaults to "Thread-N".
	Name string
	// Daemon marks a thread that Shutdown does not wait for.
	Daemon bool

	fn   any
	args []any

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc // nil unless fn takes a context
	done    chan struct{}
	err     error
}

// NewThread returns a Thread that will call fn(args...) in a new goroutine.
// fn is a function or a value with a Run method. If its first parameter is a
// context.Context, the thread supplies one that Terminate and Kill cancel.
func NewThread(fn any, args ...any) *Thread {
	_, seq := nextIdentity()
	return &Thread{Name: fmt.Sprintf("Thread-%d", seq), fn: fn, args: args}
}

// Start starts the goroutine. It returns an error if fn is not a function
// or a type with a Run method, the arguments do not match its parameters, or
// the thread was started before.
func (t *Thread) Start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started {
		return fmt.Errorf("%w: %s", ErrAlreadyStarted, t.Name)
	}
	tg, err := newLocalTarget(t.fn)
	if err != nil {
		return err
	}
	var recv reflect.Value
	var args []reflect.Value
	if tg.typ != nil {
		if len(t.args) != 0 {
			return fmt.Errorf("%w: %s.Run takes no arguments", ErrBadArguments, tg.typ.Name())
		}
		recv = reflect.ValueOf(t.fn)
		if recv.Kind() != reflect.Pointer {
			// Run may have a pointer receiver: call it on a copy.
			p := reflect.New(tg.typ)
			p.Elem().Set(recv)
			recv = p
		}
	} else if args, err = tg.bind(t.args); err != nil {
		return err
	}
	ctx := context.Background()
	if tg.withCtx {
		ctx, t.cancel = context.WithCancel(ctx)
	}
	t.started, t.done = true, make(chan struct{})
	self.mu.Lock()
	self.threads[t] = struct{}{}
	self.mu.Unlock()
	info := ThreadInfo{Name: t.Name, Daemon: t.Daemon}
	go func() {
		var cerr *callError
		returned := false
		leave := enterThread(info)
		defer leave()
		defer func() {
			if !returned {
				// runtime.Goexit (t.FailNow does): the goroutine ends
				// anyway, but as a failure, not silently.
				cerr = &callError{Message: goexitMessage}
			}
			t.finish(cerr)
		}()
		_, cerr = tg.call(ctx, recv, args)
		returned = true
	}()
	return nil
}

// finish records the outcome of the thread's function.
func (t *Thread) finish(cerr *callError) {
	t.mu.Lock()
	if cerr != nil {
		pe := &ProcessError{Name: t.Name, Pid: os.Getpid(), ExitCode: 1, Message: cerr.Message, Panicked: cerr.Panicked, Stack: cerr.Stack}
		if cerr.err != nil {
			pe.errs = []error{cerr.err}
		}
		t.err = pe
	}
	if t.cancel != nil {
		t.cancel()
	}
	close(t.done)
	t.mu.Unlock()
	self.mu.Lock()
	delete(self.threads, t)
	self.mu.Unlock()
}

// newLocalTarget is newTarget for functions that stay in this process:
// function literals are fine here.
func newLocalTarget(fn any) (*target, error) {
	v := reflect.ValueOf(fn)
	if v.Kind() == reflect.Func && !v.IsNil() {
		return signature("func", v, nil)
	}
	return newTarget(fn)
}

// Join waits for the goroutine to finish. It returns nil if fn returned
// without error, a *ProcessError (with ExitCode 1) if it returned an error or
// panicked, and ctx.Err() if ctx ends first.
func (t *Thread) Join(ctx context.Context) error {
	t.mu.Lock()
	started, done := t.started, t.done
	t.mu.Unlock()
	if !started {
		return fmt.Errorf("%w: %s", ErrNotStarted, t.Name)
	}
	if err := waitDone(ctx, done); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// IsAlive reports whether the thread has started and not yet finished.
func (t *Thread) IsAlive() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.started {
		return false
	}
	select {
	case <-t.done:
		return false
	default:
		return true
	}
}

// Pid returns the id of the process the thread runs in: this one.
func (t *Thread) Pid() int { return os.Getpid() }

// ExitCode returns 0 if fn succeeded and 1 if it returned an error or
// panicked; exited is false until it has finished.
func (t *Thread) ExitCode() (code int, exited bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.started {
		return 0, false
	}
	select {
	case <-t.done:
		if t.err != nil {
			return 1, true
		}
		return 0, true
	default:
		return 0, false
	}
}

// Terminate cancels the context the thread's function received. A goroutine
// cannot be stopped from outside, so for a function that takes no context
// Terminate returns an error wrapping ErrNotSupported. Terminating a finished
// thread does nothing.
func (t *Thread) Terminate() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.started {
		return fmt.Errorf("%w: %s", ErrNotStarted, t.Name)
	}
	if t.cancel == nil {
		select {
		case <-t.done:
			return nil
		default:
		}
		return fmt.Errorf("%w: %s cannot be terminated: its function takes no context.Context", ErrNotSupported, t.Name)
	}
	t.cancel()
	return nil
}

// Kill is Terminate: a goroutine has no harder way to stop.
func (t *Thread) Kill() error { return t.Terminate() }

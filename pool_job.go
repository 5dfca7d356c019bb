package mp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
)

// job is one message's worth of work for a pool: one call of fn, or a
// chunk of calls (Map). Its result is delivered exactly once, to finish,
// or to finishBatch for a batched job that the worker answered in kind.
type job struct {
	id          uint64
	fn          *target
	body        []byte            // process pools: the calls, as in a task frame
	ncalls      int               // process pools: how many calls body holds
	vals        [][]reflect.Value // thread pools: each call's arguments
	ctx         context.Context   // nil: none
	retries     int
	skip        *atomic.Bool // set when the job is no longer wanted (FailFast)
	finish      func([]result)
	finishBatch func(vals []byte, fails []failure) // batched jobs only
	done        atomic.Bool
	// batch: body is one encoded slice of the calls' single arguments
	// (see pool_chunk.go), not a list of argument lists. It sits here to
	// pack with done and sent, which keeps a job in its size class.
	batch bool

	// Guarded by the pool's mutex.
	sent    bool  // given to a worker process
	killErr error // why its worker was killed while running it
}

// result is the outcome of one call.
type result struct {
	raw []byte        // process pools: the encoded value (nil: none)
	val reflect.Value // thread pools: the value (invalid: none)
	err error
}

func (j *job) calls() int {
	if j.vals != nil {
		return len(j.vals)
	}
	return j.ncalls
}

// failure is the error of one call of a batched job, by its index in the
// job.
type failure struct {
	index int
	err   error
}

// complete delivers rs, the first time only.
func (j *job) complete(rs []result) {
	if j.done.Swap(true) {
		return
	}
	j.finish(rs)
}

// completeBatch delivers a batched answer, the first time only: vals, the
// encoded slice of every call's value (nil if fn returns none, zero values
// where calls failed), and the failed calls.
func (j *job) completeBatch(vals []byte, fails []failure) {
	if j.done.Swap(true) {
		return
	}
	j.finishBatch(vals, fails)
}

// fail completes every call of j with err.
func (j *job) fail(err error) {
	rs := make([]result, j.calls())
	for i := range rs {
		rs[i].err = err
	}
	j.complete(rs)
}

// expired returns why j should not start, if it should not.
func (j *job) expired() error {
	if j.skip != nil && j.skip.Load() {
		return errSkipped
	}
	if j.ctx != nil {
		if err := j.ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// goexitMessage is the error of a call that called runtime.Goexit.
const goexitMessage = "mp: the function called runtime.Goexit (as t.FailNow and t.Fatal do) instead of returning"

var errSkipped = fmt.Errorf("%w: not started, as an earlier task failed (FailFast)", context.Canceled)

// TaskError is the failure of a task run by a pool: the error it returned,
// or the panic it raised, in the worker. The message and, for a panic, the
// worker's stack travel; so does whether the error matched, with
// errors.Is, one of the sentinel errors given to RegisterError (and a few
// of the standard library's: context.Canceled, context.DeadlineExceeded,
// io.EOF, io.ErrUnexpectedEOF, fs.ErrNotExist, fs.ErrExist,
// fs.ErrPermission, and this package's ErrUnencodable, ErrBadArguments,
// ErrNotRegistered, ErrTooLarge and ErrStopped), so errors.Is works on it in the
// parent. In a thread pool, a returned error is passed on as it is, not as
// a TaskError.
type TaskError struct {
	Message  string
	Panicked bool
	Stack    string // the worker's stack, for a panic

	matches []error
}

func (e *TaskError) Error() string {
	if e.Panicked {
		return "mp: task panicked: " + e.Message
	}
	return e.Message
}

// Unwrap returns the registered sentinel errors the original error matched.
func (e *TaskError) Unwrap() []error { return e.matches }

// taskErrWire is a TaskError as it travels.
type taskErrWire struct {
	Message  string
	Panicked bool
	Stack    string
	Matches  []int // indexes in sentinels
}

var sentinels struct {
	sync.RWMutex
	list []error
}

func init() {
	RegisterError(context.Canceled, context.DeadlineExceeded, io.EOF, io.ErrUnexpectedEOF,
		os.ErrNotExist, os.ErrExist, os.ErrPermission, ErrUnencodable, ErrBadArguments, ErrNotRegistered, ErrTooLarge, ErrStopped)
}

// RegisterError records sentinel errors that tasks of process pools may
// return (or wrap), so that errors.Is matches them on the TaskError the
// caller receives. Call it from an init function, in the same order in
// every process (which running the same binary ensures).
func RegisterError(errs ...error) {
	sentinels.Lock()
	defer sentinels.Unlock()
	for _, e := range errs {
		if e != nil {
			sentinels.list = append(sentinels.list, e)
		}
	}
}

func wireError(ce *callError) taskErrWire {
	w := taskErrWire{Message: ce.Message, Panicked: ce.Panicked, Stack: ce.Stack}
	if ce.err != nil {
		sentinels.RLock()
		for i, s := range sentinels.list {
			if errors.Is(ce.err, s) {
				w.Matches = append(w.Matches, i)
			}
		}
		sentinels.RUnlock()
	}
	return w
}

func (w *taskErrWire) error() *TaskError {
	e := &TaskError{Message: w.Message, Panicked: w.Panicked, Stack: w.Stack}
	sentinels.RLock()
	for _, i := range w.Matches {
		if i >= 0 && i < len(sentinels.list) {
			e.matches = append(e.matches, sentinels.list[i])
		}
	}
	sentinels.RUnlock()
	return e
}

// localTarget makes a target of any function, for thread pools: nothing
// travels, so function literals and closures are fine.
func localTarget(fn any) (*target, error) {
	v := reflect.ValueOf(fn)
	if fn == nil || v.Kind() != reflect.Func || v.IsNil() {
		return nil, fmt.Errorf("%w: %T is not a function", ErrBadArguments, fn)
	}
	return signature(fmt.Sprintf("%T", fn), v, nil)
}

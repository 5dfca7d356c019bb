package mp

import (
	"context"
	"fmt"
	"reflect"
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
	skip        *atomic.Bool // set when the job is no longer wanted (WithFailFast)
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

var errSkipped = fmt.Errorf("%w: not started, as an earlier task failed (WithFailFast)", context.Canceled)

// TaskError is the failure of a task run by a pool: the error it returned,
// or the panic it raised, in the worker. The message and, for a panic, the
// worker's stack travel; so does what the parent can rebuild of the error,
// which Unwrap returns: the values of error types given to
// RegisterErrorType found in its chain, fields intact, for errors.As; and
// the sentinel errors given to RegisterError that it matched (besides a
// few of the standard library's: context.Canceled,
// context.DeadlineExceeded, io.EOF, io.ErrUnexpectedEOF, fs.ErrNotExist,
// fs.ErrExist, fs.ErrPermission, and this package's ErrUnencodable,
// ErrBadArguments, ErrNotRegistered, ErrTooLarge and ErrStopped), for
// errors.Is. In a thread pool, a returned error is passed on as it is, not
// as a TaskError.
type TaskError struct {
	Message  string
	Panicked bool
	Stack    string // the worker's stack, for a panic

	matches []error
	limit   string // as an isolated worker reported it (see WithIsolatedWorkers)
}

func (e *TaskError) Error() string {
	if e.Panicked {
		return "mp: task panicked: " + e.Message
	}
	return e.Message
}

// Unwrap returns what the parent rebuilt of the original error: the
// values of registered error types in its chain, then the registered
// sentinel errors it matched.
func (e *TaskError) Unwrap() []error { return e.matches }

// localTarget makes a target of any function, for thread pools: nothing
// travels, so function literals and closures are fine.
func localTarget(fn any) (*target, error) {
	v := reflect.ValueOf(fn)
	if fn == nil || v.Kind() != reflect.Func || v.IsNil() {
		return nil, fmt.Errorf("%w: %T is not a function", ErrBadArguments, fn)
	}
	return signature(fmt.Sprintf("%T", fn), v, nil)
}

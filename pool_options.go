package mp

import (
	"fmt"
	"reflect"
)

// CallOption configures one call of a pool: ApplyAsync, Map, MapAsync,
// Starmap, StarmapAsync, Imap or ImapUnordered. Each option says which
// calls take it; a call given one it does not take fails with an error
// wrapping ErrBadArguments, and runs none of its callbacks.
type CallOption func(*callOptions)

type callOptions struct {
	set      optionSet
	chunk    int
	failFast bool
	progress func(done, total int)

	onResult   any // func(R)
	resultType reflect.Type
	onError    func(error)
}

// optionSet records which options a call was given, so that a call can
// refuse those it does not take.
type optionSet uint8

const (
	optChunk optionSet = 1 << iota
	optFailFast
	optProgress
	optCallback
	optErrorCallback
)

var optionNames = [...]string{"WithChunkSize", "WithFailFast", "WithProgress", "WithCallback", "WithErrorCallback"}

// The options each kind of call takes.
const (
	applyOptions    = optCallback | optErrorCallback
	mapOptions      = optChunk | optFailFast | optProgress
	mapAsyncOptions = mapOptions | applyOptions
	imapOptions     = optChunk | optProgress
)

// callOpts applies opts for call, which takes the options in allowed.
func callOpts(call string, allowed optionSet, opts []CallOption) (callOptions, error) {
	var o callOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if bad := o.set &^ allowed; bad != 0 {
		for i, name := range optionNames {
			if bad&(1<<i) != 0 {
				return o, fmt.Errorf("%w: %s does not take %s", ErrBadArguments, call, name)
			}
		}
	}
	return o, nil
}

// WithChunkSize makes each task of Map, MapAsync, Starmap, StarmapAsync,
// Imap and ImapUnordered carry n items. By default the Map and Starmap
// calls use Python's heuristic (items / (4 × workers), rounded up), and
// Imap and ImapUnordered use 1.
func WithChunkSize(n int) CallOption {
	return func(o *callOptions) { o.chunk, o.set = n, o.set|optChunk }
}

// WithFailFast makes the first failed item of Map, MapAsync, Starmap or
// StarmapAsync cancel the tasks that have not started; their items fail
// with an error wrapping context.Canceled.
func WithFailFast() CallOption {
	return func(o *callOptions) { o.failFast, o.set = true, o.set|optFailFast }
}

// WithProgress makes f receive, in the parent, the number of items of a
// Map, MapAsync, Starmap, StarmapAsync, Imap or ImapUnordered done after
// each task finishes, and the total (-1 for Imap and ImapUnordered, whose
// input has no known length). Calls are one at a time; f should be quick.
func WithProgress(f func(done, total int)) CallOption {
	return func(o *callOptions) { o.progress, o.set = f, o.set|optProgress }
}

// WithCallback makes f receive the result of an ApplyAsync, MapAsync or
// StarmapAsync, in the submitting process, once the call has succeeded:
// for MapAsync and StarmapAsync, the whole slice of results, once (R is
// then a slice type: WithCallback(func(rs []int) {...})). It is Python's
// callback= of apply_async and map_async. A call runs exactly one of its
// callbacks: f if it succeeded, the WithErrorCallback function if it
// failed; none if it was given up with Cancel (which the caller knows
// about). The callbacks of a pool run one at a time, in the order the
// results came in, and before Get returns the result. If f panics, the
// call's result becomes an error saying so.
//
// A callback may use the pool: submit tasks (ApplyAsync, Apply, Map...),
// Get or Wait for results (see Get), Close, Join (which then waits for the
// workers only) and Terminate (which then does not wait for the callbacks
// queued behind the calling one). None of them waits for the calling
// callback to return, so none deadlocks on it.
//
// A callback whose type does not fit the call's result (R is not the
// result type, or []R for the Map calls) makes the call fail with an
// error wrapping ErrBadArguments.
func WithCallback[R any](f func(R)) CallOption {
	return func(o *callOptions) {
		o.onResult, o.resultType, o.set = f, reflect.TypeFor[R](), o.set|optCallback
	}
}

// WithErrorCallback makes f receive the error of an ApplyAsync, MapAsync
// or StarmapAsync that failed, as WithCallback does the result of one that
// succeeded (Python's error_callback=): for the Map calls, the *MapError
// of the items that failed, or the error that stopped the call.
func WithErrorCallback(f func(error)) CallOption {
	return func(o *callOptions) { o.onError, o.set = f, o.set|optErrorCallback }
}

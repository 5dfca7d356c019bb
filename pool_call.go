package mp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/multiproc/mp/internal/codec"
)

// How functions are called by pools. A pool runs a function fn with
// arguments: for a process pool, fn must be registered (Register) and
// its arguments and result must be encodable; a thread pool runs any
// function. fn may take a context.Context first, which the pool supplies
// (it carries the task's deadline); it returns one value, optionally
// followed by an error, or only an error, or nothing. The result type R
// is given explicitly, since Go cannot infer it from a function of any
// shape:
//
//	n, err := mp.Apply[int](ctx, pool, square, 7)
//	squares, err := mp.Map[int](ctx, pool, square, []int{1, 2, 3})
//
// Functions of several arguments are called with Apply's arguments, with
// ApplyAsync's args slice, or with Starmap's argument lists.
//
// Apply takes a call's arguments as NewProcess and NewThread do, one by
// one after fn, since it takes no options. ApplyAsync takes them as one
// slice, Python's args tuple of apply_async(func, args), because its
// options (WithCallback, WithErrorCallback) come last, and Go allows
// nothing after variadic arguments:
//
//	r := mp.ApplyAsync[int](pool, add, []any{2, 3}, mp.WithCallback(func(n int) { ... }))

// AsyncResult is the result of work submitted without waiting for it
// (ApplyAsync, MapAsync): Python's AsyncResult. Its methods may be called
// from any goroutine.
//
// AsyncResults are made by ApplyAsync and MapAsync; a zero AsyncResult never
// becomes ready (Get and Wait wait until their context ends).
type AsyncResult[R any] struct {
	done   chan struct{}
	val    R
	err    error
	cancel context.CancelFunc
	// cancelled: Cancel was called; its outcome runs no callback.
	cancelled atomic.Bool
	// For a task with callbacks: its outcome, in before the callbacks
	// have run, for Get and Wait called from a callback.
	early *earlyOutcome[R]
}

type earlyOutcome[R any] struct {
	runner *callbackRunner
	in     chan struct{}
	val    R
	err    error
}

func newAsync[R any]() *AsyncResult[R] { return &AsyncResult[R]{done: make(chan struct{})} }

func (a *AsyncResult[R]) set(v R, err error) {
	a.val, a.err = v, err
	close(a.done)
	if a.cancel != nil {
		a.cancel()
	}
}

// Get waits for the result until ctx ends. It returns the value, or the
// task's error (a *TaskError for an error returned or a panic raised by
// the function, a *WorkerLostError, context.DeadlineExceeded for a task
// past its timeout, ErrPoolTerminated...), or ctx.Err(); a result that is
// in is returned even if ctx has ended too.
//
// Called from a callback (WithCallback, WithErrorCallback), Get of a
// result whose own callbacks have not run yet (the calling one's, or one queued behind it)
// returns the task's outcome once the task is done, without waiting for
// those callbacks, which run after the calling one returns.
func (a *AsyncResult[R]) Get(ctx context.Context) (R, error) {
	done, fromCallback := a.waitFor()
	if err := waitDone(ctx, done); err != nil {
		var zero R
		return zero, err
	}
	if fromCallback {
		select {
		case <-a.done:
		default:
			return a.early.val, a.early.err
		}
	}
	return a.val, a.err
}

// Wait waits for the result to be ready, until ctx ends; it returns nil or
// ctx.Err() (nil if the result is in, even if ctx has ended too). Called
// from a callback, it waits as Get does.
func (a *AsyncResult[R]) Wait(ctx context.Context) error {
	done, _ := a.waitFor()
	return waitDone(ctx, done)
}

// waitFor returns what Get and Wait wait for: the result, or its early
// outcome for a callback (fromCallback).
func (a *AsyncResult[R]) waitFor() (done <-chan struct{}, fromCallback bool) {
	select {
	case <-a.done:
		return a.done, false
	default:
	}
	if a.early != nil && a.early.runner.onRunner() {
		return a.early.in, true
	}
	return a.done, false
}

// Ready reports whether the result is in.
func (a *AsyncResult[R]) Ready() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// Successful reports whether the result is in and is not an error.
func (a *AsyncResult[R]) Successful() bool { return a.Ready() && a.err == nil }

// Cancel gives up on the work: a task not yet started never starts, and
// one running has its worker process killed (and replaced); the result
// becomes context.Canceled unless it was already in. The callbacks of a
// call given up this way do not run.
func (a *AsyncResult[R]) Cancel() {
	if a.cancel != nil {
		a.cancelled.Store(true)
		a.cancel()
	}
}

// Apply runs fn(args...) in a worker of p and waits for its result
// (Python's apply). It takes no options, so its arguments come one by one;
// ApplyAsync, which takes options after them, takes them as a slice. If ctx ends before the task has run, it does not run;
// if it ends while the task runs, the worker is killed and replaced; either
// way Apply returns ctx.Err(). Other errors are those of AsyncResult.Get,
// plus ErrPoolClosed, ErrPoolBroken, ErrNotRegistered, ErrBadArguments for
// arguments or a result type that do not fit fn, ErrUnencodable, and
// ErrTooLarge for arguments or a result larger than a worker's pipe
// carries.
func Apply[R any](ctx context.Context, p *Pool, fn any, args ...any) (R, error) {
	return submitCall[R](p, ctx, nil, fn, args, nil).Get(ctx)
}

// ApplyAsync submits fn(args...) to p and returns at once (Python's
// apply_async). The task is bounded by the pool's task timeout, and by
// Cancel. It takes the options WithCallback and WithErrorCallback; its
// arguments are a slice so that they can come before these (see Apply).
func ApplyAsync[R any](p *Pool, fn any, args []any, opts ...CallOption) *AsyncResult[R] {
	ctx, cancel := context.WithCancel(context.Background())
	o, err := callOpts("ApplyAsync", applyOptions, opts)
	if err != nil {
		a := newAsync[R]()
		a.cancel = cancel
		var zero R
		a.set(zero, err)
		return a
	}
	return submitCall[R](p, ctx, cancel, fn, args, &o)
}

func submitCall[R any](p *Pool, ctx context.Context, cancel context.CancelFunc, fn any, args []any, o *callOptions) *AsyncResult[R] {
	a, deliver := newAsyncCall[R](p, cancel, o)
	if deliver == nil {
		return a
	}
	t, err := p.prepare(fn, reflect.TypeFor[R]())
	if err != nil {
		var zero R
		deliver(zero, err)
		return a
	}
	j := &job{fn: t}
	if ctx.Done() != nil {
		j.ctx = ctx
	}
	if err := p.addCall(j, args); err != nil {
		var zero R
		deliver(zero, err)
		return a
	}
	j.finish = func(rs []result) { deliver(decodeResult[R](rs[0])) }
	if err := p.submit(false, j); err != nil {
		j.fail(err)
	}
	return a
}

// newAsyncCall returns the result of an asynchronous call with options o
// (nil: none), and the function that delivers its outcome, once: through
// the pool's callback runner if the call has callbacks. deliver is nil if
// the callbacks do not fit R: the result is then in, an error.
func newAsyncCall[R any](p *Pool, cancel context.CancelFunc, o *callOptions) (a *AsyncResult[R], deliver func(R, error)) {
	a = newAsync[R]()
	a.cancel = cancel
	var onResult func(R)
	var onError func(error)
	if o != nil {
		onError = o.onError
		if o.onResult != nil {
			var ok bool
			if onResult, ok = o.onResult.(func(R)); !ok {
				var zero R
				a.set(zero, fmt.Errorf("%w: WithCallback takes %v, the call returns %v", ErrBadArguments, o.resultType, reflect.TypeFor[R]()))
				return a, nil
			}
		}
	}
	if onResult == nil && onError == nil {
		return a, a.set
	}
	a.early = &earlyOutcome[R]{runner: &p.callbacks, in: make(chan struct{})}
	return a, func(v R, err error) {
		a.early.val, a.early.err = v, err
		close(a.early.in)
		if err != nil && a.cancelled.Load() && errors.Is(err, context.Canceled) {
			a.set(v, err) // given up: the caller knows, no callback is owed
			return
		}
		p.callbacks.add(func() {
			if err == nil && onResult != nil {
				err = catch("the WithCallback function", func() { onResult(v) })
			} else if err != nil && onError != nil {
				if perr := catch("the WithErrorCallback function", func() { onError(err) }); perr != nil {
					err = fmt.Errorf("%w (the task failed with: %v)", perr, err)
				}
			}
			a.set(v, err)
		})
	}
}

// catch calls f, turning a panic into an error.
func catch(what string, f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mp: %s panicked: %v", what, r)
		}
	}()
	f()
	return nil
}

// prepare finds the target of fn and checks that its result fits R.
func (p *Pool) prepare(fn any, rt reflect.Type) (*target, error) {
	var t *target
	var err error
	if p.threads {
		t, err = localTarget(fn)
	} else {
		t, err = lookup(fn)
	}
	if err != nil {
		return nil, err
	}
	if t.typ != nil {
		return nil, fmt.Errorf("%w: a pool runs functions, not %s", ErrBadArguments, t.typ)
	}
	ft := t.fn.Type()
	var outs []reflect.Type
	for i := range ft.NumOut() {
		if i != t.errOut {
			outs = append(outs, ft.Out(i))
		}
	}
	switch {
	case len(outs) > 1:
		return nil, fmt.Errorf("%w: %s returns %d values; a pool's functions return one (and optionally an error)", ErrBadArguments, t.short(), len(outs))
	case len(outs) == 1 && !outs[0].AssignableTo(rt):
		return nil, fmt.Errorf("%w: %s returns %v, not %v", ErrBadArguments, t.short(), outs[0], rt)
	}
	return t, nil
}

// addCall adds one call with args to j, checked and encoded.
func (p *Pool) addCall(j *job, args []any) error {
	vals, err := j.fn.bind(args)
	if err != nil {
		return err
	}
	if p.threads {
		j.vals = append(j.vals, vals)
		return nil
	}
	if p.cfg.isolated {
		if k := sharedIn(args...); k != "" {
			return describeIsolated(j.fn.short(), k)
		}
	}
	// Each call is its argument count, then its encoded arguments with a
	// length prefix, straight into the job's part of the task frame.
	mark := len(j.body)
	j.body = binary.LittleEndian.AppendUint16(j.body, uint16(len(args)))
	j.body = append(j.body, 0, 0, 0, 0)
	b, err := codec.AppendArgs(j.body, vals)
	if err != nil {
		j.body = j.body[:mark]
		return fmt.Errorf("mp: arguments of %s: %w", j.fn.short(), err)
	}
	binary.LittleEndian.PutUint32(b[mark+2:], uint32(len(b)-mark-6))
	if n := taskFrameSize(j.fn, len(b)); n > maxFrame {
		j.body = b[:mark]
		return tooLarge(j.fn, n, j.ncalls > 0)
	}
	j.body = b
	j.ncalls++
	return nil
}

// tooLarge is the error of a task whose frame would be n bytes; chunk:
// the task holds other calls too.
func tooLarge(t *target, n int, chunk bool) error {
	what := "the arguments of " + t.short()
	if chunk {
		what = "a chunk of " + t.short() + "'s calls"
	}
	return fmt.Errorf("%w: %s encode to %d bytes, more than the %d a pool worker's pipe carries", ErrTooLarge, what, n, maxFrame)
}

func decodeResult[R any](r result) (R, error) {
	var v R
	switch {
	case r.err != nil:
		return v, r.err
	case r.val.IsValid():
		reflect.ValueOf(&v).Elem().Set(r.val)
	case r.raw != nil:
		if err := codec.Unmarshal(r.raw, &v); err != nil {
			return v, fmt.Errorf("mp: result: %w", err)
		}
	}
	return v, nil
}

// MapError reports the items of a Map or Starmap that failed, by index,
// with their errors. errors.Is and errors.As look at each of them. Items
// that never ran because the process was stopping (NotifyContext, or
// SIGTERM in a child) fail with ErrStopped; NotRun lists them.
type MapError struct {
	Indexes []int   // in increasing order
	Errs    []error // Errs[i] is the error of item Indexes[i]
}

// NotRun returns the indexes of the items that never ran because the
// process was stopping, in increasing order.
func (e *MapError) NotRun() []int {
	var idx []int
	for k, err := range e.Errs {
		if errors.Is(err, ErrStopped) {
			idx = append(idx, e.Indexes[k])
		}
	}
	return idx
}

func (e *MapError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mp: %d item(s) failed", len(e.Indexes))
	if n := len(e.NotRun()); n > 0 {
		fmt.Fprintf(&b, " (%d never ran: the process tree is stopping)", n)
	}
	for i := range min(len(e.Indexes), 3) {
		fmt.Fprintf(&b, "; item %d: %v", e.Indexes[i], e.Errs[i])
	}
	if len(e.Indexes) > 3 {
		b.WriteString("; ...")
	}
	return b.String()
}

// Unwrap returns the errors of the failed items.
func (e *MapError) Unwrap() []error { return e.Errs }

// Map calls fn(item) in p's workers for every item, and returns the
// results in the order of items (Python's map). If items fail, it returns
// the results of the others, with the zero value for the failed ones, and
// a *MapError. If ctx ends first it returns ctx.Err(); tasks not started
// never start and running ones have their workers killed. When the process
// is stopping instead (NotifyContext caught a signal, or the process is a
// child sent SIGTERM), Map waits for the running tasks, which see their
// contexts cancelled and have the grace period: it returns the results
// computed, and a *MapError in which the items that never ran fail with
// ErrStopped (MapError.NotRun). A Map begun once the process is stopping
// fails with ErrStopped.
//
// A Map that has begun is not cut short by Close from another goroutine:
// all its items run.
func Map[R, A any](ctx context.Context, p *Pool, fn any, items []A, opts ...CallOption) ([]R, error) {
	o, err := callOpts("Map", mapOptions, opts)
	if err != nil {
		return nil, err
	}
	return starmap[R](ctx, p, fn, itemsInput(items), false, &o)
}

func itemsInput[A any](items []A) mapInput {
	return mapInput{
		n:    len(items),
		args: func(i int) []any { return []any{items[i]} },
		elem: reflect.TypeFor[A](),
		encode: func(b []byte, lo, hi int) ([]byte, error) {
			return codec.AppendMarshal(b, items[lo:hi:hi])
		},
	}
}

// Starmap is Map for functions of several arguments: it calls
// fn(args[i]...) for every i (Python's starmap).
func Starmap[R any](ctx context.Context, p *Pool, fn any, args [][]any, opts ...CallOption) ([]R, error) {
	o, err := callOpts("Starmap", mapOptions, opts)
	if err != nil {
		return nil, err
	}
	return starmap[R](ctx, p, fn, argsInput(args), false, &o)
}

func argsInput(args [][]any) mapInput {
	return mapInput{n: len(args), args: func(i int) []any { return args[i] }}
}

// MapAsync is Map without waiting (Python's map_async): the result is the
// slice of results (with the *MapError, if any). The work counts as
// submitted when MapAsync returns: a Close after it lets every item run.
// Besides Map's options it takes WithCallback, whose function receives the
// whole slice of results once all items have succeeded, and
// WithErrorCallback, whose function receives the error otherwise.
func MapAsync[R, A any](p *Pool, fn any, items []A, opts ...CallOption) *AsyncResult[[]R] {
	return mapAsync[R](p, fn, "MapAsync", itemsInput(items), opts)
}

// StarmapAsync is Starmap without waiting (Python's starmap_async), as
// MapAsync is Map: it calls fn(args[i]...) for every i, and takes the same
// options as MapAsync.
func StarmapAsync[R any](p *Pool, fn any, args [][]any, opts ...CallOption) *AsyncResult[[]R] {
	return mapAsync[R](p, fn, "StarmapAsync", argsInput(args), opts)
}

func mapAsync[R any](p *Pool, fn any, call string, in mapInput, opts []CallOption) *AsyncResult[[]R] {
	ctx, cancel := context.WithCancel(context.Background())
	o, err := callOpts(call, mapAsyncOptions, opts)
	if err != nil {
		a := newAsync[[]R]()
		a.cancel = cancel
		a.set(nil, err)
		return a
	}
	a, deliver := newAsyncCall[[]R](p, cancel, &o)
	if deliver == nil {
		return a
	}
	if err := p.admit(); err != nil {
		deliver(nil, err)
		return a
	}
	go func() { deliver(starmap[R](ctx, p, fn, in, true, &o)) }()
	return a
}

// mapInput is what starmap maps over: n calls, whose arguments args
// gives one call at a time, or, for calls of one argument of type elem,
// encode gives as one encoded slice of those of calls lo to hi (nil
// encode: never batched).
type mapInput struct {
	n      int
	args   func(i int) []any
	elem   reflect.Type
	encode func(b []byte, lo, hi int) ([]byte, error)
}

// starmap maps fn over in. admitted: the caller holds an admission of p
// (see Pool.admit), which starmap releases once it has submitted
// everything; otherwise starmap takes one of its own.
func starmap[R any](ctx context.Context, p *Pool, fn any, in mapInput, admitted bool, o *callOptions) ([]R, error) {
	if !admitted {
		if err := p.admit(); err != nil {
			return nil, err
		}
	}
	released := false
	release := func() {
		if !released {
			released = true
			p.release()
		}
	}
	defer release()
	t, err := p.prepare(fn, reflect.TypeFor[R]())
	if err != nil {
		return nil, err
	}
	n := in.n
	chunk := o.chunk
	if chunk <= 0 {
		q, r := n/(4*p.cfg.n), n%(4*p.cfg.n)
		chunk = max(q+min(r, 1), 1)
	}
	batched := !p.threads && chunk > 1 && in.encode != nil && t.batchable(in.elem)
	out := make([]R, n)
	var (
		mu      sync.Mutex
		failed  = map[int]error{}
		left    = n
		allDone = make(chan struct{})
		skip    = new(atomic.Bool)
	)
	// settle records that count items are done, of which fails failed
	// (indexes in items).
	settle := func(count int, fails []failure) {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range fails {
			failed[f.index] = f.err
		}
		if len(fails) > 0 && o.failFast {
			skip.Store(true)
		}
		left -= count
		if o.progress != nil {
			o.progress(n-left, n)
		}
		if left == 0 {
			close(allDone)
		}
	}
	// record takes results one by one: rs[k] is that of item idx[k], or
	// of item lo+k if idx is nil. Each item has a place of its own in out:
	// writing it needs no lock.
	record := func(idx []int, lo int, rs []result) {
		var fails []failure
		for k, r := range rs {
			i := lo + k
			if idx != nil {
				i = idx[k]
			}
			var err error
			if out[i], err = decodeResult[R](r); err != nil {
				fails = append(fails, failure{i, err})
			}
		}
		settle(len(rs), fails)
	}
	// recordBatch takes a batched answer for items lo to hi.
	recordBatch := func(lo, hi int, vals []byte, fails []failure) {
		var all []failure
		for k, err := range decodeBatch(out[lo:hi], vals) {
			if err != nil {
				all = append(all, failure{lo + k, err})
			}
		}
		for _, f := range fails {
			var zero R
			out[lo+f.index] = zero
			all = append(all, failure{lo + f.index, f.err})
		}
		settle(hi-lo, all)
	}
	if n == 0 {
		return out, nil
	}
	// Jobs go to the pool as soon as they are encoded, so that workers
	// start on the first while the rest are being encoded; in batches of
	// doubling size, so that a Map of many small chunks takes the pool's
	// lock a logarithmic number of times only.
	var pending []*job
	sent := 0
	encoded, encodedItems := 0, 0 // bytes and items of the batched chunks so far
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		err := p.submit(true, pending...)
		sent += len(pending)
		if errors.Is(err, ErrStopped) {
			// The process is stopping: these never run, and the loop
			// submits no more.
			for _, j := range pending {
				j.fail(err)
			}
			err = nil
		}
		pending = pending[:0]
		if err != nil {
			// Map gives up: what it submitted already need not start.
			skip.Store(true)
		}
		return err
	}
	for start := 0; start < n; start += chunk {
		if stopping() {
			// The items not submitted never run either; those submitted
			// are delivered as they end.
			fails := make([]failure, 0, n-start)
			for i := start; i < n; i++ {
				fails = append(fails, failure{i, ErrStopped})
			}
			settle(n-start, fails)
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := min(start+chunk, n)
		j := &job{fn: t, skip: skip}
		if ctx.Done() != nil {
			j.ctx = ctx
		}
		if batched && !(p.cfg.isolated && in.holdsPrimitive(start, end)) {
			// Sized after the chunks before, the buffer need not grow
			// (and copy) its way up to a chunk's size.
			b, err := in.encode(make([]byte, 0, encoded/max(encodedItems, 1)*(end-start)*9/8+64), start, end)
			if err == nil && taskFrameSize(t, len(b)) > maxFrame {
				// Too large to travel as one: the items fail, not the
				// worker (a smaller WithChunkSize would do).
				err = tooLarge(t, taskFrameSize(t, len(b)), true)
				var fails []failure
				for i := start; i < end; i++ {
					fails = append(fails, failure{i, err})
				}
				settle(end-start, fails)
				continue
			}
			if err == nil {
				j.body, j.ncalls, j.batch = b, end-start, true
				encoded, encodedItems = encoded+len(b), encodedItems+end-start
			}
		}
		if j.batch {
			j.finish = func(rs []result) { record(nil, start, rs) }
			j.finishBatch = func(vals []byte, fails []failure) { recordBatch(start, end, vals, fails) }
		} else {
			// One by one; an item that cannot be encoded fails alone.
			var idx []int
			for i := start; i < end; i++ {
				if err := p.addCall(j, in.args(i)); err != nil {
					record(nil, i, []result{{err: err}})
					continue
				}
				idx = append(idx, i)
			}
			if len(idx) == 0 {
				continue
			}
			j.finish = func(rs []result) { record(idx, 0, rs) }
		}
		pending = append(pending, j)
		if len(pending) >= max(sent, 1) {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	release()
	select {
	case <-allDone:
	case <-ctx.Done():
		if !stopping() {
			return nil, ctx.Err()
		}
		// The stop gives the running tasks the grace period, then kills
		// their workers: the results computed until then are delivered.
		<-allDone
	}
	if len(failed) == 0 {
		return out, nil
	}
	e := &MapError{}
	for i := range failed {
		e.Indexes = append(e.Indexes, i)
	}
	sort.Ints(e.Indexes)
	for _, i := range e.Indexes {
		e.Errs = append(e.Errs, failed[i])
	}
	return out, e
}

// Imap calls fn(item) in p's workers for each item of items, lazily, and
// yields the results in the order of items with each item's error (Python's
// imap). At most a few tasks per worker are in flight, so items may be
// endless (at most 4 × workers tasks of the input are read ahead).
// Breaking out of the loop cancels the tasks not yet started. If ctx ends,
// the iteration yields ctx.Err() and stops. An item that cannot be sent
// (unencodable, too large) yields its error in its place. If the input
// panics, the results of the items before are yielded first, then an
// error saying so, and the iteration stops.
func Imap[R, A any](ctx context.Context, p *Pool, fn any, items iter.Seq[A], opts ...CallOption) iter.Seq2[R, error] {
	return imap[R](ctx, p, fn, items, true, "Imap", opts)
}

// ImapUnordered is Imap yielding results as they come in, rather than in
// the order of items (Python's imap_unordered).
func ImapUnordered[R, A any](ctx context.Context, p *Pool, fn any, items iter.Seq[A], opts ...CallOption) iter.Seq2[R, error] {
	return imap[R](ctx, p, fn, items, false, "ImapUnordered", opts)
}

func imap[R, A any](ctx context.Context, p *Pool, fn any, items iter.Seq[A], ordered bool, call string, opts []CallOption) iter.Seq2[R, error] {
	return func(yield func(R, error) bool) {
		var zero R
		o, err := callOpts(call, imapOptions, opts)
		if err != nil {
			yield(zero, err)
			return
		}
		t, err := p.prepare(fn, reflect.TypeFor[R]())
		if err != nil {
			yield(zero, err)
			return
		}
		// Admitted for the whole iteration: Close meanwhile does not cut
		// it short.
		if err := p.admit(); err != nil {
			yield(zero, err)
			return
		}
		defer p.release()
		chunk := max(o.chunk, 1)
		window := 4 * p.cfg.n
		next, stop := iter.Pull(items)
		defer stop()
		skip := new(atomic.Bool)
		defer skip.Store(true)

		// pull is next, with a panic of the input turned into inputErr,
		// which comes after the results of the items before it.
		var inputErr error
		inputDone := false
		pull := func() (item A, ok bool) {
			defer func() {
				if r := recover(); r != nil {
					inputDone, ok = true, false
					if e, isErr := r.(error); isErr {
						inputErr = fmt.Errorf("mp: the input of Imap panicked: %w", e)
					} else {
						inputErr = fmt.Errorf("mp: the input of Imap panicked: %v", r)
					}
				}
			}()
			item, ok = next()
			inputDone = !ok
			return item, ok
		}

		type batch struct {
			rs   chan []result
			tail error // an item after the job's that could not be submitted
		}
		var inflight []*batch // in submission order
		arrived := make(chan *batch, window)
		var done int
		fill := func() {
			for len(inflight) < window && !inputDone {
				j := &job{fn: t, skip: skip}
				if ctx.Done() != nil {
					j.ctx = ctx
				}
				b := &batch{rs: make(chan []result, 1)}
				for range chunk {
					item, ok := pull()
					if !ok {
						break
					}
					if err := p.addCall(j, []any{item}); err != nil {
						b.tail = err // it fails in its place; the items after it go on
						break
					}
				}
				if j.calls() == 0 && b.tail == nil {
					return
				}
				inflight = append(inflight, b)
				if j.calls() == 0 {
					b.rs <- nil
					if !ordered {
						arrived <- b
					}
					continue
				}
				j.finish = func(rs []result) {
					b.rs <- rs
					if !ordered {
						arrived <- b
					}
				}
				if err := p.submit(true, j); err != nil {
					j.fail(err)
					inputDone = true // the pool takes no more: stop reading
				}
			}
		}
		for {
			fill()
			if len(inflight) == 0 {
				if inputErr != nil {
					yield(zero, inputErr)
				}
				return
			}
			var b *batch
			if ordered {
				b = inflight[0]
			} else {
				select {
				case b = <-arrived:
				case <-ctx.Done():
					yield(zero, ctx.Err())
					return
				}
			}
			var rs []result
			select {
			case rs = <-b.rs:
			case <-ctx.Done():
				yield(zero, ctx.Err())
				return
			}
			inflight = slices.DeleteFunc(inflight, func(x *batch) bool { return x == b })
			done += len(rs)
			if b.tail != nil {
				done++
			}
			if o.progress != nil {
				o.progress(done, -1)
			}
			for _, r := range rs {
				if !yield(decodeResult[R](r)) {
					return
				}
			}
			if b.tail != nil && !yield(zero, b.tail) {
				return
			}
		}
	}
}

package mp

import (
	"context"
	"encoding/binary"
	"fmt"
	"reflect"
	"runtime/debug"

	"github.com/multiproc/mp/internal/codec"
)

// Batched chunks. A chunk of Map over a []A, for a function of one
// parameter that A is assignable to, travels as one encoded []A rather
// than as a list of argument lists: one encoding in the parent, one
// decoding in the worker, instead of one of each per item, with their
// allocations. The worker calls the function for each element, with one
// argument slice reused across the chunk, and sends the values back as
// one encoded slice, zero where a call failed, with the failures listed by
// index. Where the whole cannot be encoded or decoded (an element whose
// MarshalCBOR or UnmarshalCBOR method fails, say) each side falls back to
// item by item for that chunk, so that exactly the items at fault fail.
// Tasks of one item keep the item-by-item layout, whose path is shorter.
//
// The worker knows the function's type only at run time, so each call goes
// through reflect.Value.Call, unless Register found a loop compiled for it
// (pool_typed.go). For a trivial function, reflection is about two thirds
// of the worker's time (some 90 ns and two allocations a call on a 2-core
// AMD EPYC: the ABI layout lookup, moving arguments and results between
// registers and Values, and the boxed result); decoding the arguments,
// page faults on fresh memory, storing and encoding the values make up
// most of the rest.

// batchable reports whether calls of t with one argument of type a can
// travel batched.
func (t *target) batchable(a reflect.Type) bool {
	return t.typ == nil && !t.variadic && len(t.params) == 1 && a.AssignableTo(t.params[0])
}

// valueOut returns the index of t's result that is its value, or -1.
func (t *target) valueOut() int {
	for i := range t.fn.Type().NumOut() {
		if i != t.errOut {
			return i
		}
	}
	return -1
}

// batchRun is the worker's side of one batched task.
type batchRun struct {
	ctx     context.Context
	t       *target
	id      uint64
	n       int
	args    reflect.Value // []P: the decoded arguments
	argErrs []error       // per call, when the arguments decoded one by one; else nil
	in      []reflect.Value
	argAt   int           // index of the argument in in
	valOut  int           // index of the value among fn's results, or -1
	vals    reflect.Value // []V: the calls' values, if fn returns one
	fails   []callFailure // in increasing index order
	at      int           // the call being run (or to run next)
}

type callFailure struct {
	i  int
	ce *callError
}

// newBatchRun prepares the n calls of batched task id, whose arguments
// data holds.
func newBatchRun(ctx context.Context, t *target, id uint64, data []byte, n int) (*batchRun, error) {
	if len(t.params) != 1 || !t.batchable(t.params[0]) {
		return nil, fmt.Errorf("%w: batched task for %s, which cannot take one", ErrCorrupt, t.short())
	}
	r := &batchRun{ctx: ctx, t: t, id: id, n: n, valOut: t.valueOut()}
	argsType := reflect.SliceOf(t.params[0])
	r.args = reflect.New(argsType).Elem()
	if err := codec.Unmarshal(data, r.args.Addr().Interface()); err != nil || r.args.Len() != n {
		// Find which arguments are at fault, so that only their calls fail.
		r.args = reflect.MakeSlice(argsType, n, n)
		errs, err := codec.UnmarshalEach(data, r.args)
		if err != nil {
			errs = make([]error, n)
			for i := range errs {
				errs[i] = err
			}
		}
		for i, err := range errs {
			if err != nil {
				// As UnmarshalArgs words it for a call sent on its own.
				errs[i] = fmt.Errorf("argument 1 (%v): %w", t.params[0], err)
			}
		}
		r.argErrs = errs
	}
	r.in = make([]reflect.Value, 1, 2)
	if t.withCtx {
		r.in = append(r.in[:0], reflect.ValueOf(&r.ctx).Elem(), reflect.Value{})
		r.argAt = 1
	}
	if r.valOut >= 0 {
		r.vals = reflect.MakeSlice(reflect.SliceOf(t.fn.Type().Out(r.valOut)), n, n)
	}
	return r, nil
}

// runFrom makes the calls from i on, until one panics; it returns the
// index to go on from. One deferred recover per panic, rather than one
// per call, keeps the common case cheap.
func (r *batchRun) runFrom(from int) (next int) {
	r.at = from // the call being made, for a panic or a Goexit in it
	defer func() {
		if x := recover(); x != nil {
			r.fail(r.at, &callError{Message: fmt.Sprint(x), Panicked: true, Stack: string(debug.Stack())})
			next = r.at + 1
		}
	}()
	if c := r.t.batch; c != nil && r.valOut >= 0 {
		c(r)
		return r.n
	}
	done := r.ctx.Done()
	fn, errOut := r.t.fn, r.t.errOut
	for ; r.at < r.n; r.at++ {
		i := r.at
		if r.skip(i, done) {
			continue
		}
		r.in[r.argAt] = r.args.Index(i)
		out := fn.Call(r.in)
		if errOut >= 0 && !out[errOut].IsNil() {
			err := out[errOut].Interface().(error)
			r.fail(i, &callError{Message: err.Error(), err: err})
			continue
		}
		if r.valOut >= 0 {
			r.vals.Index(i).Set(out[r.valOut])
		}
	}
	return r.n
}

// skip fails call i, and reports so, if its argument could not be decoded
// or the task's context has ended (done is its Done channel).
func (r *batchRun) skip(i int, done <-chan struct{}) bool {
	if r.argErrs != nil && r.argErrs[i] != nil {
		err := r.argErrs[i]
		r.fail(i, &callError{Message: err.Error(), err: err})
		return true
	}
	if done != nil {
		select {
		case <-done:
			r.fail(i, notStarted(r.ctx.Err()))
			return true
		default:
		}
	}
	return false
}

func (r *batchRun) fail(i int, ce *callError) {
	r.fails = append(r.fails, callFailure{i, ce})
	if r.valOut >= 0 {
		// What the call returned with its error is not its result.
		r.vals.Index(i).SetZero()
	}
}

// appendResults appends the frameBatchResult, or, if the values cannot
// be encoded as one slice, the frameResult, so that only the values at
// fault fail.
func (r *batchRun) appendResults(b []byte) []byte {
	mark := len(b)
	b = appendResultHeader(b, frameBatchResult, r.id, r.n)
	lenAt := len(b)
	b = append(b, 0, 0, 0, 0)
	if r.valOut >= 0 {
		nb, err := codec.AppendMarshal(b, r.vals.Interface())
		if err != nil {
			return appendResult(b[:mark], r.id, r.outs())
		}
		b = nb
		binary.LittleEndian.PutUint32(b[lenAt:], uint32(len(b)-lenAt-4))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(r.fails)))
	for _, f := range r.fails {
		b = binary.LittleEndian.AppendUint32(b, uint32(f.i))
		b = appendChunk(b, encodeCallError(f.ce))
	}
	if len(b)-mark > maxFrame {
		// Too large as one: one by one, so that the values that fit go.
		outs := r.outs()
		fitOuts(r.t, outs)
		return appendResult(b[:mark], r.id, outs)
	}
	return b
}

// outs returns the results one by one.
func (r *batchRun) outs() []workerOut {
	outs := make([]workerOut, r.n)
	for _, f := range r.fails {
		outs[f.i] = workerOut{status: 1, data: encodeCallError(f.ce)}
	}
	for i := range outs {
		if outs[i].status != 0 {
			continue
		}
		v, err := codec.Marshal(r.vals.Index(i).Interface())
		if err != nil {
			err = fmt.Errorf("mp: the result of %s cannot be sent back: %w", r.t.short(), err)
			outs[i] = workerOut{status: 1, data: encodeCallError(&callError{Message: err.Error(), err: err})}
			continue
		}
		outs[i].data = v
	}
	return outs
}

// decodeBatch decodes vals, a batched answer's values, into dst, where
// they belong in the caller's results, and returns the errors of the items
// whose values could not be decoded (nil where fine; nil if all are).
func decodeBatch[R any](dst []R, vals []byte) []error {
	if vals == nil {
		return nil // fn returns no value: dst stays zero
	}
	// The decoder fills a slice whose capacity suffices in place, so this
	// writes straight into the caller's results.
	got := dst[:len(dst):len(dst)]
	err := codec.Unmarshal(vals, &got)
	if err == nil && len(got) == len(dst) {
		if len(got) > 0 && &got[0] != &dst[0] {
			copy(dst, got) // a raw []byte fast path gave a copy
		}
		return nil
	}
	clear(dst)
	errs, err := codec.UnmarshalEach(vals, reflect.ValueOf(dst))
	if err != nil {
		errs = make([]error, len(dst))
		for i := range errs {
			errs[i] = err
		}
	}
	for i, e := range errs {
		if e != nil {
			errs[i] = fmt.Errorf("mp: result: %w", e)
		}
	}
	return errs
}

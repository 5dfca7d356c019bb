package mp

import "context"

// Typed calls. A batched chunk's calls go through reflect.Value.Call,
// which for a trivial function is most of a worker's time per item (the
// ABI layout lookup, moving arguments and results between registers and
// Values, a boxed result). For functions whose type Register recognises, a
// batch is run by a loop compiled for that type instead, which calls the
// function directly: functions of one argument, with or without a leading
// context.Context, returning a value, with or without an error, where the
// argument and the value are each an int, int64, float64, string, []byte
// or bool. Other functions take the reflective path, with the same
// results.

// batchCaller makes a batch's calls from r.at on, as runFrom does; it
// returns when all are made (a panic ends it early, for runFrom to
// recover).
type batchCaller func(r *batchRun)

// typedBatch returns the batchCaller for fn, or nil if fn's type is not
// one of those with a compiled loop.
func typedBatch(fn any) batchCaller {
	for _, f := range typedBatchers {
		if c := f(fn); c != nil {
			return c
		}
	}
	return nil
}

var typedBatchers = []func(any) batchCaller{
	batchFor[int, int], batchFor[int, int64], batchFor[int, float64], batchFor[int, string], batchFor[int, []byte], batchFor[int, bool],
	batchFor[int64, int], batchFor[int64, int64], batchFor[int64, float64], batchFor[int64, string], batchFor[int64, []byte], batchFor[int64, bool],
	batchFor[float64, int], batchFor[float64, int64], batchFor[float64, float64], batchFor[float64, string], batchFor[float64, []byte], batchFor[float64, bool],
	batchFor[string, int], batchFor[string, int64], batchFor[string, float64], batchFor[string, string], batchFor[string, []byte], batchFor[string, bool],
	batchFor[[]byte, int], batchFor[[]byte, int64], batchFor[[]byte, float64], batchFor[[]byte, string], batchFor[[]byte, []byte], batchFor[[]byte, bool],
	batchFor[bool, int], batchFor[bool, int64], batchFor[bool, float64], batchFor[bool, string], batchFor[bool, []byte], batchFor[bool, bool],
}

func batchFor[A, R any](fn any) batchCaller {
	switch f := fn.(type) {
	case func(A) R:
		return typedLoop[A, R](func(_ context.Context, a A) (R, error) { return f(a), nil })
	case func(A) (R, error):
		return typedLoop[A, R](func(_ context.Context, a A) (R, error) { return f(a) })
	case func(context.Context, A) R:
		return typedLoop[A, R](func(ctx context.Context, a A) (R, error) { return f(ctx, a), nil })
	case func(context.Context, A) (R, error):
		return typedLoop[A, R](f)
	}
	return nil
}

// typedLoop is the loop of runFrom for a function of type func(A) R,
// called through call: two plain indirect calls per item (the adapter
// above, then the function) in place of one reflect.Value.Call.
func typedLoop[A, R any](call func(context.Context, A) (R, error)) batchCaller {
	return func(r *batchRun) {
		args := r.args.Interface().([]A)
		vals := r.vals.Interface().([]R)
		done := r.ctx.Done()
		for ; r.at < r.n; r.at++ {
			i := r.at
			if r.skip(i, done) {
				continue
			}
			v, err := call(r.ctx, args[i])
			if err != nil {
				r.fail(i, &callError{Message: err.Error(), err: err})
				continue
			}
			vals[i] = v
		}
	}
}

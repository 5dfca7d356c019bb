package mp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sync"

	"github.com/multiproc/mp/internal/codec"
)

// Errors that cross a process boundary. An error returned in a child (by a
// pool's task, or by a Process's function) reaches the parent as its
// message, plus what the parent can rebuild of it: the registered sentinel
// errors it matched (RegisterError), and the values of registered error
// types found in its chain (RegisterErrorType), fields intact. Sentinels
// travel as indexes in a list that every process builds in the same order;
// typed values by type name and encoded value.

var sentinels struct {
	sync.RWMutex
	list []error
}

var errorTypes struct {
	sync.RWMutex
	byName map[string]reflect.Type
}

func init() {
	RegisterError(context.Canceled, context.DeadlineExceeded, io.EOF, io.ErrUnexpectedEOF,
		os.ErrNotExist, os.ErrExist, os.ErrPermission, ErrUnencodable, ErrBadArguments, ErrNotRegistered, ErrTooLarge, ErrStopped)
}

// RegisterError records sentinel errors that functions run in other
// processes (pool tasks, Processes) may return or wrap, so that errors.Is
// matches them on the error the parent receives (a *TaskError or a
// *ProcessError). Call it from an init function, in the same order in
// every process (which running the same binary ensures). For error types
// with fields, matched with errors.As, see RegisterErrorType.
func RegisterError(errs ...error) {
	sentinels.Lock()
	defer sentinels.Unlock()
	for _, e := range errs {
		if e != nil {
			sentinels.list = append(sentinels.list, e)
		}
	}
}

// RegisterErrorType records an error type E whose values functions run in
// other processes (pool tasks, Processes) may return or wrap (with %w or
// an Unwrap method), so that errors.As finds them, with their exported
// fields, on the error the parent receives (a *TaskError or a
// *ProcessError):
//
//	type QuotaError struct{ User string; Left int }
//	func (e *QuotaError) Error() string { ... }
//
//	func init() { mp.RegisterErrorType[*QuotaError]() }
//
//	var qe *QuotaError
//	if errors.As(err, &qe) { ... qe.User, qe.Left ... }
//
// E is the type the functions return: *T for an Error method with a
// pointer receiver; for a value receiver, registering T registers *T too.
// Its exported fields travel as arguments do (they must be encodable; a
// value that cannot be encoded or decoded travels as its message only);
// unexported ones arrive as zero. Values of unregistered types travel as
// their message only. Call it from an init function, so that every
// process registers the same types. It panics if E is an interface type or
// an unnamed one, as Register does on what cannot work.
func RegisterErrorType[E error]() {
	t := reflect.TypeFor[E]()
	name, ok := errorTypeName(t)
	if !ok {
		panic(fmt.Sprintf("mp: RegisterErrorType: %v is not a named error type (nor a pointer to one)", t))
	}
	errorTypes.Lock()
	defer errorTypes.Unlock()
	if errorTypes.byName == nil {
		errorTypes.byName = make(map[string]reflect.Type)
	}
	errorTypes.byName[name] = t
	if t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(errorType) {
		pname, _ := errorTypeName(reflect.PointerTo(t))
		errorTypes.byName[pname] = reflect.PointerTo(t)
	}
}

// errorTypeName is the name a registered error type travels under.
func errorTypeName(t reflect.Type) (string, bool) {
	prefix := ""
	if t.Kind() == reflect.Pointer {
		prefix, t = "*", t.Elem()
	}
	if t.Kind() == reflect.Interface || t.Name() == "" {
		return "", false
	}
	return prefix + t.PkgPath() + "." + t.Name(), true
}

// errorWire is what travels of an error, besides its message.
type errorWire struct {
	Matches []int       `cbor:",omitempty"` // indexes in sentinels
	Typed   []typedWire `cbor:",omitempty"` // in the order of the chain
}

type typedWire struct {
	Type  string
	Value []byte
}

// maxTypedErrors bounds how many typed values of one error's chain travel.
const maxTypedErrors = 32

// encodeError returns what travels of err.
func encodeError(err error) errorWire {
	var w errorWire
	if err == nil {
		return w
	}
	sentinels.RLock()
	for i, s := range sentinels.list {
		if errors.Is(err, s) {
			w.Matches = append(w.Matches, i)
		}
	}
	sentinels.RUnlock()
	errorTypes.RLock()
	registered := len(errorTypes.byName) > 0
	errorTypes.RUnlock()
	if registered {
		eachInChain(err, 0, func(e error) bool {
			name, ok := errorTypeName(reflect.TypeOf(e))
			if !ok {
				return true
			}
			errorTypes.RLock()
			_, ok = errorTypes.byName[name]
			errorTypes.RUnlock()
			if !ok {
				return true
			}
			if v := reflect.ValueOf(e); v.Kind() == reflect.Pointer && v.IsNil() {
				return true
			}
			if b, err := codec.Marshal(e); err == nil {
				w.Typed = append(w.Typed, typedWire{Type: name, Value: b})
			}
			return len(w.Typed) < maxTypedErrors
		})
	}
	return w
}

// eachInChain calls f on err and every error it wraps, depth first, as
// errors.As looks at them, until f returns false.
func eachInChain(err error, depth int, f func(error) bool) bool {
	if err == nil || depth > 100 {
		return true
	}
	if !f(err) {
		return false
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return eachInChain(u.Unwrap(), depth+1, f)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if !eachInChain(e, depth+1, f) {
				return false
			}
		}
	}
	return true
}

// decode rebuilds what it can of the error: the typed values, then the
// sentinels it matched.
func (w *errorWire) decode() []error {
	var errs []error
	for _, tw := range w.Typed {
		errorTypes.RLock()
		t, ok := errorTypes.byName[tw.Type]
		errorTypes.RUnlock()
		if !ok {
			continue
		}
		base := t
		if t.Kind() == reflect.Pointer {
			base = t.Elem()
		}
		v := reflect.New(base)
		if codec.Unmarshal(tw.Value, v.Interface()) != nil {
			continue
		}
		if t.Kind() != reflect.Pointer {
			v = v.Elem()
		}
		if e, ok := v.Interface().(error); ok {
			errs = append(errs, e)
		}
	}
	sentinels.RLock()
	for _, i := range w.Matches {
		if i >= 0 && i < len(sentinels.list) {
			errs = append(errs, sentinels.list[i])
		}
	}
	sentinels.RUnlock()
	return errs
}

// taskErrWire is a TaskError as it travels.
type taskErrWire struct {
	Message  string
	Panicked bool
	Stack    string
	Errs     errorWire
	Limit    string // an isolated worker's: the limit the error shows was hit (see limitOf)
}

func wireError(ce *callError) taskErrWire {
	return taskErrWire{Message: ce.Message, Panicked: ce.Panicked, Stack: ce.Stack, Errs: encodeError(ce.err)}
}

func (w *taskErrWire) error() *TaskError {
	return &TaskError{Message: w.Message, Panicked: w.Panicked, Stack: w.Stack, matches: w.Errs.decode(), limit: w.Limit}
}

package mp

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// registry maps names to the functions and types a child process may run.
// Names are the runtime's symbol names, identical in every process running
// the same binary.
var registry struct {
	sync.RWMutex
	byName map[string]*target
}

// Register records functions, and types with a Run method, that may run in
// another process. Call it from an init function (or before Init) so that a
// re-executed child registers the same things before Init looks them up.
//
// A function is registered under its symbol name. Function literals and
// method values are refused: whatever they capture cannot travel to another
// process. A type is registered by passing a value of it (or a pointer); its
// Run method, with value or pointer receiver, must take no arguments (or a
// single context.Context) and return nothing or an error.
//
// Register panics on anything else, or on a second registration of a
// different target under the same name, as gob.Register does: these are
// programming errors found at start-up.
func Register(targets ...any) {
	registry.Lock()
	defer registry.Unlock()
	if registry.byName == nil {
		registry.byName = make(map[string]*target)
	}
	for _, x := range targets {
		t, err := newTarget(x)
		if err != nil {
			panic(err)
		}
		if old, ok := registry.byName[t.name]; ok {
			if old.same(t) {
				continue
			}
			panic(fmt.Sprintf("mp: Register: %s is already registered as a different target", t.name))
		}
		t.batch = typedBatch(x) // once here: lookup makes a target per call
		registry.byName[t.name] = t
	}
}

// lookup returns the registered target for x, which must be the very
// function or type that was registered.
func lookup(x any) (*target, error) {
	t, err := newTarget(x)
	if err != nil {
		return nil, err
	}
	registry.RLock()
	defer registry.RUnlock()
	if reg, ok := registry.byName[t.name]; ok && reg.same(t) {
		return reg, nil
	}
	return nil, fmt.Errorf("%w: %s (call mp.Register(%s) in an init function)", ErrNotRegistered, t.name, t.short())
}

func lookupName(name string) (*target, bool) {
	registry.RLock()
	defer registry.RUnlock()
	t, ok := registry.byName[name]
	return t, ok
}

// target is a function, or a type with a Run method, that can be called
// with arguments checked against its parameters.
type target struct {
	name string
	fn   reflect.Value // the function, or the Run method expression on *T
	typ  reflect.Type  // for Run types: T (not *T); nil for functions

	params   []reflect.Type // parameters the caller supplies (context excluded)
	withCtx  bool
	variadic bool
	errOut   int // index of the error result, or -1

	batch batchCaller // runs a batched chunk without reflection, or nil
}

var (
	errorType   = reflect.TypeFor[error]()
	contextType = reflect.TypeFor[context.Context]()
	// Anonymous functions are named pkg.outer.funcN (possibly .funcN.M),
	// with an enclosing name between the package and funcN: a top-level
	// function may well be called func1 itself. Method values carry a -fm
	// suffix.
	literalInner = regexp.MustCompile(`\.func\d+(\.\d+)*$`)
)

// isLiteral reports whether the symbol name is that of a function literal
// or a method value.
func isLiteral(name string) bool {
	if strings.HasSuffix(name, "-fm") {
		return true
	}
	// Dots in the last element of a package path are escaped in symbol
	// names, so the package ends at the first dot after the last slash.
	_, inPkg, _ := strings.Cut(name[strings.LastIndex(name, "/")+1:], ".")
	return literalInner.MatchString(inPkg)
}

func newTarget(x any) (*target, error) {
	if x == nil {
		return nil, fmt.Errorf("%w: nil function", ErrBadArguments)
	}
	v := reflect.ValueOf(x)
	if v.Kind() == reflect.Func {
		if v.IsNil() {
			return nil, fmt.Errorf("%w: nil function", ErrBadArguments)
		}
		name := runtime.FuncForPC(v.Pointer()).Name()
		if isLiteral(name) {
			return nil, fmt.Errorf("%w: %s is a function literal or method value: only top-level functions can run in another process, since what a literal captures stays behind", ErrBadArguments, name)
		}
		return signature(name, v, nil)
	}
	t := v.Type()
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	m, ok := reflect.PointerTo(t).MethodByName("Run")
	if !ok || t.Name() == "" {
		return nil, fmt.Errorf("mp: %T is neither a function nor a named type with a Run method", x)
	}
	tg, err := signature(t.PkgPath()+"."+t.Name(), m.Func, t)
	if err != nil {
		return nil, err
	}
	if len(tg.params) != 0 || tg.variadic {
		return nil, fmt.Errorf("mp: %s.Run must take no arguments (or only a context.Context); its data travels in the type's exported fields", t.Name())
	}
	return tg, nil
}

func signature(name string, fn reflect.Value, recv reflect.Type) (*target, error) {
	ft := fn.Type()
	t := &target{name: name, fn: fn, typ: recv, errOut: -1, variadic: ft.IsVariadic()}
	first := 0
	if recv != nil {
		first = 1 // the receiver
	}
	if ft.NumIn() > first && ft.In(first) == contextType {
		t.withCtx = true
		first++
	}
	for i := first; i < ft.NumIn(); i++ {
		t.params = append(t.params, ft.In(i))
	}
	if n := ft.NumOut(); n > 0 && ft.Out(n-1) == errorType {
		t.errOut = n - 1
	}
	return t, nil
}

func (t *target) same(u *target) bool {
	if t.typ != nil || u.typ != nil {
		return t.typ == u.typ
	}
	return t.fn.Pointer() == u.fn.Pointer()
}

func (t *target) short() string {
	if t.typ != nil {
		return t.typ.Name() + "{}"
	}
	base := t.name[strings.LastIndex(t.name, "/")+1:]
	return base[strings.Index(base, ".")+1:]
}

// bind checks args against the target's parameters and converts them to
// reflect values. Untyped nil is accepted for parameters that can be nil.
func (t *target) bind(args []any) ([]reflect.Value, error) {
	n := len(t.params)
	if t.variadic {
		if len(args) < n-1 {
			return nil, fmt.Errorf("%w: %s takes at least %d arguments, got %d", ErrBadArguments, t.name, n-1, len(args))
		}
	} else if len(args) != n {
		return nil, fmt.Errorf("%w: %s takes %d arguments, got %d", ErrBadArguments, t.name, n, len(args))
	}
	vals := make([]reflect.Value, len(args))
	for i, a := range args {
		pt := t.paramType(i)
		if a == nil {
			switch pt.Kind() {
			case reflect.Interface, reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
				vals[i] = reflect.Zero(pt)
				continue
			}
			return nil, fmt.Errorf("%w: %s argument %d: nil for parameter of type %s", ErrBadArguments, t.name, i+1, pt)
		}
		v := reflect.ValueOf(a)
		if !v.Type().AssignableTo(pt) {
			return nil, fmt.Errorf("%w: %s argument %d: %s is not assignable to parameter of type %s", ErrBadArguments, t.name, i+1, v.Type(), pt)
		}
		vals[i] = v
	}
	return vals, nil
}

// paramType is the type of the i-th supplied argument.
func (t *target) paramType(i int) reflect.Type {
	n := len(t.params)
	if t.variadic && i >= n-1 {
		return t.params[n-1].Elem()
	}
	return t.params[i]
}

// argTypes returns the types of n supplied arguments, for decoding.
func (t *target) argTypes(n int) []reflect.Type {
	ts := make([]reflect.Type, n)
	for i := range ts {
		ts[i] = t.paramType(i)
	}
	return ts
}

// call runs the target with recv (for Run types) and args, turning a
// returned error or a panic into a *callError.
func (t *target) call(ctx context.Context, recv reflect.Value, args []reflect.Value) (results []reflect.Value, cerr *callError) {
	in := make([]reflect.Value, 0, len(args)+2)
	if t.typ != nil {
		in = append(in, recv)
	}
	if t.withCtx {
		in = append(in, reflect.ValueOf(&ctx).Elem())
	}
	in = append(in, args...)
	defer func() {
		if r := recover(); r != nil {
			cerr = &callError{Message: fmt.Sprint(r), Panicked: true, Stack: string(debug.Stack())}
		}
	}()
	out := t.fn.Call(in)
	if t.errOut >= 0 {
		if err, _ := out[t.errOut].Interface().(error); err != nil {
			return out, &callError{Message: err.Error(), err: err}
		}
	}
	return out, nil
}

// callError is a function's failure as it travels between processes.
type callError struct {
	Message  string
	Panicked bool
	Stack    string
	err      error // the original error, when in the same process
}

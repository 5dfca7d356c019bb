package codec

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// The CBOR encoder follows pointers without tracking where it has been, so
// cyclic data would recurse until the goroutine's stack overflows, which
// kills the process. checkEncodable walks a value before it is encoded and
// rejects nesting deeper than the decoder accepts. The walk is only needed
// for types that can nest without bound: recursive types and interfaces.
// Everything else is settled once per type from the type alone, so the
// common cases (numbers, plain structs, maps and slices of them) pay one
// cached lookup.

var (
	cborMarshalerType   = reflect.TypeFor[cbor.Marshaler]()
	binaryMarshalerType = reflect.TypeFor[encoding.BinaryMarshaler]()
	timeType            = reflect.TypeFor[time.Time]()
	bigIntType          = reflect.TypeFor[big.Int]()
)

// typeInfo summarises what the type alone says about nesting.
type typeInfo struct {
	// dynamic reports that a value's nesting depends on the value, not
	// just its type: the type holds an interface or refers to itself.
	dynamic bool
	// depth is the CBOR nesting depth of any value of the type when
	// dynamic is false.
	depth int
}

var typeInfos sync.Map // reflect.Type -> typeInfo

func infoOf(t reflect.Type) typeInfo {
	if ti, ok := typeInfos.Load(t); ok {
		return ti.(typeInfo)
	}
	ti := analyze(t, make(map[reflect.Type]bool))
	typeInfos.Store(t, ti)
	return ti
}

// opaqueDepth reports whether values of t are encoded without the encoder
// looking inside them, and if so the nesting they add.
func opaqueDepth(t reflect.Type) (int, bool) {
	switch {
	case t == timeType, t == bigIntType:
		return 1, true // a CBOR tag around a string or integer
	case t.Implements(cborMarshalerType), t.Implements(binaryMarshalerType):
		// Whatever a MarshalCBOR method nests is its author's business.
		return 0, true
	}
	return 0, false
}

func analyze(t reflect.Type, visiting map[reflect.Type]bool) typeInfo {
	if d, ok := opaqueDepth(t); ok {
		return typeInfo{depth: d}
	}
	if visiting[t] {
		return typeInfo{dynamic: true}
	}
	visiting[t] = true
	defer delete(visiting, t)
	switch t.Kind() {
	case reflect.Interface:
		return typeInfo{dynamic: true}
	case reflect.Pointer:
		return analyze(t.Elem(), visiting)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return typeInfo{} // a byte string
		}
		e := analyze(t.Elem(), visiting)
		return typeInfo{dynamic: e.dynamic, depth: e.depth + 1}
	case reflect.Map:
		k, e := analyze(t.Key(), visiting), analyze(t.Elem(), visiting)
		return typeInfo{dynamic: k.dynamic || e.dynamic, depth: max(k.depth, e.depth) + 1}
	case reflect.Struct:
		var ti typeInfo
		for i := range t.NumField() {
			f := t.Field(i)
			if !encodedField(f) {
				continue
			}
			fi := analyze(f.Type, visiting)
			ti.dynamic = ti.dynamic || fi.dynamic
			d := fi.depth
			if isEmbeddedStruct(f) && d > 0 {
				d-- // its fields are flattened into ours
			}
			ti.depth = max(ti.depth, d)
		}
		ti.depth++
		return ti
	}
	return typeInfo{}
}

// encodedField reports whether the CBOR encoder may encode f. It errs
// towards yes: walking a field the encoder skips only costs time.
func encodedField(f reflect.StructField) bool {
	tag, ok := f.Tag.Lookup("cbor")
	if !ok {
		tag = f.Tag.Get("json")
	}
	if tag == "-" {
		return false
	}
	return f.IsExported() || isEmbeddedStruct(f)
}

func isEmbeddedStruct(f reflect.StructField) bool {
	if !f.Anonymous {
		return false
	}
	t := f.Type
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct
}

// checkEncodable returns an error wrapping ErrUnencodable if v nests
// deeper than maxDepth, or through more than maxHops pointers and
// interfaces in a row, or refers to itself; or wrapping ErrTooLarge if its
// encoding would certainly exceed MaxEncoded (as values that share
// pointers can: the encoder writes a shared value out again at every
// reference to it). It takes time linear in the memory v reaches, however
// much of it is shared, and returns ctx's error if ctx ends first (a nil
// ctx never ends).
func checkEncodable(ctx context.Context, v reflect.Value) error {
	if !v.IsValid() {
		return nil
	}
	if ti := infoOf(v.Type()); !ti.dynamic && ti.depth <= maxDepth {
		return nil
	}
	w := walker{ctx: ctx}
	r, err := w.walk(v, 0)
	if err == nil && r.hops > maxHops {
		err = errTooDeep
	}
	switch {
	case err == nil:
		return nil
	case err == errTooDeep:
		return fmt.Errorf("%w: %v: nested more than %d levels deep (cyclic data?)", ErrUnencodable, v.Type(), maxDepth)
	case err == errCycle:
		return fmt.Errorf("%w: %v: cyclic data (it refers to itself)", ErrUnencodable, v.Type())
	case err == errTooBig:
		return fmt.Errorf("%w: %v: its encoding would exceed %d bytes (values shared by many references are written out at each)", ErrTooLarge, v.Type(), MaxEncoded)
	}
	return fmt.Errorf("%w: %v: %w", ErrUnencodable, v.Type(), err)
}

var (
	errTooDeep = errors.New("too deep")
	errCycle   = errors.New("cycle")
	errTooBig  = errors.New("too big")
)

// walker walks a value once per distinct pointer, map and slice it holds,
// computing for each what it adds below itself: nesting, hops and a lower
// bound on its encoding's size.
type walker struct {
	ctx   context.Context
	steps int
	// Values reached by reference, walked already (or being walked): the
	// first few inline, so that checking a small value allocates nothing.
	few  [8]memoEntry
	nfew int
	memo map[refKey]subtree
}

type memoEntry struct {
	k refKey
	r subtree
}

func (w *walker) lookup(k refKey) (subtree, bool) {
	for i := range w.nfew {
		if w.few[i].k == k {
			return w.few[i].r, true
		}
	}
	r, ok := w.memo[k]
	return r, ok
}

func (w *walker) store(k refKey, r subtree) {
	for i := range w.nfew {
		if w.few[i].k == k {
			w.few[i].r = r
			return
		}
	}
	if w.nfew < len(w.few) {
		w.few[w.nfew] = memoEntry{k, r}
		w.nfew++
		return
	}
	if w.memo == nil {
		w.memo = make(map[refKey]subtree)
	}
	w.memo[k] = r
}

// refKey identifies a value reached by reference: what the pointer, map or
// slice points at, its type, and a slice's length.
type refKey struct {
	p uintptr
	t reflect.Type
	n int
}

// subtree is what a value adds to the encoding of what holds it.
type subtree struct {
	depth int    // CBOR nesting levels, itself included
	hops  int    // pointers and interfaces in a row from it to a container
	size  uint64 // a lower bound on its encoding's bytes
	busy  bool   // being walked: reaching it again is a cycle
}

// walk returns what v, found inside depth containers, adds below itself,
// or an error if it breaks a limit.
func (w *walker) walk(v reflect.Value, depth int) (subtree, error) {
	if w.steps++; w.steps&4095 == 0 && w.ctx != nil {
		if err := w.ctx.Err(); err != nil {
			return subtree{}, err
		}
	}
	ti := infoOf(v.Type())
	if !ti.dynamic {
		if depth+ti.depth > maxDepth {
			return subtree{}, errTooDeep
		}
		return subtree{depth: ti.depth, size: w.staticSize(v)}, nil
	}
	if d, ok := opaqueDepth(v.Type()); ok {
		return subtree{depth: d, size: 1}, nil
	}
	var key refKey
	switch v.Kind() {
	case reflect.Interface:
		if v.IsNil() {
			return subtree{size: 1}, nil
		}
		r, err := w.walk(v.Elem(), depth)
		r.hops++
		if r.hops > maxHops {
			return r, errTooDeep
		}
		return r, err
	case reflect.Pointer:
		if v.IsNil() {
			return subtree{size: 1}, nil
		}
		key = refKey{p: v.Pointer(), t: v.Type()}
	case reflect.Map:
		if v.IsNil() {
			return subtree{size: 1}, nil
		}
		key = refKey{p: v.Pointer(), t: v.Type()}
	case reflect.Slice:
		if v.IsNil() || v.Len() == 0 {
			return subtree{size: 1}, nil
		}
		key = refKey{p: v.Pointer(), t: v.Type(), n: v.Len()}
	}
	if key.t != nil {
		if r, ok := w.lookup(key); ok {
			if r.busy {
				return r, errCycle
			}
			if depth+r.depth > maxDepth {
				return r, errTooDeep
			}
			return r, nil
		}
		w.store(key, subtree{busy: true})
	}
	r, err := w.walkInside(v, depth)
	if err != nil {
		return r, err
	}
	if key.t != nil {
		w.store(key, r)
	}
	return r, nil
}

// walkInside is walk of a value of a dynamic type, once: the children of
// a pointer, struct, slice, array or map.
func (w *walker) walkInside(v reflect.Value, depth int) (subtree, error) {
	var r subtree
	child := func(c reflect.Value, d int, embedded bool) error {
		cr, err := w.walk(c, d)
		if err != nil {
			return err
		}
		if cr.hops > maxHops {
			return errTooDeep
		}
		level := cr.depth + 1
		size := cr.size
		if embedded && cr.depth > 0 {
			level-- // its fields are flattened into ours
			size--  // and it has no header of its own
		}
		r.depth = max(r.depth, level)
		r.size = addSize(r.size, size)
		if r.size > MaxEncoded {
			return errTooBig
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		r, err := w.walk(v.Elem(), depth)
		r.hops++
		if err == nil && r.hops > maxHops {
			err = errTooDeep
		}
		return r, err
	case reflect.Struct:
		if depth >= maxDepth {
			return r, errTooDeep
		}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !encodedField(f) {
				continue
			}
			d := depth + 1
			if isEmbeddedStruct(f) {
				d = depth // it adds its own level when walked
			}
			if err := child(v.Field(i), d, d == depth); err != nil {
				return r, err
			}
		}
	case reflect.Slice, reflect.Array:
		if depth >= maxDepth {
			return r, errTooDeep
		}
		for i := range v.Len() {
			if err := child(v.Index(i), depth+1, false); err != nil {
				return r, err
			}
		}
	case reflect.Map:
		if depth >= maxDepth {
			return r, errTooDeep
		}
		for it := v.MapRange(); it.Next(); {
			if err := child(it.Key(), depth+1, false); err != nil {
				return r, err
			}
			if err := child(it.Value(), depth+1, false); err != nil {
				return r, err
			}
		}
	default:
		return subtree{size: 1}, nil
	}
	r.depth = max(r.depth, 1)
	r.size = addSize(r.size, 1) // the container's header
	return r, nil
}

// staticSize is a lower bound on the encoding of v, of a type whose
// nesting its type settles: one byte, or for a slice or array one per
// element (which the encoder writes out even if they are all the same).
func (w *walker) staticSize(v reflect.Value) uint64 {
	switch v.Kind() {
	case reflect.Slice, reflect.Array, reflect.String:
		return 1 + uint64(v.Len())
	}
	return 1
}

// addSize adds sizes without overflow.
func addSize(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

// describeUnsupported names t and, if the fault is inside it, where.
func describeUnsupported(top, bad reflect.Type) string {
	if top == nil {
		return bad.String()
	}
	if p := badPath(top, make(map[reflect.Type]bool)); p != "" {
		if p == top.String() {
			return p
		}
		return top.String() + " (" + p + ")"
	}
	if bad != top {
		return top.String() + " (holds " + bad.String() + ")"
	}
	return top.String()
}

// badPath describes the path from t to a type CBOR cannot encode, or
// returns "" if the type alone shows none.
func badPath(t reflect.Type, seen map[reflect.Type]bool) string {
	switch t.Kind() {
	case reflect.Func, reflect.Uintptr, reflect.Chan, reflect.UnsafePointer, reflect.Complex64, reflect.Complex128:
		return t.String()
	}
	if _, ok := opaqueDepth(t); ok || seen[t] {
		return ""
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Pointer:
		return badPath(t.Elem(), seen)
	case reflect.Slice, reflect.Array:
		if p := badPath(t.Elem(), seen); p != "" {
			return "element " + p
		}
	case reflect.Map:
		if p := badPath(t.Key(), seen); p != "" {
			return "key " + p
		}
		if p := badPath(t.Elem(), seen); p != "" {
			return "value " + p
		}
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if !encodedField(f) {
				continue
			}
			if p := badPath(f.Type, seen); p != "" {
				return "field " + f.Name + " " + p
			}
		}
	}
	return ""
}

// normalize replaces, in the settable value v, every map[any]any held in
// an interface whose keys are all strings with the equivalent
// map[string]any, as decMode would have produced had the whole value had
// string keys.
func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Interface:
		if !v.IsNil() && v.NumMethod() == 0 {
			if x := normAny(v.Elem().Interface()); x != nil {
				v.Set(reflect.ValueOf(x))
			}
		}
	case reflect.Pointer:
		if !v.IsNil() {
			normalize(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				normalize(f)
			}
		}
	case reflect.Slice, reflect.Array:
		if infoOf(v.Type().Elem()).dynamic {
			for i := range v.Len() {
				normalize(v.Index(i))
			}
		}
	case reflect.Map:
		if infoOf(v.Type().Elem()).dynamic {
			for it := v.MapRange(); it.Next(); {
				e := reflect.New(v.Type().Elem()).Elem()
				e.Set(it.Value())
				normalize(e)
				v.SetMapIndex(it.Key(), e)
			}
		}
	}
}

func normAny(x any) any {
	switch m := x.(type) {
	case map[any]any:
		strKeys := true
		for k, e := range m {
			m[k] = normAny(e)
			if _, ok := k.(string); !ok {
				strKeys = false
			}
		}
		if !strKeys {
			return m
		}
		out := make(map[string]any, len(m))
		for k, e := range m {
			out[k.(string)] = e
		}
		return out
	case []any:
		for i := range m {
			m[i] = normAny(m[i])
		}
	}
	return x
}

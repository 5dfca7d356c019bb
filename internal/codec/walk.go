package codec

import (
	"encoding"
	"fmt"
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
// interfaces in a row.
func checkEncodable(v reflect.Value) error {
	if !v.IsValid() {
		return nil
	}
	if ti := infoOf(v.Type()); !ti.dynamic && ti.depth <= maxDepth {
		return nil
	}
	if walk(v, 0, 0) {
		return nil
	}
	return fmt.Errorf("%w: %v: nested more than %d levels deep (cyclic data?)", ErrUnencodable, v.Type(), maxDepth)
}

// walk reports whether v, found inside depth containers and at the end of
// hops pointers or interfaces, stays within the limits.
func walk(v reflect.Value, depth, hops int) bool {
	ti := infoOf(v.Type())
	if !ti.dynamic && depth+ti.depth <= maxDepth {
		return true
	}
	if _, ok := opaqueDepth(v.Type()); ok {
		return true
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return true
		}
		return hops < maxHops && walk(v.Elem(), depth, hops+1)
	case reflect.Struct:
		if depth >= maxDepth {
			return false
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
			if !walk(v.Field(i), d, 0) {
				return false
			}
		}
	case reflect.Slice, reflect.Array:
		if depth >= maxDepth {
			return false
		}
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return true
		}
		if ei := infoOf(v.Type().Elem()); !ei.dynamic && depth+1+ei.depth <= maxDepth {
			return true // skip the per-element walk
		}
		for i := range v.Len() {
			if !walk(v.Index(i), depth+1, 0) {
				return false
			}
		}
	case reflect.Map:
		if depth >= maxDepth {
			return false
		}
		for it := v.MapRange(); it.Next(); {
			if !walk(it.Key(), depth+1, 0) || !walk(it.Value(), depth+1, 0) {
				return false
			}
		}
	}
	return true
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

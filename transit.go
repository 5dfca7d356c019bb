package mp

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"sync"

	"github.com/multiproc/mp/internal/refs"
	"github.com/multiproc/mp/internal/ring"
	"github.com/multiproc/mp/internal/shm"
)

// A primitive sent through a queue or a pipe stays alive while the message
// travels, even if the sender lets go of it at once: the message carries a
// reference of its own, which the receiver gives back once it has decoded
// its own handle. Such a message starts with a header that lists the
// references it carries:
//
//	tagLent, the tree's identity (8 bytes), a count (uvarint), the
//	references (8 bytes each), then the item's encoding
//
// The tree's identity is what tells this header from a message of bytes
// that happens to start with the same byte: only a process of the tree
// knows it.
const tagLent = 0xF7

// lends reports whether values of type t may hold primitives, so that the
// queues and pipes of types that cannot (numbers, strings, plain structs)
// never look.
func lends(t reflect.Type) bool {
	if t == nil {
		return false
	}
	if v, ok := lendTypes.Load(t); ok {
		return v.(bool)
	}
	v := mayHold(t, map[reflect.Type]bool{})
	lendTypes.Store(t, v)
	return v
}

// lendsValue is lends for the dynamic type of v, without a look-up for the
// common types that hold no primitive.
func lendsValue(v any) bool {
	switch v.(type) {
	case nil, []byte, string, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64,
		float32, float64, []int, []string, []float64, map[string]int, map[string]string:
		return false
	}
	return lends(reflect.TypeOf(v))
}

var (
	lendTypes     sync.Map // reflect.Type -> bool
	primitiveType = reflect.TypeFor[primitive]()
)

func mayHold(t reflect.Type, seen map[reflect.Type]bool) bool {
	if t.Implements(primitiveType) || reflect.PointerTo(t).Implements(primitiveType) {
		return true
	}
	if seen[t] {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return mayHold(t.Elem(), seen)
	case reflect.Map:
		return mayHold(t.Key(), seen) || mayHold(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && mayHold(f.Type, seen) {
				return true
			}
		}
	}
	return false
}

// lend appends to dst the header of a message carrying v, with a reference
// lent for each primitive in v, and returns it with the references; it
// returns dst unchanged and none if v holds no primitive.
func lend(dst []byte, v any) ([]byte, []refs.ID, error) {
	hs := primitivesIn(v)
	if len(hs) == 0 {
		return dst, nil, nil
	}
	ids := make([]refs.ID, 0, len(hs))
	for _, h := range hs {
		if h.ref.closed.Load() {
			giveBack(ids)
			return dst, nil, fmt.Errorf("%w: a %s closed before it was sent", ErrClosed, h.kind)
		}
		if err := arena.refs.Lend(h.ref.id, uint8(h.kind), h.off); err != nil {
			giveBack(ids)
			return dst, nil, fmt.Errorf("%w: %s: %v", ErrInvalidHandle, h.kind, err)
		}
		ids = append(ids, h.ref.id)
	}
	dst = append(dst, tagLent)
	dst = binary.LittleEndian.AppendUint64(dst, arena.refs.Tree())
	dst = binary.AppendUvarint(dst, uint64(len(ids)))
	for _, id := range ids {
		dst = binary.LittleEndian.AppendUint64(dst, id.Word())
	}
	return dst, ids, nil
}

func giveBack(ids []refs.ID) {
	for _, id := range ids {
		arena.refs.Return(id)
	}
}

// borrowed splits a received message into the references its header lists
// and the item's encoding; a message without the header carries none.
func borrowed(msg []byte) ([]refs.ID, []byte, error) {
	if len(msg) == 0 || msg[0] != tagLent || arena.refs == nil {
		return nil, msg, nil
	}
	if len(msg) < 9 || binary.LittleEndian.Uint64(msg[1:]) != arena.refs.Tree() {
		return nil, msg, nil // not a header of ours: the decoder will say what it is
	}
	n, k := binary.Uvarint(msg[9:])
	rest := msg[9+max(k, 0):]
	if k <= 0 || n > uint64(len(rest))/8 {
		return nil, nil, fmt.Errorf("%w: bad header of references", ErrCorrupt)
	}
	ids := make([]refs.ID, n)
	for i := range ids {
		ids[i] = refs.FromWord(binary.LittleEndian.Uint64(rest[8*i:]))
	}
	return ids, rest[8*n:], nil
}

// returnDrained gives back the references of the messages left in the ring
// recorded at word src of a block, for a destroy function (the table is
// locked).
func returnDrained(t *refs.Table, src shm.Offset) {
	off := shm.Offset(*t.Arena().Uint64(src))
	if off == 0 {
		return
	}
	r, err := ring.Open(t.Arena(), off)
	if err != nil {
		return
	}
	r.Drain(func(msg []byte) {
		ids, _, _ := borrowed(msg)
		for _, id := range ids {
			t.ReturnLocked(id)
		}
	})
}

// primitivesIn returns the handles of every primitive in v that is in use
// (made or decoded, not closed), as the encoder will see them.
func primitivesIn(v any) []*handle {
	var out []*handle
	eachPrimitive(v, func(p primitive) {
		if h := p.handleOf(); h.ref != nil {
			out = append(out, h)
		}
	})
	return out
}

// eachPrimitive calls f for every primitive in v: as the encoder sees
// them, in exported fields, elements, map keys and values, through
// pointers and interfaces, each pointer once. Types that cannot hold a
// primitive (see lends) are not looked into.
func eachPrimitive(v any, f func(primitive)) {
	var seen map[uintptr]bool // made on the first pointer: most values have none
	var walk func(v reflect.Value, depth int)
	walk = func(v reflect.Value, depth int) {
		if !v.IsValid() || depth > 64 {
			return
		}
		if v.Kind() != reflect.Pointer && v.CanAddr() {
			if p, ok := v.Addr().Interface().(primitive); ok {
				f(p)
				return
			}
		}
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return
			}
			if seen == nil {
				seen = map[uintptr]bool{}
			}
			seen[v.Pointer()] = true
			if p, ok := v.Interface().(primitive); ok {
				f(p)
				return
			}
			walk(v.Elem(), depth+1)
		case reflect.Interface:
			walk(v.Elem(), depth+1)
		case reflect.Struct:
			if !lends(v.Type()) {
				return
			}
			for i := range v.NumField() {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i), depth+1)
				}
			}
		case reflect.Slice, reflect.Array:
			if !lends(v.Type().Elem()) {
				return
			}
			for i := range v.Len() {
				walk(v.Index(i), depth+1)
			}
		case reflect.Map:
			for it := v.MapRange(); it.Next(); {
				walk(it.Key(), depth+1)
				walk(it.Value(), depth+1)
			}
		}
	}
	walk(reflect.ValueOf(v), 0)
}

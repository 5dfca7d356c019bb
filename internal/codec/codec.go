package codec

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"unsafe"

	"github.com/fxamacker/cbor/v2"

	"github.com/multiproc/mp/internal/errs"
)

// ErrUnencodable is returned, wrapped with the offending Go type and the
// reason, when a value cannot be encoded: functions, channels, unsafe
// pointers, uintptrs, complex numbers, structures nested deeper than the
// decoder accepts (which is how cyclic data shows up), or a value whose
// own MarshalBinary or MarshalCBOR method failed.
var ErrUnencodable = errs.Unencodable

// ErrCorrupt is returned, wrapped with detail, by every decoding function
// when data is not a valid encoding of a value of the destination type:
// truncated or altered bytes, an unknown tag, trailing garbage, or a value
// of a different type than the one asked for.
var ErrCorrupt = errs.Corrupt

// ErrTooLarge is returned, wrapped with detail, when an encoded value would
// exceed MaxEncoded, or when data to decode exceeds MaxEncoded or one of the
// decoder's limits on nesting depth, array length or map size.
var ErrTooLarge = errs.TooLarge

// MaxEncoded is the hard ceiling, in bytes, on one encoded value, and on
// one MarshalArgs sequence as a whole.
const MaxEncoded = 1 << 30

// Decoder limits. Data normally comes from another process of the same
// program, but a corrupt pipe or a hostile peer must not be able to make the
// decoder recurse without bound or allocate far more than it was sent.
const (
	// maxDepth bounds nesting of CBOR arrays, maps and tags. The encoder
	// enforces the same bound, so that anything Marshal accepts the
	// receiving side can decode, and so that cyclic data fails cleanly
	// instead of overflowing the stack.
	maxDepth = 1024
	// maxArrayElements and maxMapPairs bound element counts. The CBOR
	// decoder checks that the input actually holds at least one byte per
	// declared element before allocating, so these only cap the expansion
	// factor of tiny elements (a 1-byte CBOR null becomes a 16-byte any).
	maxArrayElements = 1 << 27
	maxMapPairs      = 1 << 24
	// maxHops bounds chains of pointers and interfaces with no container
	// in between (var x any; x = &x). Such chains add no CBOR nesting, so
	// maxDepth alone would not stop them.
	maxHops = 64
)

// Tags: the first byte of every Marshal output and of every item in a
// MarshalArgs sequence.
const (
	tagCBOR     byte = 0xC1 // a CBOR data item follows
	tagBytes    byte = 0xB1 // raw bytes of a []byte follow
	tagNilBytes byte = 0xB0 // a nil []byte; nothing follows
	tagString   byte = 0x51 // raw bytes of a string follow
	tagArgs     byte = 0xA1 // MarshalArgs header: uvarint count, then items
)

var (
	bytesType  = reflect.TypeFor[[]byte]()
	stringType = reflect.TypeFor[string]()
)

var (
	encMode cbor.UserBufferEncMode
	// decMode decodes CBOR maps held in interfaces as map[string]any.
	// That fails on the first non-string key, so decodeCBOR then retries
	// with anyMode (map[any]any) and converts the string-keyed maps.
	decMode cbor.DecMode
	anyMode cbor.DecMode
)

func init() {
	// Core deterministic encoding (RFC 8949 §4.2.1): shortest integers and
	// floats, sorted map keys, no indefinite lengths. The same value
	// always gives the same bytes, which keeps messages comparable.
	eo := cbor.CoreDetEncOptions()
	// RFC 3339 text under tag 0 keeps nanoseconds and the zone offset
	// (a unix-time tag would drop the offset).
	eo.Time = cbor.TimeRFC3339Nano
	eo.TimeTag = cbor.EncTagRequired
	var err error
	if encMode, err = eo.UserBufferEncMode(); err != nil {
		panic(err)
	}
	do := cbor.DecOptions{
		MaxNestedLevels:  maxDepth,
		MaxArrayElements: maxArrayElements,
		MaxMapPairs:      maxMapPairs,
		// The encoder never produces indefinite lengths; refusing them
		// narrows what a corrupt message can make the decoder do.
		IndefLength:    cbor.IndefLengthForbidden,
		DefaultMapType: reflect.TypeFor[map[string]any](),
	}
	if decMode, err = do.DecMode(); err != nil {
		panic(err)
	}
	do.DefaultMapType = nil
	if anyMode, err = do.DecMode(); err != nil {
		panic(err)
	}
}

// scratch holds encode buffers for Marshal, which encodes into one and
// copies the result out at its exact size.
var scratch = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooled keeps one huge message from pinning its buffer forever.
const maxPooled = 64 << 10

// Marshal returns the encoding of v.
//
// A []byte or string is written as a tag byte and the raw bytes, without
// reflection. Any other value is a tag byte and a CBOR data item. Only
// exported struct fields are encoded (honouring `cbor` and `json` field
// tags); unexported fields are silently left out, as with encoding/json.
// Types implementing cbor.Marshaler or encoding.BinaryMarshaler are encoded
// by those methods. A nil v, nil pointer, nil map or nil slice encodes as
// CBOR null.
//
// The error wraps ErrUnencodable if v (or anything reachable from it) is a
// function, channel, unsafe pointer, uintptr or complex number, is nested
// more deeply than the decoder accepts (cyclic data), or has a marshal
// method that fails; it wraps ErrTooLarge if the encoding would exceed
// MaxEncoded.
func Marshal(v any) ([]byte, error) {
	switch x := v.(type) {
	case []byte:
		return appendBytes(nil, x)
	case string:
		return appendString(nil, x)
	}
	b := scratch.Get().(*bytes.Buffer)
	b.Reset()
	out, err := appendCBOR(context.Background(), b, v)
	if err == nil {
		out = bytes.Clone(out)
	}
	if b.Cap() <= maxPooled {
		scratch.Put(b)
	}
	return out, err
}

// AppendMarshal appends the encoding of v, exactly as Marshal would return
// it, to dst and returns the extended slice. Encoding into a reused buffer
// avoids Marshal's allocation. On error it returns dst unchanged (though
// bytes past len(dst) may have been overwritten) and an error as for
// Marshal.
func AppendMarshal(dst []byte, v any) ([]byte, error) {
	return AppendMarshalContext(context.Background(), dst, v)
}

// AppendMarshalContext is AppendMarshal that gives up, returning ctx's
// error, if ctx ends while it checks what v refers to.
func AppendMarshalContext(ctx context.Context, dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case []byte:
		return appendBytes(dst, x)
	case string:
		return appendString(dst, x)
	}
	b := scratch.Get().(*bytes.Buffer)
	// Point the pooled Buffer at dst so CBOR is encoded in place.
	*b = *bytes.NewBuffer(dst)
	out, err := appendCBOR(ctx, b, v)
	*b = bytes.Buffer{}
	scratch.Put(b)
	if err != nil {
		return dst, err
	}
	return out, nil
}

func appendBytes(dst, p []byte) ([]byte, error) {
	if len(p) > MaxEncoded-1 {
		return dst, fmt.Errorf("%w: []byte of %d bytes", ErrTooLarge, len(p))
	}
	if p == nil {
		return append(dst, tagNilBytes), nil
	}
	dst = slices.Grow(dst, 1+len(p))
	return append(append(dst, tagBytes), p...), nil
}

func appendString(dst []byte, s string) ([]byte, error) {
	if len(s) > MaxEncoded-1 {
		return dst, fmt.Errorf("%w: string of %d bytes", ErrTooLarge, len(s))
	}
	dst = slices.Grow(dst, 1+len(s))
	return append(append(dst, tagString), s...), nil
}

// appendCBOR writes tagCBOR and the CBOR encoding of v to b and returns
// b's contents.
func appendCBOR(ctx context.Context, b *bytes.Buffer, v any) ([]byte, error) {
	start := b.Len()
	if err := checkEncodable(ctx, reflect.ValueOf(v)); err != nil {
		return nil, err
	}
	b.WriteByte(tagCBOR)
	if err := encMode.MarshalToBuffer(v, b); err != nil {
		return nil, encodeError(v, err)
	}
	if n := b.Len() - start; n > MaxEncoded {
		return nil, fmt.Errorf("%w: %T encodes to %d bytes, over %d", ErrTooLarge, v, n, MaxEncoded)
	}
	return b.Bytes(), nil
}

// encodeError wraps an error from the CBOR encoder in ErrUnencodable,
// naming the type at fault.
func encodeError(v any, err error) error {
	var ute *cbor.UnsupportedTypeError
	if errors.As(err, &ute) {
		return fmt.Errorf("%w: %s", ErrUnencodable, describeUnsupported(reflect.TypeOf(v), ute.Type))
	}
	return fmt.Errorf("%w: %T: %w", ErrUnencodable, v, err)
}

// Unmarshal decodes data, as produced by Marshal or AppendMarshal, into the
// value ptr points to. The result never aliases data.
//
// Decoding follows CBOR's rules: struct fields are matched by name, missing
// fields are left alone, and extra ones ignored. A value decoded into an
// interface becomes bool, int64 (negative) or uint64 (non-negative),
// float64, string, []byte, time.Time, []any for arrays, and map[string]any
// for maps whose keys are all strings (map[any]any otherwise). Types
// implementing cbor.Unmarshaler or encoding.BinaryUnmarshaler are decoded
// by those methods. A []byte or string encoding may be decoded into any type
// that a CBOR byte or text string could be.
//
// It returns an error if ptr is not a non-nil pointer. The error wraps
// ErrTooLarge if data exceeds MaxEncoded or the nesting, array or map limits,
// and ErrCorrupt for any other failure, including data that is valid but
// encodes a value that does not fit the destination type. On error *ptr may
// have been partly written.
func Unmarshal(data []byte, ptr any) error {
	// Fast paths for the common destinations, without reflection.
	switch p := ptr.(type) {
	case *[]byte:
		if p != nil && len(data) > 0 && (data[0] == tagBytes || data[0] == tagNilBytes) {
			if err := checkSize(data); err != nil {
				return err
			}
			*p = copyBytes(data)
			return nil
		}
	case *string:
		if p != nil && len(data) > 0 && data[0] == tagString {
			if err := checkSize(data); err != nil {
				return err
			}
			*p = string(data[1:])
			return nil
		}
	}
	rv := reflect.ValueOf(ptr)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("codec: Unmarshal needs a non-nil pointer, got %T", ptr)
	}
	if err := checkSize(data); err != nil {
		return err
	}
	return decode(data[0], data[1:], rv)
}

// UnmarshalType decodes data, as produced by Marshal, into a new value of
// type t and returns it. The result is addressable. Errors are as for
// Unmarshal; t must not be nil.
func UnmarshalType(data []byte, t reflect.Type) (reflect.Value, error) {
	if t == nil {
		return reflect.Value{}, errors.New("codec: UnmarshalType with nil type")
	}
	p := reflect.New(t)
	if err := Unmarshal(data, p.Interface()); err != nil {
		return reflect.Value{}, err
	}
	return p.Elem(), nil
}

func checkSize(data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty message", ErrCorrupt)
	}
	if len(data) > MaxEncoded {
		return fmt.Errorf("%w: message of %d bytes, over %d", ErrTooLarge, len(data), MaxEncoded)
	}
	return nil
}

// copyBytes returns the payload of a tagBytes or tagNilBytes message.
func copyBytes(data []byte) []byte {
	if data[0] == tagNilBytes {
		return nil
	}
	// Not bytes.Clone: an empty payload must decode as empty, not nil.
	return append(make([]byte, 0, len(data)-1), data[1:]...)
}

// decode decodes one tagged payload into the value ptr points to.
func decode(tag byte, payload []byte, ptr reflect.Value) error {
	dst := ptr.Elem()
	switch tag {
	case tagCBOR:
		return decodeCBOR(payload, ptr)
	case tagBytes, tagNilBytes:
		if tag == tagNilBytes && len(payload) != 0 {
			return fmt.Errorf("%w: %d bytes after nil []byte tag", ErrCorrupt, len(payload))
		}
		if dst.Type() == bytesType || isEmptyInterface(dst.Type()) {
			var b []byte
			if tag == tagBytes {
				b = append(make([]byte, 0, len(payload)), payload...)
			}
			dst.Set(reflect.ValueOf(b))
			return nil
		}
		// Any other destination gets what a CBOR byte string would give
		// it: named byte slices, byte arrays, BinaryUnmarshalers, or a
		// type error.
		var item []byte
		var err error
		if tag == tagBytes {
			item, err = encMode.Marshal(payload)
		} else {
			item, err = encMode.Marshal(nil)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return decodeCBOR(item, ptr)
	case tagString:
		if dst.Type() == stringType || isEmptyInterface(dst.Type()) {
			dst.Set(reflect.ValueOf(string(payload)))
			return nil
		}
		item, err := encMode.Marshal(string(payload))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return decodeCBOR(item, ptr)
	}
	return fmt.Errorf("%w: unknown tag %#02x", ErrCorrupt, tag)
}

func isEmptyInterface(t reflect.Type) bool {
	return t.Kind() == reflect.Interface && t.NumMethod() == 0
}

// decodeCBOR decodes exactly one CBOR data item into the value ptr points
// to.
func decodeCBOR(item []byte, ptr reflect.Value) error {
	rest, err := decodeFirst(item, ptr)
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("%w: %d bytes after the value", ErrCorrupt, len(rest))
	}
	return err
}

// decodeFirst decodes the CBOR data item at the start of data into the
// value ptr points to and returns the bytes after it.
func decodeFirst(data []byte, ptr reflect.Value) ([]byte, error) {
	rest, err := decMode.UnmarshalFirst(data, ptr.Interface())
	if err == nil {
		return rest, nil
	}
	var ute *cbor.UnmarshalTypeError
	if errors.As(err, &ute) {
		// Perhaps a map with non-string keys landed in an interface.
		// Retry allowing map[any]any, then give back map[string]any
		// wherever the keys allow it.
		ptr.Elem().SetZero()
		if rest, err2 := anyMode.UnmarshalFirst(data, ptr.Interface()); err2 == nil {
			normalize(ptr.Elem())
			return rest, nil
		}
		ptr.Elem().SetZero()
	}
	return nil, decodeError(err)
}

// decodeError classifies an error from the CBOR decoder.
func decodeError(err error) error {
	var (
		e1 *cbor.MaxNestedLevelError
		e2 *cbor.MaxArrayElementsError
		e3 *cbor.MaxMapPairsError
	)
	if errors.As(err, &e1) || errors.As(err, &e2) || errors.As(err, &e3) {
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// MarshalArgs encodes a sequence of values, such as a function's arguments
// or results, into one message. Each value is encoded as Marshal would,
// []byte and string values (including those held in interfaces) taking the
// raw fast path with a length prefix. A zero reflect.Value or a nil
// interface encodes as CBOR null. Errors are as for Marshal, and name the
// position of the failing value.
func MarshalArgs(args []reflect.Value) ([]byte, error) {
	return AppendArgs(make([]byte, 0, 16), args)
}

// AppendArgs appends the MarshalArgs encoding of args to b. On error, b
// may have been extended.
func AppendArgs(b []byte, args []reflect.Value) ([]byte, error) {
	start := len(b)
	b = append(b, tagArgs)
	b = binary.AppendUvarint(b, uint64(len(args)))
	for i, v := range args {
		var err error
		if b, err = appendArg(b, v); err != nil {
			return nil, fmt.Errorf("argument %d: %w", i+1, err)
		}
		if len(b)-start > MaxEncoded {
			return nil, fmt.Errorf("%w: arguments encode to more than %d bytes", ErrTooLarge, MaxEncoded)
		}
	}
	return b, nil
}

func appendArg(b []byte, v reflect.Value) ([]byte, error) {
	if v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
	}
	if !v.IsValid() || (v.Kind() == reflect.Interface && v.IsNil()) {
		return append(b, tagCBOR, 0xf6), nil
	}
	switch v.Type() {
	case bytesType:
		p := v.Bytes()
		if p == nil {
			return append(b, tagNilBytes), nil
		}
		b = append(b, tagBytes)
		b = binary.AppendUvarint(b, uint64(len(p)))
		return append(b, p...), nil
	case stringType:
		s := v.String()
		b = append(b, tagString)
		b = binary.AppendUvarint(b, uint64(len(s)))
		return append(b, s...), nil
	}
	if !v.CanInterface() {
		return b, fmt.Errorf("%w: %v obtained through an unexported field", ErrUnencodable, v.Type())
	}
	buf := bytes.NewBuffer(b)
	// A CBOR item is self-delimiting, so it needs no length prefix.
	return appendCBOR(context.Background(), buf, v.Interface())
}

// UnmarshalArgs decodes a message produced by MarshalArgs into new values of
// the given types, which must match the encoded values in number and be
// compatible with them as for Unmarshal. The returned values are
// addressable. The error wraps ErrCorrupt if the counts differ or data is
// malformed, and otherwise is as for Unmarshal.
func UnmarshalArgs(data []byte, types []reflect.Type) ([]reflect.Value, error) {
	if len(data) > MaxEncoded {
		return nil, fmt.Errorf("%w: message of %d bytes, over %d", ErrTooLarge, len(data), MaxEncoded)
	}
	if len(data) == 0 || data[0] != tagArgs {
		return nil, fmt.Errorf("%w: not an argument list", ErrCorrupt)
	}
	n, k := binary.Uvarint(data[1:])
	if k <= 0 {
		return nil, fmt.Errorf("%w: bad argument count", ErrCorrupt)
	}
	if n != uint64(len(types)) {
		return nil, fmt.Errorf("%w: message holds %d values, want %d", ErrCorrupt, n, len(types))
	}
	rest := data[1+k:]
	out := make([]reflect.Value, len(types))
	for i, t := range types {
		if t == nil {
			return nil, fmt.Errorf("codec: UnmarshalArgs with nil type at %d", i)
		}
		var err error
		out[i], rest, err = decodeArg(rest, t)
		if err != nil {
			return nil, fmt.Errorf("argument %d (%v): %w", i+1, t, err)
		}
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last value", ErrCorrupt, len(rest))
	}
	return out, nil
}

// decodeArg decodes the first item of data into a new value of type t and
// returns it with the remaining data.
func decodeArg(data []byte, t reflect.Type) (reflect.Value, []byte, error) {
	if len(data) == 0 {
		return reflect.Value{}, nil, fmt.Errorf("%w: missing value", ErrCorrupt)
	}
	tag, data := data[0], data[1:]
	p := reflect.New(t)
	switch tag {
	case tagCBOR:
		rest, err := decodeFirst(data, p)
		if err != nil {
			return reflect.Value{}, nil, err
		}
		return p.Elem(), rest, nil
	case tagNilBytes:
		if err := decode(tag, nil, p); err != nil {
			return reflect.Value{}, nil, err
		}
		return p.Elem(), data, nil
	case tagBytes, tagString:
		n, k := binary.Uvarint(data)
		if k <= 0 {
			return reflect.Value{}, nil, fmt.Errorf("%w: bad length", ErrCorrupt)
		}
		// Compare before converting so a huge claimed length can
		// neither overflow nor allocate.
		if n > uint64(len(data)-k) {
			return reflect.Value{}, nil, fmt.Errorf("%w: length %d exceeds the %d bytes left", ErrCorrupt, n, len(data)-k)
		}
		end := k + int(n)
		if err := decode(tag, data[k:end], p); err != nil {
			return reflect.Value{}, nil, err
		}
		return p.Elem(), data[end:], nil
	}
	return reflect.Value{}, nil, fmt.Errorf("%w: unknown tag %#02x", ErrCorrupt, tag)
}

// Framing without copies, for carriers that can write a message in two
// parts (a header, then the payload) and that hand the receiver a buffer
// it owns: the encoding of a []byte or a string is a one-byte header and
// the raw bytes, so the payload need not be copied into an encoding buffer
// first, nor out of the received buffer after.
var (
	hdrBytes    = []byte{tagBytes}
	hdrNilBytes = []byte{tagNilBytes}
	hdrString   = []byte{tagString}
)

// BytesHeader returns the header that, followed by b, is Marshal(b). The
// caller must not modify it.
func BytesHeader(b []byte) []byte {
	if b == nil {
		return hdrNilBytes
	}
	return hdrBytes
}

// StringHeader returns the header that, followed by the bytes of a string,
// is the Marshal of that string. The caller must not modify it.
func StringHeader() []byte { return hdrString }

// AdoptBytes returns the []byte that data encodes, as a subslice of data
// when it was encoded raw (data must then not be used otherwise by the
// caller). ok is false if data holds anything else: decode it with
// Unmarshal.
func AdoptBytes(data []byte) (b []byte, ok bool) {
	if len(data) == 0 || len(data) > MaxEncoded {
		return nil, false
	}
	switch {
	case data[0] == tagBytes:
		return data[1:len(data):len(data)], true
	case data[0] == tagNilBytes && len(data) == 1:
		return nil, true
	}
	return nil, false
}

// AdoptString is AdoptBytes for strings: the string shares data's memory,
// which the caller must never modify afterwards.
func AdoptString(data []byte) (s string, ok bool) {
	if len(data) < 2 || data[0] != tagString || len(data) > MaxEncoded {
		if len(data) == 1 && data[0] == tagString {
			return "", true
		}
		return "", false
	}
	return unsafe.String(&data[1], len(data)-1), true
}

package codec

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"
)

type small struct {
	Name string
	N    int
	Tags []string
}

type inner struct {
	X, Y float64
}

type nested struct {
	ID      int64
	Items   []small
	ByName  map[string]*inner
	Ptr     *inner
	NilPtr  *inner
	Grid    [][]int
	When    time.Time
	Any     any
	private int // not encoded
}

// point implements encoding.BinaryMarshaler with a format of its own, so
// a round trip through its methods is distinguishable from field encoding.
type point struct{ x, y int32 }

func (p point) MarshalBinary() ([]byte, error) {
	return []byte(fmt.Sprintf("P%d,%d", p.x, p.y)), nil
}

func (p *point) UnmarshalBinary(b []byte) error {
	_, err := fmt.Sscanf(string(b), "P%d,%d", &p.x, &p.y)
	return err
}

type failing struct{}

func (failing) MarshalBinary() ([]byte, error) { return nil, errors.New("boom") }

type blob []byte

type withFunc struct {
	A int
	F func()
}

type withUnexportedFunc struct {
	A int
	f func()
}

type node struct {
	V    int
	Next *node
}

type tree struct {
	Kids []any
}

// roundTrip encodes v, decodes it into a new value of v's type with both
// Unmarshal and UnmarshalType, and returns the decoded value.
func roundTrip(t *testing.T, v any) any {
	t.Helper()
	data, err := Marshal(v)
	if err != nil {
		t.Fatalf("Marshal(%#v): %v", v, err)
	}
	app, err := AppendMarshal([]byte("prefix"), v)
	if err != nil || !bytes.Equal(app, append([]byte("prefix"), data...)) {
		t.Fatalf("AppendMarshal(%#v) = %x, %v; want prefix+%x", v, app, err, data)
	}
	typ := reflect.TypeOf(v)
	p := reflect.New(typ)
	if err := Unmarshal(data, p.Interface()); err != nil {
		t.Fatalf("Unmarshal(%x) into %v: %v", data, typ, err)
	}
	got, err := UnmarshalType(data, typ)
	if err != nil {
		t.Fatalf("UnmarshalType(%x, %v): %v", data, typ, err)
	}
	if !reflect.DeepEqual(got.Interface(), p.Elem().Interface()) {
		t.Fatalf("UnmarshalType = %#v, Unmarshal = %#v", got, p.Elem())
	}
	return p.Elem().Interface()
}

func TestRoundTrip(t *testing.T) {
	values := []any{
		int(-7), int8(math.MinInt8), int16(math.MaxInt16), int32(math.MinInt32),
		int64(math.MaxInt64), int64(math.MinInt64),
		uint(7), uint8(math.MaxUint8), uint16(math.MaxUint16), uint32(math.MaxUint32),
		uint64(math.MaxUint64),
		float32(1.5), float64(math.Pi), math.Inf(-1), 0.0, -0.0, 1e300,
		true, false,
		"", "hello", "héllo, 世界", strings.Repeat("x", 100000),
		[]byte{}, []byte{0, 1, 2, 255}, bytes.Repeat([]byte{7}, 70000),
		[]int{1, 2, 3}, []string{"a", ""}, [3]int{1, 2, 3}, [4]byte{1, 2, 3, 4},
		map[string]int{"a": 1, "b": 2}, map[int]string{1: "x", -2: "y"},
		map[[2]int]bool{{1, 2}: true},
		small{"w", 3, []string{"a", "b"}},
		&small{Name: "ptr"},
		nested{
			ID:     9,
			Items:  []small{{"a", 1, nil}, {"b", 2, []string{}}},
			ByName: map[string]*inner{"p": {1, 2}, "nil": nil},
			Ptr:    &inner{3, 4},
			Grid:   [][]int{{1}, {}, nil},
			When:   time.Date(2024, 2, 29, 12, 30, 45, 123456789, time.UTC),
			Any:    "str",
		},
		point{3, -4},
		blob("named"),
		[]point{{1, 2}, {3, 4}},
		&node{1, &node{2, &node{3, nil}}},
	}
	for _, v := range values {
		t.Run(fmt.Sprintf("%T", v), func(t *testing.T) {
			got := roundTrip(t, v)
			if !reflect.DeepEqual(got, v) {
				t.Errorf("round trip of %T: got %#v, want %#v", v, got, v)
			}
		})
	}
}

func TestNaN(t *testing.T) {
	data, err := Marshal(math.NaN())
	if err != nil {
		t.Fatal(err)
	}
	var got float64
	if err := Unmarshal(data, &got); err != nil || !math.IsNaN(got) {
		t.Errorf("NaN round trip gave %v", got)
	}
}

func TestNilBytes(t *testing.T) {
	// nil and empty must stay distinct, top-level and inside CBOR.
	for _, v := range [][]byte{nil, {}} {
		got := roundTrip(t, v).([]byte)
		if (got == nil) != (v == nil) || len(got) != 0 {
			t.Errorf("round trip of %#v gave %#v", v, got)
		}
		type s struct{ B []byte }
		gs := roundTrip(t, s{v}).(s)
		if (gs.B == nil) != (v == nil) {
			t.Errorf("round trip of struct with %#v gave %#v", v, gs.B)
		}
	}
}

func TestUnmarshalDoesNotAlias(t *testing.T) {
	data, _ := Marshal([]byte("abc"))
	var b []byte
	if err := Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	data[1] = 'X'
	if string(b) != "abc" {
		t.Errorf("decoded []byte aliases input: %q", b)
	}
}

func TestTime(t *testing.T) {
	loc := time.FixedZone("X", -5*3600-30*60)
	in := time.Date(2001, 9, 9, 1, 46, 40, 999999999, loc)
	got := roundTrip(t, in).(time.Time)
	if !got.Equal(in) {
		t.Errorf("time round trip: got %v, want %v", got, in)
	}
	if _, off := got.Zone(); off != -5*3600-30*60 {
		t.Errorf("time offset lost: got %v", got)
	}
	if z := roundTrip(t, time.Time{}).(time.Time); !z.IsZero() {
		t.Errorf("zero time round trip gave %v", z)
	}
	// Into any, a time stays a time.
	data, _ := Marshal(in)
	var x any
	if err := Unmarshal(data, &x); err != nil {
		t.Fatal(err)
	}
	if tt, ok := x.(time.Time); !ok || !tt.Equal(in) {
		t.Errorf("time into any gave %#v", x)
	}
}

func TestBinaryMarshalerUsed(t *testing.T) {
	data, err := Marshal(point{5, 6})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("P5,6")) {
		t.Errorf("encoding %x does not come from MarshalBinary", data)
	}
	// A plain []byte message decodes through UnmarshalBinary too.
	raw, _ := Marshal([]byte("P7,8"))
	var p point
	if err := Unmarshal(raw, &p); err != nil || p != (point{7, 8}) {
		t.Errorf("Unmarshal([]byte) into point = %v, %v", p, err)
	}
	if _, err := Marshal(failing{}); !errors.Is(err, ErrUnencodable) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("failing MarshalBinary: err = %v", err)
	}
}

func TestAny(t *testing.T) {
	in := map[string]any{
		"int":   -3,
		"uint":  uint(3),
		"float": 2.5,
		"str":   "s",
		"bytes": []byte("b"),
		"list":  []any{1, "two", nil},
		"map":   map[string]any{"k": true},
		"nil":   nil,
	}
	data, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var got any
	if err := Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"int":   int64(-3),
		"uint":  uint64(3),
		"float": 2.5,
		"str":   "s",
		"bytes": []byte("b"),
		"list":  []any{uint64(1), "two", nil},
		"map":   map[string]any{"k": true},
		"nil":   nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("into any:\ngot  %#v\nwant %#v", got, want)
	}
}

func TestAnyNonStringKeys(t *testing.T) {
	in := []any{map[int]string{1: "a"}, map[string]any{"s": map[string]int{"x": 1}}}
	data, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	type holder struct{ V any }
	var h holder
	hdata, _ := Marshal(holder{in})
	var got any
	if err := Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if err := Unmarshal(hdata, &h); err != nil {
		t.Fatal(err)
	}
	want := []any{map[any]any{uint64(1): "a"}, map[string]any{"s": map[string]any{"x": uint64(1)}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
	if !reflect.DeepEqual(h.V, want) {
		t.Errorf("in struct: got  %#v\nwant %#v", h.V, want)
	}
}

func TestFastPathsIntoAny(t *testing.T) {
	for _, v := range []any{[]byte("raw"), "text", []byte(nil)} {
		data, _ := Marshal(v)
		var x any
		if err := Unmarshal(data, &x); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(x, v) {
			t.Errorf("%#v into any gave %#v", v, x)
		}
	}
	// The fast-path encodings decode like CBOR strings into other types.
	data, _ := Marshal("text")
	type name string
	var n name
	if err := Unmarshal(data, &n); err != nil || n != "text" {
		t.Errorf("string into named string: %q, %v", n, err)
	}
	var i int
	if err := Unmarshal(data, &i); !errors.Is(err, ErrCorrupt) {
		t.Errorf("string into int: err = %v", err)
	}
}

func TestNilInterface(t *testing.T) {
	data, err := Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, []byte{tagCBOR, 0xf6}) {
		t.Errorf("Marshal(nil) = %x, want CBOR null", data)
	}
	var e error = errors.New("x")
	if err := Unmarshal(data, &e); err != nil || e != nil {
		t.Errorf("null into error: %v, %v", e, err)
	}
	var p *int
	if err := Unmarshal(data, &p); err != nil || p != nil {
		t.Errorf("null into *int: %v, %v", p, err)
	}
}

func TestUnexportedFieldsSkipped(t *testing.T) {
	got := roundTrip(t, nested{ID: 1, private: 5}).(nested)
	if got.private != 0 || got.ID != 1 {
		t.Errorf("got %+v", got)
	}
	// An unexported func field does not make a struct unencodable.
	if _, err := Marshal(withUnexportedFunc{A: 1, f: func() {}}); err != nil {
		t.Errorf("unexported func field: %v", err)
	}
}

func TestArgs(t *testing.T) {
	var nilErr error
	args := []any{
		42, "s", "", []byte("raw"), []byte{}, []byte(nil),
		small{"x", 1, nil}, 3.5, map[string]int{"k": 1}, any("in iface"), point{1, 2},
	}
	vals := make([]reflect.Value, 0, len(args)+2)
	types := make([]reflect.Type, 0, len(args)+2)
	for _, a := range args {
		vals = append(vals, reflect.ValueOf(a))
		types = append(types, reflect.TypeOf(a))
	}
	// A nil error and a []byte held in an any-typed parameter.
	vals = append(vals, reflect.ValueOf(&nilErr).Elem())
	types = append(types, reflect.TypeFor[error]())
	var anyBytes any = []byte("held")
	vals = append(vals, reflect.ValueOf(&anyBytes).Elem())
	types = append(types, reflect.TypeFor[any]())

	data, err := MarshalArgs(vals)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalArgs(data, types)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(vals) {
		t.Fatalf("got %d values, want %d", len(got), len(vals))
	}
	for i := range args {
		if !reflect.DeepEqual(got[i].Interface(), args[i]) {
			t.Errorf("arg %d: got %#v, want %#v", i, got[i], args[i])
		}
	}
	if got[5].Interface().([]byte) != nil {
		t.Errorf("nil []byte arg decoded non-nil")
	}
	if !got[len(args)].IsNil() {
		t.Errorf("nil error arg decoded as %v", got[len(args)])
	}
	if b, ok := got[len(args)+1].Interface().([]byte); !ok || string(b) != "held" {
		t.Errorf("[]byte in any: got %#v", got[len(args)+1])
	}

	// No arguments.
	data, err = MarshalArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := UnmarshalArgs(data, nil); err != nil || len(got) != 0 {
		t.Errorf("empty args: %v, %v", got, err)
	}
}

func TestArgsCountMismatch(t *testing.T) {
	data, _ := MarshalArgs([]reflect.Value{reflect.ValueOf(1), reflect.ValueOf("x")})
	for _, types := range [][]reflect.Type{
		{reflect.TypeFor[int]()},
		{reflect.TypeFor[int](), reflect.TypeFor[string](), reflect.TypeFor[int]()},
	} {
		if _, err := UnmarshalArgs(data, types); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%d types for 2 values: err = %v", len(types), err)
		}
	}
	if _, err := UnmarshalArgs(data, []reflect.Type{reflect.TypeFor[string](), reflect.TypeFor[string]()}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong arg type: err = %v", err)
	}
	// Marshal output is not an argument list.
	one, _ := Marshal(1)
	if _, err := UnmarshalArgs(one, []reflect.Type{reflect.TypeFor[int]()}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Marshal output to UnmarshalArgs: err = %v", err)
	}
}

func TestUnencodable(t *testing.T) {
	ch := make(chan int)
	x := 1
	tests := []struct {
		v    any
		want string
	}{
		{func(int) int { return 0 }, "mp: value cannot be sent to another process: func(int) int"},
		{ch, "mp: value cannot be sent to another process: chan int"},
		{unsafe.Pointer(&x), "mp: value cannot be sent to another process: unsafe.Pointer"},
		{complex(1, 2), "mp: value cannot be sent to another process: complex128"},
		{uintptr(1), "mp: value cannot be sent to another process: uintptr"},
		{withFunc{A: 1}, "mp: value cannot be sent to another process: codec.withFunc (field F func())"},
		{[]func(){nil}, "mp: value cannot be sent to another process: []func() (element func())"},
		{map[string]chan int{}, "mp: value cannot be sent to another process: map[string]chan int (value chan int)"},
		{tree{Kids: []any{1, ch}}, "mp: value cannot be sent to another process: codec.tree (holds chan int)"},
	}
	for _, tt := range tests {
		_, err := Marshal(tt.v)
		if !errors.Is(err, ErrUnencodable) || err.Error() != tt.want {
			t.Errorf("Marshal(%T): err = %v, want %q", tt.v, err, tt.want)
		}
		if out, err := AppendMarshal([]byte("keep"), tt.v); !errors.Is(err, ErrUnencodable) || string(out) != "keep" {
			t.Errorf("AppendMarshal(%T) = %q, %v", tt.v, out, err)
		}
		_, err = MarshalArgs([]reflect.Value{reflect.ValueOf(1), reflect.ValueOf(tt.v)})
		if !errors.Is(err, ErrUnencodable) || !strings.Contains(err.Error(), "argument 2") {
			t.Errorf("MarshalArgs(%T): err = %v", tt.v, err)
		}
	}
}

func TestCyclic(t *testing.T) {
	n := &node{V: 1}
	n.Next = n
	var a any
	a = &a
	m := map[string]any{}
	m["self"] = m
	s := []any{nil}
	s[0] = s
	for _, v := range []any{n, a, m, s} {
		done := make(chan error, 1)
		go func() { _, err := Marshal(v); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrUnencodable) {
				t.Errorf("cyclic %T: err = %v", v, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cyclic %T: Marshal hangs", v)
		}
	}
	// Deep but finite data within the limit is fine, and decodes.
	var deep *node
	for i := range maxDepth - 1 {
		deep = &node{V: i, Next: deep}
	}
	got := roundTrip(t, deep).(*node)
	if got.V != maxDepth-2 {
		t.Errorf("deep list head = %d", got.V)
	}
	deep = &node{Next: deep}
	deep = &node{Next: deep}
	if _, err := Marshal(deep); !errors.Is(err, ErrUnencodable) {
		t.Errorf("list over the depth limit: err = %v", err)
	}
}

func TestUnmarshalArgErrors(t *testing.T) {
	var i int
	if err := Unmarshal([]byte{tagCBOR, 1}, i); err == nil || errors.Is(err, ErrCorrupt) {
		t.Errorf("non-pointer: err = %v", err)
	}
	if err := Unmarshal([]byte{tagCBOR, 1}, (*int)(nil)); err == nil {
		t.Error("nil pointer: no error")
	}
	if err := Unmarshal([]byte{tagCBOR, 1}, nil); err == nil {
		t.Error("nil: no error")
	}
	if _, err := UnmarshalType([]byte{tagCBOR, 1}, nil); err == nil {
		t.Error("nil type: no error")
	}
}

func TestWrongType(t *testing.T) {
	data, _ := Marshal(small{"a", 1, []string{"x"}})
	var i int
	if err := Unmarshal(data, &i); !errors.Is(err, ErrCorrupt) {
		t.Errorf("struct into int: err = %v", err)
	}
	var s string
	if err := Unmarshal(data, &s); !errors.Is(err, ErrCorrupt) {
		t.Errorf("struct into string: err = %v", err)
	}
	data, _ = Marshal(-1)
	var u uint
	if err := Unmarshal(data, &u); !errors.Is(err, ErrCorrupt) {
		t.Errorf("-1 into uint: err = %v", err)
	}
	data, _ = Marshal(300)
	var b byte
	if err := Unmarshal(data, &b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("300 into byte: err = %v", err)
	}
	data, _ = Marshal([]byte("x"))
	if err := Unmarshal(data, &i); !errors.Is(err, ErrCorrupt) {
		t.Errorf("[]byte into int: err = %v", err)
	}
}

// corruptions returns truncations and single-byte alterations of data.
func corruptions(data []byte) [][]byte {
	var out [][]byte
	for n := range len(data) {
		out = append(out, data[:n])
	}
	for i := range data {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			c := bytes.Clone(data)
			c[i] ^= x
			out = append(out, c)
		}
	}
	return append(out, append(bytes.Clone(data), 0))
}

func TestCorruptNeverPanics(t *testing.T) {
	for _, v := range []any{12345, small{"n", 1, []string{"t"}}, map[string]int{"a": 1}, nested{Grid: [][]int{{1}}}} {
		data, _ := Marshal(v)
		for _, c := range corruptions(data) {
			for _, p := range []any{new(int), new(small), new(map[string]int), new(nested), new(any), new([]byte)} {
				err := Unmarshal(c, p)
				if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
					t.Errorf("Unmarshal(%x, %T): unclassified error %v", c, p, err)
				}
			}
		}
	}
}

func TestCorruptDetected(t *testing.T) {
	data, _ := Marshal(small{"n", 1, []string{"t"}})
	for n := range len(data) {
		var s small
		if err := Unmarshal(data[:n], &s); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d bytes: err = %v", n, err)
		}
	}
	var s small
	if err := Unmarshal(append(bytes.Clone(data), 0), &s); !errors.Is(err, ErrCorrupt) {
		t.Errorf("trailing byte: err = %v", err)
	}
	for _, tag := range []byte{0, 'x', 0xff} {
		c := bytes.Clone(data)
		c[0] = tag
		if err := Unmarshal(c, &s); !errors.Is(err, ErrCorrupt) {
			t.Errorf("tag %#x: err = %v", tag, err)
		}
	}
	if err := Unmarshal([]byte{tagNilBytes, 1}, new([]byte)); err == nil {
		// The fast path for *[]byte accepts it as nil; other
		// destinations must not.
		if err := Unmarshal([]byte{tagNilBytes, 1}, new(any)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("payload after nil tag: err = %v", err)
		}
	}
}

func TestHugeLengths(t *testing.T) {
	inputs := [][]byte{
		{tagCBOR, 0x9b, 0, 0, 0, 1, 0, 0, 0, 0},       // array of 2^32 elements
		{tagCBOR, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0},       // map of 2^32 pairs
		{tagCBOR, 0x5b, 0, 0, 0, 1, 0, 0, 0, 0},       // byte string of 4 GiB
		{tagCBOR, 0x7b, 0xff, 0, 0, 0, 0, 0, 0, 0},    // text string of 2^63+ bytes
		{tagCBOR, 0x9a, 0xff, 0xff, 0xff, 0xff, 0xf6}, // array of 2^32-1 elements
		{tagCBOR, 0x82, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		append([]byte{tagCBOR}, bytes.Repeat([]byte{0x81}, maxDepth+10)...),
	}
	for _, in := range inputs {
		for _, p := range []any{new(any), new([]int), new(map[string]int), new([]byte), new(string)} {
			start := time.Now()
			err := Unmarshal(in, p)
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
				t.Errorf("Unmarshal(%x, %T): err = %v", in[:min(len(in), 12)], p, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Unmarshal(%x, %T) took %v", in[:min(len(in), 12)], p, d)
			}
		}
	}
	// Lengths inside an argument list.
	args := [][]byte{
		{tagArgs, 1, tagBytes, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'},
		{tagArgs, 1, tagString, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		{tagArgs, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for _, in := range args {
		if _, err := UnmarshalArgs(in, []reflect.Type{bytesType}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("UnmarshalArgs(%x): err = %v", in, err)
		}
	}
	// allocs: a failing 10-byte input must not allocate much.
	allocs := testing.AllocsPerRun(10, func() { _ = Unmarshal(inputs[0], new(any)) })
	if allocs > 20 {
		t.Errorf("huge declared array: %v allocations", allocs)
	}
}

func TestTooLargeEncode(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 1 GiB")
	}
	big := make([]byte, MaxEncoded+1)
	if _, err := Marshal(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Marshal of %d bytes: err = %v", len(big), err)
	}
	if err := Unmarshal(big, new([]byte)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Unmarshal of %d+ bytes: err = %v", len(big), err)
	}
}

func TestConcurrent(t *testing.T) {
	// Package-level modes and pools are shared; the race detector checks.
	done := make(chan bool)
	for g := range 4 {
		go func() {
			defer func() { done <- true }()
			for i := range 200 {
				v := nested{ID: int64(g*1000 + i), Any: []any{i, "x"}}
				data, err := Marshal(v)
				if err != nil {
					t.Error(err)
					return
				}
				var got nested
				if err := Unmarshal(data, &got); err != nil || got.ID != v.ID {
					t.Errorf("got %v, %v", got.ID, err)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

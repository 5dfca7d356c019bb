package codec

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// fuzzTargets are the destination types every fuzz input is decoded into.
func fuzzTargets() []any {
	return []any{
		new(int), new(int8), new(uint64), new(float64), new(bool), new(string),
		new([]byte), new(any), new(small), new(nested), new(map[string]int),
		new([]int), new([4]byte), new(time.Time), new(point), new(*node), new(blob),
	}
}

func fuzzSeeds() []any {
	return []any{
		0, -1, int8(-128), uint64(1 << 63), 3.25, true, "", "s", []byte{}, []byte(nil), []byte("b"),
		small{"n", 1, []string{"t"}}, map[string]int{"a": 1}, []int{1, 2},
		nested{ID: 1, Items: []small{{}}, ByName: map[string]*inner{"x": {1, 2}}, Any: []any{1, "x"}},
		time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC), point{1, 2}, &node{1, &node{2, nil}},
		map[any]any{1: "x", "k": []any{nil}}, nil,
	}
}

func checkDecodeErr(t *testing.T, err error) {
	if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
		t.Fatalf("unclassified error: %v", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, v := range fuzzSeeds() {
		data, err := Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range fuzzTargets() {
			err := Unmarshal(data, p)
			checkDecodeErr(t, err)
			if err != nil {
				continue
			}
			// Whatever decodes must encode again, and that encoding
			// must decode.
			v := reflect.ValueOf(p).Elem().Interface()
			again, err := Marshal(v)
			if err != nil {
				if errors.Is(err, ErrUnencodable) {
					continue // e.g. a cbor.Tag with unencodable content
				}
				t.Fatalf("re-Marshal %T: %v", v, err)
			}
			if _, err := UnmarshalType(again, reflect.TypeOf(p).Elem()); err != nil {
				t.Fatalf("re-Unmarshal %T from %x: %v", v, again, err)
			}
		}
	})
}

func FuzzUnmarshalArgs(f *testing.F) {
	seeds := fuzzSeeds()
	for i := range seeds {
		vals := []reflect.Value{reflect.ValueOf(seeds[i]), reflect.ValueOf("s"), reflect.ValueOf([]byte("b"))}
		data, err := MarshalArgs(vals)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	typeSets := [][]reflect.Type{
		{reflect.TypeFor[any](), reflect.TypeFor[string](), reflect.TypeFor[[]byte]()},
		{reflect.TypeFor[small](), reflect.TypeFor[any](), reflect.TypeFor[any]()},
		{reflect.TypeFor[int](), reflect.TypeFor[blob](), reflect.TypeFor[string]()},
		{reflect.TypeFor[[]byte]()},
		nil,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, types := range typeSets {
			vals, err := UnmarshalArgs(data, types)
			checkDecodeErr(t, err)
			if err == nil && len(vals) != len(types) {
				t.Fatalf("got %d values for %d types", len(vals), len(types))
			}
		}
	})
}

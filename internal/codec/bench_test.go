package codec

import (
	"reflect"
	"testing"
)

var (
	benchStruct = small{Name: "worker-7", N: 42, Tags: []string{"a", "bb", "ccc"}}
	benchBytes  = make([]byte, 4096)
)

func benchMarshal(b *testing.B, v any) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(v); err != nil {
			b.Fatal(err)
		}
	}
}

func benchUnmarshal(b *testing.B, v any) {
	data, err := Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	t := reflect.TypeOf(v)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Unmarshal(data, reflect.New(t).Interface()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalInt(b *testing.B)      { benchMarshal(b, 123456) }
func BenchmarkMarshalStruct(b *testing.B)   { benchMarshal(b, benchStruct) }
func BenchmarkMarshalBytes4K(b *testing.B)  { benchMarshal(b, benchBytes) }
func BenchmarkUnmarshalInt(b *testing.B)    { benchUnmarshal(b, 123456) }
func BenchmarkUnmarshalStruct(b *testing.B) { benchUnmarshal(b, benchStruct) }
func BenchmarkUnmarshalBytes4K(b *testing.B) {
	benchUnmarshal(b, benchBytes)
}

func BenchmarkAppendMarshalStruct(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendMarshal(buf[:0], benchStruct); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkArgsRoundTrip(b *testing.B) {
	args := []reflect.Value{reflect.ValueOf(7), reflect.ValueOf("name"), reflect.ValueOf(benchBytes[:64])}
	types := []reflect.Type{reflect.TypeFor[int](), reflect.TypeFor[string](), reflect.TypeFor[[]byte]()}
	b.ReportAllocs()
	for b.Loop() {
		data, err := MarshalArgs(args)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := UnmarshalArgs(data, types); err != nil {
			b.Fatal(err)
		}
	}
}

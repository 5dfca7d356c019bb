// Package codec encodes the values that cross process boundaries:
// function arguments and results, queue items and pipe messages.
//
// # Format
//
// Every Marshal output starts with a one-byte tag. A []byte or string is
// the tag followed by its raw bytes; it skips reflection and CBOR entirely,
// because bulk data is the common payload and must cost no more than a
// copy. A nil []byte has a tag of its own so that nil and empty stay
// distinct. Every other value is the tag followed by one CBOR data item
// (RFC 8949), produced by github.com/fxamacker/cbor/v2 in core
// deterministic mode, with time.Time as an RFC 3339 string under tag 0.
//
// A MarshalArgs message is a header tag, the number of values as a
// uvarint, and then each value: a tag and a uvarint length and the raw
// bytes for []byte and string, or a tag and a (self-delimiting) CBOR item
// for the rest.
//
// Only exported struct fields are encoded; unexported fields are skipped
// without error and are left at their zero value by the decoder. Struct
// fields are keyed by name, so sender and receiver may add or drop fields
// independently. Types implementing cbor.Marshaler or
// encoding.BinaryMarshaler, and the matching unmarshalers, are encoded by
// their methods.
//
// Decoding treats data as untrusted. Nesting, array lengths and map sizes
// are bounded, indefinite lengths are refused, and a declared length is
// checked against the bytes actually present before anything is allocated,
// so a few bytes claiming a 4 GiB string fail at once. The encoder refuses
// values nested deeper than the decoder accepts, which also turns cyclic
// data into an error rather than a stack overflow.
//
// # Choice of codec
//
// The codec was chosen by measurement. CBOR, encoding/gob, encoding/json
// and vmihailenco/msgpack/v5 v5.4.1 each encoded and decoded, in a
// throwaway module, an int, a struct {Name string; N int; Tags []string},
// a map[string]int of 10 entries, a 4 KiB []byte and a []int of 1000.
// Gob used a new Encoder and Decoder per value, since each message must
// stand alone. Go 1.26.8, linux/amd64, 2 cores, median of 3 runs of
//
//	go test -run='^$' -bench=. -benchtime=200ms -count=3
//
// in ns/op, with allocs/op in brackets and the encoded size in bytes:
//
//	                   cbor         gob           json          msgpack
//	Marshal int        22 (1)       447 (11)      45 (1)        56 (2)
//	Marshal struct     88 (1)       1402 (19)     139 (1)       177 (2)
//	Marshal map10      613 (1)      1431 (38)     1110 (22)     975 (23)
//	Marshal 4KiB       734 (1)      2134 (12)     2920 (1)      839 (3)
//	Marshal ints1000   4744 (1)     8649 (25)     16433 (1)     20750 (9)
//	Unmarshal int      34 (1)       630 (18)      105 (2)       54 (2)
//	Unmarshal struct   241 (6)      8837 (171)    825 (12)      329 (6)
//	Unmarshal map10    763 (17)     8109 (169)    2062 (29)     1331 (36)
//	Unmarshal 4KiB     803 (2)      2450 (21)     21334 (3)     922 (3)
//	Unmarshal ints1000 16358 (3)    14797 (152)   78727 (15)    29587 (7)
//	size int/struct    5/34         7/94          6/50          5/33
//	size map10/4KiB    79/4099      98/4104       118/5466      79/4099
//	size ints1000      4983         4015          7856          4983
//
// CBOR is fastest in every case but decoding the []int (where gob, with
// its packed integers, is 10% faster but allocates 50 times as often),
// allocates least, and ties msgpack for size. Gob pays heavily for sending
// type descriptions with every standalone message; JSON is slow on bytes
// and integers and loses Go types (uint64, []byte, time.Time). Beyond
// speed, fxamacker/cbor is fuzzed, has decode limits meant for untrusted
// input, and supports BinaryMarshaler, which the library's handle types
// implement. The []byte and string fast path makes the 4 KiB cases a
// plain copy. This package's own benchmarks, including its tag byte,
// pooled buffer and depth check, measured 41 ns (1 alloc) to Marshal an
// int, 108 ns (1) for the struct and 673 ns (1) for 4 KiB, and 58 ns,
// 297 ns and 880 ns to Unmarshal them (`go test -bench=. ./internal/codec/`).
package codec

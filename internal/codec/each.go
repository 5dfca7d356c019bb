package codec

import (
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// UnmarshalEach decodes data, the Marshal encoding of a slice or array,
// into dst, a slice of as many elements, one element at a time: an element
// that does not decode (a failing UnmarshalCBOR method, a value that does
// not fit the element type) is left zero and has its error in errs, while
// the others are decoded. It is the fallback for a whole-slice Unmarshal
// that failed, when the caller must know which elements are at fault.
//
// errs has one entry per element, nil for those that decoded. err is for
// data that is not a CBOR array of dst.Len() elements, or a dst that is not
// a slice; errs is then nil. Errors are as for Unmarshal.
func UnmarshalEach(data []byte, dst reflect.Value) (errs []error, err error) {
	if dst.Kind() != reflect.Slice {
		return nil, fmt.Errorf("codec: UnmarshalEach needs a slice, got %v", dst.Kind())
	}
	if err := checkSize(data); err != nil {
		return nil, err
	}
	if data[0] != tagCBOR {
		return nil, fmt.Errorf("%w: tag %#02x where a CBOR array was expected", ErrCorrupt, data[0])
	}
	// Every well-formed item decodes as a RawMessage, so this splits the
	// array without judging the elements.
	var raws []cbor.RawMessage
	if err := decodeCBOR(data[1:], reflect.ValueOf(&raws)); err != nil {
		return nil, err
	}
	if len(raws) != dst.Len() {
		return nil, fmt.Errorf("%w: array of %d elements, want %d", ErrCorrupt, len(raws), dst.Len())
	}
	errs = make([]error, len(raws))
	for i, raw := range raws {
		e := dst.Index(i)
		if err := decodeCBOR(raw, e.Addr()); err != nil {
			e.SetZero()
			errs[i] = err
		}
	}
	return errs, nil
}

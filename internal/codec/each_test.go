package codec

import (
	"errors"
	"reflect"
	"testing"
)

func TestUnmarshalEach(t *testing.T) {
	// Elements that the whole-slice decode would reject together: a
	// string where an int belongs, and a point whose own decoding fails.
	data, err := Marshal([]any{1, "two", 3})
	if err != nil {
		t.Fatal(err)
	}
	var whole []int
	if err := Unmarshal(data, &whole); err == nil {
		t.Fatal("a string decoded as an int")
	}
	dst := []int{7, 7, 7}
	errs, err := UnmarshalEach(data, reflect.ValueOf(dst))
	if err != nil {
		t.Fatal(err)
	}
	if dst[0] != 1 || dst[1] != 0 || dst[2] != 3 {
		t.Fatalf("decoded %v, want [1 0 3]", dst)
	}
	if errs[0] != nil || !errors.Is(errs[1], ErrCorrupt) || errs[2] != nil {
		t.Fatalf("errors %v, want one ErrCorrupt for element 1", errs)
	}

	data, err = Marshal([]any{point{1, 2}, "P1,x"})
	if err != nil {
		t.Fatal(err)
	}
	points := make([]point, 2)
	if errs, err = UnmarshalEach(data, reflect.ValueOf(points)); err != nil {
		t.Fatal(err)
	}
	if points[0] != (point{1, 2}) || errs[0] != nil || errs[1] == nil {
		t.Fatalf("points %v, errors %v", points, errs)
	}

	// Not an array of as many elements: an error for the whole.
	for _, bad := range []any{[]int{1, 2}, 5, []byte{1, 2, 3}, "abc"} {
		data, err := Marshal(bad)
		if err != nil {
			t.Fatal(err)
		}
		if errs, err := UnmarshalEach(data, reflect.ValueOf(make([]int, 3))); err == nil || errs != nil {
			t.Fatalf("%#v: errs %v, err %v; want an error for the whole", bad, errs, err)
		}
	}
	if _, err := UnmarshalEach(nil, reflect.ValueOf(make([]int, 0))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("empty data: %v", err)
	}
	if _, err := UnmarshalEach(data, reflect.ValueOf(3)); err == nil {
		t.Fatal("UnmarshalEach into an int")
	}
}

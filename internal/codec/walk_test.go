package codec

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

// dagNode is a node of a graph that shares nodes: Left and Right are often
// the same node.
type dagNode struct {
	Left, Right *dagNode
	Val         any
}

// ladder returns n nodes, each pointing twice to the next: n distinct
// nodes whose encoding, which writes a shared node out at each reference,
// has 2^n leaves.
func ladder(n int) *dagNode {
	var top *dagNode
	for i := range n {
		top = &dagNode{Left: top, Right: top, Val: i}
	}
	return top
}

// TestSharedPointersLinear: checking a value whose pointers are shared
// costs a walk of each distinct node once. An 18-node ladder (2^18 leaves
// encoded) is accepted and round-trips; a 29-node one, whose encoding would
// exceed MaxEncoded, and a 1000-node one, are refused with ErrTooLarge at
// once (the old check walked every path, and did not return for 29 nodes).
func TestSharedPointersLinear(t *testing.T) {
	msg, err := Marshal(ladder(18))
	if err != nil {
		t.Fatalf("21-node ladder: %v", err)
	}
	var back dagNode
	if err := Unmarshal(msg, &back); err != nil {
		t.Fatal(err)
	}
	if back.Val != uint64(17) || back.Left == nil || back.Left.Val != uint64(16) {
		t.Fatalf("decoded ladder starts %v, %v", back.Val, back.Left)
	}
	for _, n := range []int{29, 1000} {
		if _, err := Marshal(ladder(n)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%d-node ladder: Marshal = %v, want ErrTooLarge", n, err)
		}
	}
	// A value shared through slices and maps is counted the same way.
	shared := []any{1, 2, 3}
	wide := make([]any, 0, 64)
	for range 64 {
		wide = append(wide, map[string]any{"a": shared, "b": shared})
	}
	if _, err := Marshal(wide); err != nil {
		t.Fatalf("shared slice: %v", err)
	}
}

// TestCheckCycleStillRefused: a cycle is still refused, now as one.
func TestCheckCycleStillRefused(t *testing.T) {
	n := &dagNode{}
	n.Left = n
	if _, err := Marshal(n); !errors.Is(err, ErrUnencodable) {
		t.Fatalf("cyclic value: %v", err)
	}
	var x any
	x = &x
	if _, err := Marshal(x); !errors.Is(err, ErrUnencodable) {
		t.Fatalf("self-pointing interface: %v", err)
	}
}

// TestCheckHonoursContext: a check that ctx ended before is abandoned with
// ctx's error.
func TestCheckHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	big := make([]any, 100000)
	for i := range big {
		big[i] = &dagNode{Val: i}
	}
	if _, err := AppendMarshalContext(ctx, nil, big); !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendMarshalContext with a cancelled ctx = %v", err)
	}
	if _, err := AppendMarshalContext(context.Background(), nil, big); err != nil {
		t.Fatal(err)
	}
}

// TestCheckSmallAllocatesNothing: checking a small value of a dynamic type,
// as Put does for every item, allocates nothing (for values without maps,
// whose iteration allocates).
func TestCheckSmallAllocatesNothing(t *testing.T) {
	v := reflect.ValueOf([]any{1, "x", []any{2.5}, &dagNode{Val: 2, Left: &dagNode{}}})
	if n := testing.AllocsPerRun(100, func() {
		if err := checkEncodable(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per check", n)
	}
}

package ring

import (
	"errors"
	"sync/atomic"
	"testing"
)

// TestFreedCellAtHeadIsCorrupt: a cell at head that reads as free for the
// next lap, while head has not moved past it, cannot be a taken message
// (a consumer moves head past a message before it frees the cell), so Get
// reports the ring corrupt rather than pass over the message silently.
// One wrong byte in a cell's sequence number makes that state (seed
// 1796169912740308669 of TestQueueRingScribble found it).
func TestFreedCellAtHeadIsCorrupt(t *testing.T) {
	a := newArena(t, 1<<20)
	off, err := New(a, 8)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(a, off)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := r.TryPut([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s := r.root
	c := s.cell(1)
	atomic.StoreUint64(&c.state, mkState(uint32(1+s.capacity), 0))
	if m, err := r.TryGet(nil); err != nil || m[0] != 0 {
		t.Fatalf("first message: %v, %v", m, err)
	}
	if m, err := r.TryGet(nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("after the damaged cell: %v, %v; want ErrCorrupt", m, err)
	}
}

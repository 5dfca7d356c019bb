package shm

import (
	"errors"
	"testing"
)

// TestAllocToFreeFrom checks that the recording variants store and clear
// the word they are given, refuse bad words, and leave a zero word alone.
func TestAllocToFreeFrom(t *testing.T) {
	a := newArena(t, MinSize)
	rec, err := a.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	w := a.Uint64(rec + 8)
	off, err := a.AllocTo(100, rec+8)
	if err != nil {
		t.Fatal(err)
	}
	if *w != uint64(off) || a.Stats().Allocs != 2 {
		t.Fatalf("AllocTo recorded %#x, want %#x; %d allocations", *w, uint64(off), a.Stats().Allocs)
	}
	if err := a.FreeFrom(rec + 8); err != nil {
		t.Fatal(err)
	}
	if *w != 0 || a.Stats().Allocs != 1 {
		t.Fatalf("FreeFrom left %#x in the word; %d allocations", *w, a.Stats().Allocs)
	}
	if err := a.FreeFrom(rec + 8); err != nil || a.Stats().Allocs != 1 {
		t.Fatalf("FreeFrom of a zero word: %v, %d allocations", err, a.Stats().Allocs)
	}
	if _, err := a.AllocTo(64, rec+3); err == nil {
		t.Fatal("AllocTo to an unaligned word succeeded")
	}
	if err := a.FreeFrom(0); err == nil {
		t.Fatal("FreeFrom of offset 0 succeeded")
	}
	*w = uint64(rec) + 64 // not a live block
	if err := a.FreeFrom(rec + 8); !errors.Is(err, ErrBadOffset) || *w == 0 {
		t.Fatalf("FreeFrom of a word naming no block: %v, word %#x", err, *w)
	}
	mustCheck(t, a)
}

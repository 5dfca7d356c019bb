package shm

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// The benchmarks run in two states of the arena. "steady" keeps a 64-byte
// block allocated so that the benchmark's block is its buddy and never
// merges, as in an arena in use; "empty" starts with an empty 64 MiB arena,
// so every Alloc splits a block at each of 20 orders and every Free merges
// them all back: the worst case.
var benchStates = []struct {
	name string
	pin  bool
}{{"steady", true}, {"empty", false}}

func BenchmarkAllocFree(b *testing.B) {
	for _, st := range benchStates {
		b.Run(st.name, func(b *testing.B) {
			a := newArena(b, 64<<20)
			if st.pin {
				if _, err := a.Alloc(64); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				off, err := a.Alloc(64)
				if err != nil {
					b.Fatal(err)
				}
				if err := a.Free(off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAllocFreeParallel(b *testing.B) {
	for _, st := range benchStates {
		b.Run(st.name, func(b *testing.B) {
			a := newArena(b, 64<<20)
			if st.pin {
				if _, err := a.Alloc(64); err != nil {
					b.Fatal(err)
				}
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					off, err := a.Alloc(64)
					if err != nil {
						b.Error(err)
						return
					}
					if err := a.Free(off); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkScrub compares the two ways Free can clear a block: writing
// zeros, or punching a hole in the memfd (which also returns the memory).
// "used" blocks had every page written since they were last cleared, and a
// hole then costs a page fault per page when the block is used again, which
// is counted; "idle" blocks were never written, and writing zeros then
// costs the faults and commits the memory. It is what punchMin is based on.
func BenchmarkScrub(b *testing.B) {
	a := newArena(b, 16<<20)
	punch := func(off Offset, size int) {
		if err := unix.Fallocate(a.Fd(), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(size)); err != nil {
			b.Fatal(err)
		}
	}
	for _, size := range []int{4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20} {
		off, err := a.Alloc(size)
		if err != nil {
			b.Fatal(err)
		}
		mem := a.Bytes(off, size)
		use := func() {
			for i := 0; i < size; i += 4096 {
				mem[i] = 1
			}
		}
		b.Run(fmt.Sprintf("used/clear/%dK", size>>10), func(b *testing.B) {
			for b.Loop() {
				use()
				clear(mem)
			}
		})
		b.Run(fmt.Sprintf("used/punch/%dK", size>>10), func(b *testing.B) {
			for b.Loop() {
				use()
				punch(off, size)
			}
		})
		b.Run(fmt.Sprintf("idle/clear/%dK", size>>10), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				punch(off, size)
				b.StartTimer()
				clear(mem)
			}
		})
		b.Run(fmt.Sprintf("idle/punch/%dK", size>>10), func(b *testing.B) {
			for b.Loop() {
				punch(off, size)
			}
		})
		if err := a.Free(off); err != nil {
			b.Fatal(err)
		}
	}
}

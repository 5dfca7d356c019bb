package atom

import (
	"sync"
	"testing"
	"unsafe"
)

// TestEverySizeAndPlace runs each operation on a value of every size at
// every aligned place in a 16-byte buffer, and checks that the bytes around
// it are untouched.
func TestEverySizeAndPlace(t *testing.T) {
	for _, size := range []uintptr{1, 2, 4, 8} {
		for off := uintptr(0); off < 16; off += size {
			var buf [2]uint64 // 8-byte aligned
			base := unsafe.Pointer(&buf)
			bytes := unsafe.Slice((*byte)(base), 16)
			for i := range bytes {
				bytes[i] = 0xA5
			}
			p := unsafe.Add(base, off)
			mask := uint64(1)<<(size*8) - 1
			if size == 8 {
				mask = ^uint64(0)
			}
			v := 0x0102030405060708 & mask
			Store(p, size, v)
			if got := Load(p, size); got != v {
				t.Fatalf("size %d at %d: Load after Store = %#x, want %#x", size, off, got, v)
			}
			if CompareAndSwap(p, size, v+1, 0) {
				t.Fatalf("size %d at %d: CompareAndSwap with a wrong old value succeeded", size, off)
			}
			if !CompareAndSwap(p, size, v, mask) {
				t.Fatalf("size %d at %d: CompareAndSwap with the right old value failed", size, off)
			}
			if got := Add(p, size, 2); got != 1 {
				t.Fatalf("size %d at %d: Add(2) to all ones = %#x, want 1 (wrapped)", size, off, got)
			}
			if got := Add(p, size, ^uint64(0)); got != 0 { // -1
				t.Fatalf("size %d at %d: Add(-1) to 1 = %#x, want 0", size, off, got)
			}
			if old := Swap(p, size, v); old != 0 || Load(p, size) != v {
				t.Fatalf("size %d at %d: Swap returned %#x, left %#x", size, off, old, Load(p, size))
			}
			for i, b := range bytes {
				if uintptr(i) >= off && uintptr(i) < off+size {
					continue
				}
				if b != 0xA5 {
					t.Fatalf("size %d at %d: byte %d changed to %#x", size, off, i, b)
				}
			}
		}
	}
}

// TestNeighboursDoNotLoseUpdates has one goroutine per byte (and per
// 2-byte value) of one word, each incrementing its own value by Add, Store
// and CompareAndSwap in turn: a write of the whole word that did not fail
// on a neighbour's change would lose the neighbour's update.
func TestNeighboursDoNotLoseUpdates(t *testing.T) {
	const n = 200000
	for _, size := range []uintptr{1, 2} {
		var w uint64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for off := uintptr(0); off < 8; off += size {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := unsafe.Add(unsafe.Pointer(&w), off)
				<-start
				for i := range n {
					switch i % 3 {
					case 0:
						Add(p, size, 1)
					case 1: // this goroutine is the only writer of its value
						Store(p, size, Load(p, size)+1)
					case 2:
						for v := Load(p, size); !CompareAndSwap(p, size, v, v+1); v = Load(p, size) {
						}
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		for off := uintptr(0); off < 8; off += size {
			want := uint64(n) & (1<<(size*8) - 1)
			if got := Load(unsafe.Add(unsafe.Pointer(&w), off), size); got != want {
				t.Errorf("size %d at %d: %d after %d increments, want %d", size, off, got, n, want)
			}
		}
	}
}

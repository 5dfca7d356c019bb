package shm

import "fmt"

// checkFreeZero verifies that every free block is zero past its links, which
// is what lets Alloc hand out zeroed memory without clearing it. It reads
// every free byte, so it is for small arenas in tests.
func (a *Arena) checkFreeZero() error {
	a.lock()
	defer a.unlock()
	for b := a.heapOff; b < a.heapOff+a.heapSize; {
		t := a.tag(b)
		if t&tagState == 0 {
			return fmt.Errorf("bad block header %#x at %#x", t, b)
		}
		size := uint64(1) << (t & orderMask)
		if t&tagState == tagFree {
			for i, c := range a.mem[b+16 : b+size] {
				if c != 0 {
					return fmt.Errorf("free block at %#x has byte %#x at offset %d", b, c, 16+i)
				}
			}
		}
		b += size
	}
	return nil
}

// blockInfo describes one block, for tests comparing allocator states.
type blockInfo struct {
	Off Offset
	Tag byte
}

// blocks lists the heap's blocks in address order, with the counters, as a
// comparable picture of the allocator state (free-list order aside).
func (a *Arena) blocks() ([]blockInfo, [2]uint64) {
	a.lock()
	defer a.unlock()
	var bs []blockInfo
	for b := a.heapOff; b < a.heapOff+a.heapSize; {
		t := a.tag(b)
		bs = append(bs, blockInfo{Offset(b), t})
		if t&tagState == 0 {
			break
		}
		b += 1 << (t & orderMask)
	}
	return bs, [2]uint64{a.get(hdrInUse), a.get(hdrAllocs)}
}

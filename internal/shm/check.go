package shm

import (
	"errors"
	"fmt"
)

// check verifies the allocator's invariants: the tags partition the heap
// into aligned blocks, no two free buddies are left unmerged, the free lists
// hold exactly the free blocks with consistent back links, and the counters
// match the allocated blocks. It takes the lock, so it also recovers from a
// holder that died.
func (a *Arena) check() error {
	a.lock()
	defer a.unlock()
	var errs []error
	fail := func(format string, args ...any) bool {
		errs = append(errs, fmt.Errorf(format, args...))
		return len(errs) < 10
	}
	if n := a.get(hdrJournalLen); n != 0 {
		fail("journal holds %d entries after recovery", n)
	}

	var free [64]int
	var inUse, allocs uint64
	end := a.heapOff + a.heapSize
	for b := a.heapOff; b < end; {
		t := a.tag(b)
		order := uint(t & orderMask)
		if t&tagState == 0 || t&tagState == tagState || order < minOrder || order > a.maxOrder ||
			(b-a.heapOff)&(1<<order-1) != 0 {
			fail("bad block header %#x at %#x", t, b)
			break
		}
		size := uint64(1) << order
		for g := b + minBlock; g < b+size; g += minBlock {
			if t := a.tag(g); t != 0 {
				if !fail("tag %#x at %#x inside the %d-byte block at %#x", t, g, size, b) {
					return errors.Join(errs...)
				}
				break
			}
		}
		if t&tagState == tagFree {
			free[order]++
			buddy := a.heapOff + ((b - a.heapOff) ^ size)
			if order < a.maxOrder && buddy > b && a.tag(buddy) == t {
				fail("free buddies of %d bytes at %#x and %#x not merged", size, b, buddy)
			}
		} else {
			inUse += size
			allocs++
		}
		b += size
	}
	if got := a.get(hdrInUse); got != inUse {
		fail("in-use counter %d, allocated blocks hold %d bytes", got, inUse)
	}
	if got := a.get(hdrAllocs); got != allocs {
		fail("allocation counter %d, %d blocks allocated", got, allocs)
	}

	for order := uint(0); order < 64; order++ {
		n, prev := 0, uint64(0)
		for b := a.get(a.head(order)); b != 0; b = a.get(b + linkNext) {
			if n++; n > free[order] {
				fail("free list of order %d holds more than the %d free blocks of that order (cycle or stray block %#x)", order, free[order], b)
				break
			}
			if b < a.heapOff || b >= end || (b-a.heapOff)%minBlock != 0 {
				fail("free list of order %d links to %#x, outside the heap", order, b)
				break
			}
			if t := a.tag(b); t != tagFree|byte(order) {
				fail("block %#x on free list of order %d has header %#x", b, order, t)
			}
			if p := a.get(b + linkPrev); p != prev {
				fail("block %#x on free list of order %d links back to %#x, not %#x", b, order, p, prev)
			}
			prev = b
		}
		if n < free[order] {
			fail("free list of order %d holds %d of the %d free blocks of that order", order, n, free[order])
		}
	}
	return errors.Join(errs...)
}

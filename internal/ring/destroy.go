package ring

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/multiproc/mp/internal/shm"
)

// Destroy frees the ring at off and every block it owns: the out-of-line
// blocks of the messages still in it, the spare blocks kept in its cells,
// and the ring's own block, last. It is for when no process uses the ring
// any more (no handle on it is used again, in any process).
//
// Destroy is restartable: a process killed at any point inside it leaves
// the ring's block live, with the blocks not yet freed still recorded in
// it, and a second call with the same offset frees the rest; no block is
// freed twice or leaked. Once the ring's block itself has been freed, off
// is no longer a ring: a second call then fails with an error wrapping
// ErrBadRing and shm.ErrBadOffset, unless the block has been allocated
// again meanwhile, which is why a caller that may be killed between
// Destroy's return and its own record that the ring is gone should use
// DestroyFrom.
//
// Destroy fails with an error wrapping ErrBadRing, and frees nothing, if
// off is not a ring. If the ring records blocks that are not live arena
// blocks (its memory was corrupted), it forgets them, frees the rest, and
// returns an error wrapping ErrCorrupt.
func Destroy(a *shm.Arena, off shm.Offset) error { return destroy(a, off, 0) }

// DestroyFrom is Destroy of the ring whose offset is stored in the 8-byte
// arena word at src, which is zeroed in the same step as the ring's block
// is freed: a caller killed at any point leaves src either naming the ring,
// for a second call to finish destroying, or zero, which is a destroyed
// ring (DestroyFrom does nothing and returns nil).
func DestroyFrom(a *shm.Arena, src shm.Offset) error {
	if src == 0 || src%8 != 0 {
		return fmt.Errorf("ring: DestroyFrom: bad source %#x", uint64(src))
	}
	off := shm.Offset(atomic.LoadUint64(a.Uint64(src)))
	if off == 0 {
		return nil
	}
	return destroy(a, off, src)
}

func destroy(a *shm.Arena, off, src shm.Offset) error {
	mem, err := ringBlock(a, off)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRing, err)
	}
	var bad int
	switch m := atomic.LoadUint64(u64At(mem, hdrMagic)); m {
	case magic:
		if _, _, err := segGeometry(mem); err != nil {
			return fmt.Errorf("%w: at %#x: %v", ErrBadRing, uint64(off), err)
		}
		// Free the segments after the first, last first, each with
		// FreeFrom on the link to it: a killed Destroy leaves a chain
		// whose last segment is the one it was freeing.
		for {
			link, last, lastMem, err := lastSegment(a, off, mem)
			if err != nil {
				return err
			}
			if link == 0 {
				break
			}
			if lastMem == nil {
				// Not a live block: a corrupt link, forgotten.
				atomic.StoreUint64(a.Uint64(link), 0)
				bad++
				continue
			}
			n, err := freeOwned(a, last, lastMem)
			if bad += n; err != nil {
				return err
			}
			hook(hookDestroy)
			if err := a.FreeFrom(link); err != nil {
				return fmt.Errorf("ring: destroy: %w", err)
			}
		}
		n, err := freeOwned(a, off, mem)
		if bad += n; err != nil {
			return err
		}
	case 0:
		// A live block with a zero magic is a ring whose Destroy was
		// killed while the allocator was clearing it, which happens after
		// every block the ring owned was freed.
	default:
		return fmt.Errorf("%w: bad magic at %#x", ErrBadRing, uint64(off))
	}
	hook(hookDestroy)
	if src != 0 {
		err = a.FreeFrom(src)
	} else {
		err = a.Free(off)
	}
	if err != nil {
		return fmt.Errorf("ring: destroy: %w", err)
	}
	hook(hookDestroyed)
	if bad > 0 {
		return fmt.Errorf("%w: the ring at %#x recorded %d blocks that were not arena blocks", ErrCorrupt, uint64(off), bad)
	}
	return nil
}

// ringBlock returns the block at off, which must be live and big enough
// for a segment header.
func ringBlock(a *shm.Arena, off shm.Offset) ([]byte, error) {
	size, err := a.BlockSize(off)
	if err != nil {
		return nil, err
	}
	if size < hdrSize {
		return nil, fmt.Errorf("block of %d bytes at %#x", size, uint64(off))
	}
	return a.Bytes(off, size), nil
}

// segGeometry returns the capacity and cell size a segment's header
// records, checked against its block.
func segGeometry(mem []byte) (c, cellSize uint64, err error) {
	c = uint64(atomic.LoadUint32(u32At(mem, hdrCap)))
	cellSize = uint64(atomic.LoadUint32(u32At(mem, hdrCellSize)))
	if !validGeometry(c, cellSize, len(mem)) {
		return 0, 0, fmt.Errorf("corrupt header (capacity %d, cell size %d, block %d bytes)", c, cellSize, len(mem))
	}
	return c, cellSize, nil
}

// lastSegment follows the links from the first segment, at off, to the
// last, and returns the offset of the word that links to it (0 if the
// first is the last), its offset, and its block: nil if the link is not a
// live block.
func lastSegment(a *shm.Arena, off shm.Offset, mem []byte) (link, last shm.Offset, lastMem []byte, err error) {
	last = off
	for i := 0; ; i++ {
		if i == maxSegments {
			return 0, 0, nil, fmt.Errorf("%w: more than %d segments at %#x", ErrCorrupt, maxSegments, uint64(off))
		}
		next := shm.Offset(atomic.LoadUint64(u64At(mem, hdrNext)))
		if next == 0 {
			return link, last, mem, nil
		}
		link = last + hdrNext
		nmem, err := ringBlock(a, next)
		if err != nil || next == off || next == last {
			return link, next, nil, nil
		}
		if m := atomic.LoadUint64(u64At(nmem, hdrMagic)); m != magic {
			// Zero: a segment whose maker died before laying it out, or
			// whose Destroy died while the allocator cleared it; it owns
			// nothing. Anything else: not a segment, not to be freed.
			if m != 0 {
				return link, next, nil, nil
			}
			return link, next, nmem[:hdrSize], nil
		}
		last, mem = next, nmem
	}
}

// freeOwned frees the out-of-line and spare blocks that the segment at off
// records, each with FreeFrom on the word that records it, and returns
// how many recorded blocks were not live blocks (forgotten, not freed).
func freeOwned(a *shm.Arena, off shm.Offset, mem []byte) (bad int, err error) {
	if atomic.LoadUint64(u64At(mem, hdrMagic)) != magic {
		return 0, nil
	}
	c, cellSize, gerr := segGeometry(mem)
	if gerr != nil {
		return 1, nil // what its cells record cannot be trusted
	}
	for i := range c {
		base := hdrSize + i*cellSize
		for _, w := range [2]uint64{base + 16, base + 24} { // ool, spare
			if atomic.LoadUint64(u64At(mem, w)) == 0 {
				continue
			}
			hook(hookDestroy)
			if err := a.FreeFrom(off + shm.Offset(w)); err != nil {
				if !errors.Is(err, shm.ErrBadOffset) {
					return bad, fmt.Errorf("ring: destroy: %w", err)
				}
				// Not a block: forget it (nothing to free twice).
				atomic.StoreUint64(u64At(mem, w), 0)
				bad++
			}
		}
	}
	return bad, nil
}

// Drain takes every message left in the ring, as Get does, and calls f
// with each one in place (valid only until f returns), then returns how
// many it took. It first releases the cells of processes that died
// holding them (see Reclaim). It is for an owner about to Destroy the ring
// that must dispose of what the messages refer to. Each message is seen
// at most once: a process killed inside Drain loses the message it is
// taking, which a second Drain does not see again. It stops at the first
// corrupt cell and returns an error wrapping ErrCorrupt (a second call
// carries on past it).
func (r *Ring) Drain(f func(msg []byte)) (int, error) {
	r.Reclaim()
	n := 0
	copyOut := func(dst, msg []byte) []byte {
		f(msg)
		return dst
	}
	for {
		_, err := r.TryGetWith(nil, copyOut)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrEmpty) || errors.Is(err, ErrClosed):
			return n, nil
		default:
			return n, err
		}
	}
}

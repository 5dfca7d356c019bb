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
	size, err := a.BlockSize(off)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRing, err)
	}
	if size < hdrSize {
		return fmt.Errorf("%w: block of %d bytes at %#x", ErrBadRing, size, uint64(off))
	}
	mem := a.Bytes(off, size)
	var bad int
	switch m := atomic.LoadUint64(u64At(mem, hdrMagic)); m {
	case magic:
		c := uint64(atomic.LoadUint32(u32At(mem, hdrCap)))
		cellSize := uint64(atomic.LoadUint32(u32At(mem, hdrCellSize)))
		if !validGeometry(c, cellSize, size) {
			return fmt.Errorf("%w: corrupt header at %#x (capacity %d, cell size %d, block %d bytes)",
				ErrBadRing, uint64(off), c, cellSize, size)
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
						return fmt.Errorf("ring: destroy: %w", err)
					}
					// Not a block: forget it (nothing to free twice).
					atomic.StoreUint64(u64At(mem, w), 0)
					bad++
				}
			}
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

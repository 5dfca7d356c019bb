package shm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"golang.org/x/sys/unix"
)

// Alloc returns a zeroed, 64-byte aligned block of at least n bytes; its
// usable size is n rounded up to a power of two, and at least 64 (see
// BlockSize). It fails for n <= 0, with an error wrapping ErrNoSpace when
// no free block is big enough, and with one wrapping ErrCorrupt when the
// allocator's metadata was found damaged (nothing is then changed).
func (a *Arena) Alloc(n int) (Offset, error) { return a.alloc(nil, n, 0) }

// AllocContext is Alloc that gives up waiting for the allocator, and
// returns ctx.Err(), when ctx ends.
func (a *Arena) AllocContext(ctx context.Context, n int) (Offset, error) { return a.alloc(ctx, n, 0) }

// AllocTo is Alloc that also stores the new block's offset in the 8-byte
// word at dst, in the same step: a process killed at any point either
// allocated the block and recorded it at dst, or did neither. A structure
// in the arena that records its blocks this way never leaks one.
func (a *Arena) AllocTo(n int, dst Offset) (Offset, error) { return a.AllocToContext(nil, n, dst) }

// AllocToContext is AllocTo that gives up waiting for the allocator, and
// returns ctx.Err(), when ctx ends. A nil ctx waits as long as it takes.
func (a *Arena) AllocToContext(ctx context.Context, n int, dst Offset) (Offset, error) {
	if dst == 0 || dst%8 != 0 || !a.Contains(dst, 8) {
		return 0, fmt.Errorf("shm: AllocTo: bad destination %#x", uint64(dst))
	}
	return a.alloc(ctx, n, dst)
}

// AllocToEmpty is AllocTo that allocates only if the word at dst is zero;
// otherwise it allocates nothing and returns the offset the word holds and
// false. Processes racing to add the same block to a structure in the arena
// (a segment to a chain, say) thereby add exactly one.
func (a *Arena) AllocToEmpty(n int, dst Offset) (Offset, bool, error) {
	if dst == 0 || dst%8 != 0 || !a.Contains(dst, 8) && dst != hdrRoot {
		return 0, false, fmt.Errorf("shm: AllocToEmpty: bad destination %#x", uint64(dst))
	}
	off, err := a.allocIf(nil, n, dst, true)
	if err == errNotEmpty {
		return off, false, nil
	}
	return off, err == nil, err
}

var errNotEmpty = errors.New("shm: destination not empty")

func (a *Arena) alloc(ctx context.Context, n int, dst Offset) (Offset, error) {
	return a.allocIf(ctx, n, dst, false)
}

func (a *Arena) allocIf(ctx context.Context, n int, dst Offset, ifEmpty bool) (Offset, error) {
	if n <= 0 {
		return 0, fmt.Errorf("shm: invalid allocation size %d", n)
	}
	if uint64(n) > a.heapSize {
		return 0, fmt.Errorf("%w: requested %d bytes, more than the whole arena (%d bytes)", ErrNoSpace, n, a.heapSize)
	}
	order := max(uint(bits.Len64(uint64(n)-1)), minOrder)

	if err := a.lockCtx(ctx); err != nil {
		return 0, err
	}
	if ifEmpty {
		if cur := a.get(uint64(dst)); cur != 0 {
			a.unlock()
			return Offset(cur), errNotEmpty
		}
	}
	j := order
	for j <= a.maxOrder && a.get(a.head(j)) == 0 {
		j++
	}
	if j > a.maxOrder {
		inUse, largest := a.get(hdrInUse), a.largestFree()
		a.unlock()
		return 0, fmt.Errorf("%w: requested %d bytes (a %d-byte block); %d bytes free, largest free block %d bytes",
			ErrNoSpace, n, 1<<order, a.heapSize-min(inUse, a.heapSize), largest)
	}
	b := a.get(a.head(j))
	if a.isFree(b, j) && a.get(b+linkPrev) != 0 {
		return 0, a.abort(fmt.Errorf("%w: free list head %#x of order %d links back to %#x", ErrCorrupt, b, j, a.get(b+linkPrev)))
	}
	if err := a.remove(j, b); err != nil {
		return 0, a.abort(err)
	}
	// Split down to the requested order, putting the upper halves on the
	// (until now empty) lists of the orders in between.
	for j > order {
		j--
		if err := a.push(j, b+1<<j); err != nil {
			return 0, a.abort(err)
		}
	}
	a.setTag(b, tagAlloc|byte(order))
	a.set(hdrInUse, a.get(hdrInUse)+1<<order)
	a.set(hdrAllocs, a.get(hdrAllocs)+1)
	if dst != 0 {
		a.set(uint64(dst), b)
	}
	a.commit()
	a.unlock()
	return Offset(b), nil
}

// Free returns a block obtained from Alloc to the arena. It returns an error
// wrapping ErrBadOffset, and changes nothing, if off is not the start of a
// live allocation, and one wrapping ErrCorrupt if the allocator's metadata
// was found damaged. The block's contents are lost: it is zeroed before it
// becomes free.
func (a *Arena) Free(off Offset) error {
	if err := a.lock(); err != nil {
		return err
	}
	return a.free(uint64(off), 0)
}

// FreeFrom frees the block whose offset is stored in the 8-byte word at
// src, and zeroes that word in the same step, so that a process killed at
// any point leaves either both or neither done. A zero word is nothing to
// free.
func (a *Arena) FreeFrom(src Offset) error { return a.FreeFromContext(nil, src) }

// FreeFromContext is FreeFrom that gives up waiting for the allocator, and
// returns ctx.Err(), when ctx ends. A nil ctx waits as long as it takes.
func (a *Arena) FreeFromContext(ctx context.Context, src Offset) error {
	if src == 0 || src%8 != 0 || !a.Contains(src, 8) {
		return fmt.Errorf("shm: FreeFrom: bad source %#x", uint64(src))
	}
	if err := a.lockCtx(ctx); err != nil {
		return err
	}
	b := a.get(uint64(src))
	if b == 0 {
		a.unlock()
		return nil
	}
	return a.free(b, src)
}

// free frees block b, with the lock held, and releases the lock.
func (a *Arena) free(b uint64, src Offset) error {
	order, err := a.live(b)
	if err != nil {
		a.unlock()
		return err
	}
	// Clearing comes before the first journaled write: if we die in
	// between, the block stays allocated (leaked) rather than becoming a
	// free block with stale contents.
	a.scrub(b, 1<<order)
	a.set(hdrInUse, a.get(hdrInUse)-1<<order)
	a.set(hdrAllocs, a.get(hdrAllocs)-1)
	for order < a.maxOrder {
		buddy := a.heapOff + ((b - a.heapOff) ^ 1<<order)
		if a.tag(buddy) != tagFree|byte(order) {
			break
		}
		if err := a.remove(order, buddy); err != nil {
			return a.abort(err)
		}
		// The merged block starts at the lower of the two; the other one's
		// start is now inside a block and must carry no tag.
		if buddy < b {
			a.setTag(b, 0)
			b = buddy
		} else {
			a.setTag(buddy, 0)
		}
		order++
	}
	if err := a.push(order, b); err != nil {
		return a.abort(err)
	}
	if src != 0 {
		a.set(uint64(src), 0)
	}
	a.commit()
	a.unlock()
	return nil
}

// BlockSize returns the usable size of the live allocation at off: the
// power of two its request was rounded up to.
func (a *Arena) BlockSize(off Offset) (int, error) {
	if err := a.lock(); err != nil {
		return 0, err
	}
	order, err := a.live(uint64(off))
	a.unlock()
	if err != nil {
		return 0, err
	}
	return 1 << order, nil
}

// Stats returns a consistent snapshot of the allocator's counters.
//
// If the allocator's metadata is damaged, the figures are read without the
// lock and may be anything.
func (a *Arena) Stats() Stats {
	locked := a.lock() == nil
	inUse := min(a.get(hdrInUse), a.heapSize)
	s := Stats{
		Size:       int(a.heapSize),
		InUse:      int(inUse),
		Free:       int(a.heapSize - inUse),
		Allocs:     int(a.get(hdrAllocs) & (1<<62 - 1)),
		Recoveries: int(a.get(hdrRecoveries) & (1<<62 - 1)),
	}
	if locked {
		s.Largest = int(a.largestFree())
	}
	if locked {
		a.unlock()
	}
	return s
}

// live returns the order of the allocated block starting at file offset b,
// or an error wrapping ErrBadOffset. The lock must be held.
func (a *Arena) live(b uint64) (uint, error) {
	if b < a.heapOff || b-a.heapOff >= a.heapSize || b%minBlock != 0 {
		return 0, fmt.Errorf("%w: %#x is not a block offset", ErrBadOffset, b)
	}
	t := a.tag(b)
	if t&tagState != tagAlloc {
		what := "inside a block"
		if t&tagState == tagFree {
			what = "a free block"
		}
		return 0, fmt.Errorf("%w: %#x is %s", ErrBadOffset, b, what)
	}
	order := uint(t & orderMask)
	if order < minOrder || order > a.maxOrder || (b-a.heapOff)&(1<<order-1) != 0 {
		return 0, fmt.Errorf("%w: %#x has a corrupt block header %#x", ErrBadOffset, b, t)
	}
	return order, nil
}

// head returns the file offset of the free-list head of order.
func (a *Arena) head(order uint) uint64 { return hdrHeads + 8*uint64(order) }

// The free-list links of a free block are its first two words: the file
// offsets of the next and previous free blocks of the same order, 0 for
// none.
const (
	linkNext = 0
	linkPrev = 8
)

// push puts the block at b on the free list of order and tags it free. It
// fails, having written nothing, if the list's head is not a free block of
// that order at the head of its list.
func (a *Arena) push(order uint, b uint64) error {
	h := a.get(a.head(order))
	if h != 0 && (!a.isFree(h, order) || a.get(h+linkPrev) != 0) {
		return fmt.Errorf("%w: free list head %#x of order %d is not a free block at the head of its list", ErrCorrupt, h, order)
	}
	a.set(b+linkNext, h)
	a.set(b+linkPrev, 0)
	if h != 0 {
		a.set(h+linkPrev, b)
	}
	a.set(a.head(order), b)
	a.setTag(b, tagFree|byte(order))
	return nil
}

// remove unlinks the free block at b from the list of order and zeroes its
// links, which restores the invariant that a block that is not free is all
// zeros until its owner writes to it. The tag is left to the caller. It
// fails, having written nothing, unless b is a free block of order whose
// neighbours on the list link back to it.
func (a *Arena) remove(order uint, b uint64) error {
	if !a.isFree(b, order) {
		return fmt.Errorf("%w: %#x on the free list of order %d is not a free block of that order", ErrCorrupt, b, order)
	}
	next, prev := a.get(b+linkNext), a.get(b+linkPrev)
	if prev != 0 {
		if !a.isFree(prev, order) || a.get(prev+linkNext) != b {
			return fmt.Errorf("%w: free block %#x of order %d has a bad back link %#x", ErrCorrupt, b, order, prev)
		}
	} else if a.get(a.head(order)) != b {
		return fmt.Errorf("%w: free block %#x of order %d has no back link but is not the head of its list", ErrCorrupt, b, order)
	}
	if next != 0 && (!a.isFree(next, order) || a.get(next+linkPrev) != b) {
		return fmt.Errorf("%w: free block %#x of order %d has a bad link %#x", ErrCorrupt, b, order, next)
	}
	if prev != 0 {
		a.set(prev+linkNext, next)
	} else {
		a.set(a.head(order), next)
	}
	if next != 0 {
		a.set(next+linkPrev, prev)
	}
	a.set(b+linkNext, 0)
	a.set(b+linkPrev, 0)
	return nil
}

// isFree reports whether file offset b is the start of a free block of
// order, as its tag says.
func (a *Arena) isFree(b uint64, order uint) bool {
	return b >= a.heapOff && b-a.heapOff < a.heapSize && (b-a.heapOff)&(1<<order-1) == 0 &&
		a.tag(b) == tagFree|byte(order)
}

// largestFree returns the size of the largest free block, 0 if none.
func (a *Arena) largestFree() uint64 {
	for j := a.maxOrder; j >= minOrder; j-- {
		if a.get(a.head(j)) != 0 {
			return 1 << j
		}
	}
	return 0
}

// tagIndex returns the byte offset in the memfd of the tag of the granule at
// file offset b.
func (a *Arena) tagIndex(b uint64) uint64 { return hdrTags + (b-a.heapOff)/minBlock }

// tag returns the tag of the block starting at file offset b.
func (a *Arena) tag(b uint64) byte { return a.mem[a.tagIndex(b)] }

// setTag journals the tag of the block at b by rewriting the word that
// contains it.
func (a *Arena) setTag(b uint64, t byte) {
	i := a.tagIndex(b)
	w := i &^ 7
	var word [8]byte
	binary.NativeEndian.PutUint64(word[:], a.get(w))
	word[i&7] = t
	a.set(w, binary.NativeEndian.Uint64(word[:]))
}

// scrub zeroes the size bytes of the block at b, which belongs to the caller.
func (a *Arena) scrub(b, size uint64) {
	if size >= punchMin {
		// Blocks this big are page-aligned in the file (heapAlign), so the
		// hole covers exactly the block.
		err := unix.Fallocate(a.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(b), int64(size))
		if err == nil {
			return
		}
	}
	clear(a.mem[b : b+size])
}

// Package shm is the shared-memory arena of a process tree: one memfd,
// created by the root process and inherited by every descendant, mapped
// MAP_SHARED in each of them, with a general-purpose allocator whose whole
// state lives inside the memfd. Synchronisation primitives, queues and shared
// values are built on top of it and refer to their memory by [Offset], which
// means the same bytes in every process of the tree.
//
// # Layout
//
// The memfd is a metadata region followed by the heap:
//
//	0        header: magic, version, geometry, lock word, journal length,
//	         statistics, and one free-list head per block order
//	1024     intent journal: journalCap (offset, old value) pairs
//	9216     tag table: one byte per 64-byte granule of the heap
//	heapOff  heap: Size() bytes, a power of two, aligned to 64 KiB in the file
//
// Keeping the metadata out of the heap means a block of the full heap size
// can be handed out, and that a block's usable size is exactly its power of
// two: an in-band header would have turned every power-of-two request (which
// is what callers mostly ask for) into a block twice as big.
//
// # Allocator
//
// The heap is managed by a binary buddy allocator. A block of order k is 2^k
// bytes (k from 6, that is 64 bytes, up to the heap size) at a heap-relative
// offset that is a multiple of 2^k, so its buddy is found by flipping bit k
// and every block is 64-byte aligned. The tag of the granule where a block
// starts records its order and whether it is free or allocated; the tags of
// the granules inside a block are zero. That makes Free and BlockSize O(1)
// and lets them reject offsets that are not the start of a live allocation
// (double frees, offsets into the middle of a block, garbage) with
// [ErrBadOffset]. Free blocks of each order are kept on a doubly linked list
// whose links are the first 16 bytes of the free block itself, so removing a
// buddy when coalescing is O(1); allocation splits the smallest sufficient
// free block, freeing merges with the buddy as long as it is free and of the
// same order. A buddy allocator was chosen over size-class slabs or a
// best-fit list because its entire state is a handful of words per operation
// (which keeps the journal below small and bounded), fragmentation is
// bounded, and the arena's users mostly ask for powers of two anyway.
//
// Memory is handed out zeroed without zeroing on allocation: the heap
// starts as a hole in the memfd, Free clears a block before it goes back on a
// free list, and the allocator clears the link words it wrote when a free
// block is split off or merged. So every free block is zero except for its
// first 16 bytes, which allocation clears. Blocks of punchMin bytes or more
// (1 MiB) are cleared by punching a hole in the memfd (fallocate
// PUNCH_HOLE) rather than by writing zeros: that returns their pages to the
// kernel, costs time in proportion to the pages actually used instead of
// the block size (a mostly untouched 512 MiB block is freed in microseconds
// rather than by faulting in and committing 512 MiB), and the hole reads as
// zeros. Smaller blocks are cleared by writing zeros, which keeps their
// pages for the next owner: a hole costs a page fault per page on reuse.
//
// # Locking
//
// One lock word in the header serialises allocator operations of all
// processes; goroutines of one process first queue on a sync.Mutex so that
// at most one of them per process competes for the word. The word holds the
// owner's pid in its low 32 bits and a sequence number, bumped by every
// acquisition, in its high 32 bits, so that a waiter's compare-and-swap on a
// value it saw earlier cannot succeed after the lock has changed hands (no
// ABA even if a pid is reused). Waiters spin, then yield, then sleep with
// exponential backoff; allocation is not a hot path and a futex would add
// nothing but complexity here. A waiter that finds the owner dead (kill(pid,
// 0) fails with ESRCH, or the owner is a zombie that its parent has not
// reaped yet) or foreign takes the lock over with a compare-and-swap and
// repairs the allocator state before using it. Foreign means that the word
// cannot have been written by a process of the tree inside the allocator:
// a pid out of range, a live process that does not map the arena (checked
// in /proc/<pid>/maps, on the slow path only: every process of the tree
// maps it, init or an unrelated process does not), or this very process,
// which does not hold it, for a second. Callers with a context stop
// waiting when it ends.
//
// # Crash safety
//
// A process may be SIGKILLed at any instruction, including inside Alloc or
// Free with the lock held. Every write to allocator metadata (tags, list
// heads, links, statistics) goes through an undo journal in the header:
//
//  1. write the entry (file offset of the word, its current value),
//  2. publish the entry by storing journal length n+1,
//  3. store the new value into the word.
//
// When the operation is complete, storing journal length 0 commits it. All
// of these are sync/atomic 8-byte stores, which are sequentially consistent:
// neither the compiler nor the CPU reorders them, and a process killed at
// some instruction has made exactly the stores that precede it. So the memfd
// always holds some prefix of this sequence. Whoever takes the lock
// from a dead owner finds a non-zero journal length exactly when an
// operation was cut short, and restores the recorded old values from the
// last entry back to the first, then stores length 0. Whatever the prefix:
//
//   - an entry that was written but not published guards a word that was not
//     changed yet (step 3 comes after step 2), so ignoring it is right;
//   - a published entry whose store did not happen records the word's
//     current value, so restoring it is harmless;
//   - restoring in reverse order leaves every word with the value recorded
//     by its first entry, which is its value before the operation.
//
// Each entry also carries a tag, the low bits of the holder's acquisition
// sequence number, which the first entry of an operation also records in
// the header and the commit clears. Rollback replays only the leading
// entries that carry the recorded tag: a journal length scribbled over by
// a faulty process, while no operation was in progress (no tag recorded)
// or beyond an operation's entries (stale entries of earlier operations,
// with other tags), is discarded instead of replaying old writes. An entry
// of the operation naming a word no operation writes cannot be undone, and
// makes every allocator call fail with ErrCorrupt.
//
// Everything else read from the shared metadata is validated before it is
// used: a free-list head or link must be a free block of the list's order
// whose neighbours link back to it, and a tag must describe an aligned
// block. An operation that finds otherwise rolls back its own writes and
// fails with ErrCorrupt, so damage costs errors, never a panic, a block
// handed out twice, or a loop that does not end.
//
// So rollback brings the metadata back exactly to its state before the
// interrupted operation, and it is idempotent: a thief that dies while
// rolling back leaves the journal length untouched, and the next thief
// rolls back again from the start with the same result. An operation killed
// after its commit is complete as far as the allocator is concerned; the
// only loss is the block that was being allocated (never returned to its
// caller) or a Free whose caller never learns it succeeded. Free clears the
// block before its first journaled write, while the block is still
// allocated to the caller, so a Free cut short leaves an allocated (leaked)
// zeroed block, never a free block with stale contents. In no case can a
// block be on a free list and allocated at once, so no block is ever handed
// out twice.
//
// The journal is bounded: an operation splits or merges at most once per
// order, writing at most five words each time (two links, the neighbours'
// links or a list head, a tag), plus seven words for the block itself and
// the statistics. For the largest heap (2^40 bytes, orders 6 to 40) that is
// 177 entries, well within journalCap.
//
// A lock held by a process that is alive but stopped (SIGSTOP, a debugger)
// blocks the allocator until it resumes, as it should. A pid reused by an
// unrelated process between the owner's death and a waiter's check would
// look alive; with the kernel's default pid_max that needs millions of
// process creations in that window.
package shm

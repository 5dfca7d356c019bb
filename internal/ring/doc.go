// Package ring is a bounded multi-producer, multi-consumer message queue in
// the shared-memory arena of a process tree. It is what the public Queue,
// JoinableQueue and Pipe are built on: any goroutine of any process that
// maps the arena may put and get messages (byte slices up to MaxMessage).
//
// # Layout
//
// A ring is a chain of segments, each one arena block: a header of 512
// bytes (magic, geometry, sealed and closed flags, counters, the link to
// the next segment, and the tail, head and futex words each on a cache
// line of its own) followed by capacity cells of cellSize bytes:
//
//	0   state  uint64  sequence (low 32 bits) | owner tag (high 32 bits)
//	8   len    uint32  message length
//	12  flags  uint32  out of line, skip
//	16  ool    uint64  offset of the out-of-line block, 0 if none
//	24  spare  uint64  offset of a block kept for the next message, 0 if none
//	32  payload: cellSize-32 bytes of inline message
//
// Messages that fit the payload are copied inline; larger ones are copied
// by the producer into a block it allocates from the arena once it has
// claimed a cell, recording the block in the cell at once (so a producer
// killed at any point leaks nothing, and one blocked on a full ring holds
// no block), and given back by the consumer after copying out. Given
// back means kept in the cell as its spare, for the next message written
// there, if the block is at most 64 KiB, the cell has no spare yet and the
// ring's spares total at most 8 MiB; freed otherwise. A producer that
// needs a block takes the cell's spare if it is big enough (and frees it if
// not): for messages of a few KiB, this saves the two arena operations per
// message that were most of the cost of an out-of-line message. Trim (and
// Close) free the spares; a producer whose allocation fails for want of
// space trims its ring and tries again. A spare is swapped out of its word
// before it is used or freed, and a consumer swaps ool to 0 before it keeps
// the block as the spare, so no block is ever recorded twice; a process
// killed in between leaks it. The cell size is chosen at New (NewSized):
// a ring meant for 4 KiB messages should have cells big enough to hold them
// inline, which avoids three arena lock acquisitions per message.
//
// # Growth
//
// A ring made by New or NewSized has one segment. One made by NewGrowing
// starts with a segment of FirstCapacity cells; a producer that finds the
// last segment full, when the ring's limit allows, makes the next one,
// twice as big: it takes the segment's grow word with its owner tag (a
// dead owner's word may be taken over), allocates the block with AllocTo
// into the segment's next word (so the block is linked in the same step as
// it is allocated), lays it out (the magic last; laying out is repeated
// by whoever takes over from a dead maker), and then seals the full
// segment. Puts that find a segment sealed move on to the next; whoever
// finds a next segment seals the one before it first, so that no put goes
// to a segment after one has gone to the next. Consumers drain a sealed
// segment before moving on, so each producer's messages keep their order.
// Close marks the first segment's closed word, then seals every segment;
// a producer that links a segment checks the word afterwards and seals
// the new one too, so no put succeeds after Close has returned.
//
// With a limit, the messages of the sealed segments still being drained
// count against the new segment's capacity, so a ring never holds more
// than its limit (but for puts racing for the last cells). Segments are
// never freed before Destroy, which frees them last first: a segment is
// only ever reached through the link to it, and no process uses the ring
// by then. The memory of a ring is thus that of its busiest moment.
//
// # Algorithm
//
// This is Vyukov's bounded MPMC queue, with one change: a cell is claimed
// by a compare-and-swap on the cell's state word, which records who claimed
// it, rather than on the tail or head counter. The counters then only
// advance, by whoever sees that the cell at their position has been
// claimed. For position pos and its cell (pos mod capacity) the state goes
//
//	FREE     seq = pos,            owner 0   producers at pos may claim it
//	WRITING  seq = pos,            owner P   producer P is copying in
//	READY    seq = pos+1,          owner 0   consumers at pos may claim it
//	READING  seq = pos+1,          owner C   consumer C is copying out
//	FREE     seq = pos+capacity,   owner 0   the next lap
//
// (sequence numbers are compared modulo 2^32, which is safe as long as no
// thread stalls for 2^32 operations between loading a state and its CAS).
// A producer at tail = pos that finds seq = pos and owner 0 claims with a CAS
// to WRITING; finding a claimed cell (owner set, or seq past pos), it moves
// tail on from pos with a CAS and retries; finding seq behind pos, the ring
// is full. Consumers mirror this at head. Claiming costs one CAS on the
// cell, advancing the counter one more, publishing one store; no lock and
// no system call.
//
// # Blocking
//
// Beside each of the two futex words (notEmpty, notFull) is a count of the
// processes' goroutines parked on it. A blocked Get spins briefly, then
// registers in getWaiters, re-checks the ring, and parks on notEmpty with the
// value it read before registering; a producer that publishes a message
// reads getWaiters after its publishing store and only if it is non-zero
// bumps notEmpty and wakes one waiter. With sequentially consistent atomics,
// either the producer sees the registration (and its bump makes the futex
// wait return) or the consumer's re-check sees the message: no lost wake-up,
// and no system call while nobody sleeps. Put is the mirror image. Within a
// process, blocked getters (and putters) queue on a process-local gate so
// that one goroutine per process and direction waits on the futex word:
// ten thousand goroutines blocked in Get are ten thousand parked goroutines
// and one futex waiter. Parked goroutines use package wait, which does not
// hold an OS thread per goroutine.
//
// # Crash safety
//
// The owner tag in a claimed cell is the claiming process's pid (22 bits)
// and the low 10 bits of its start time, so a process that reuses a dead
// claimer's pid is not mistaken for it (except with odds of 1 in 1024). A
// process may be SIGKILLed at any instruction; what it may leave behind is a
// cell in WRITING or READING state with its tag. Nothing else is ever held:
// the counters move on without it (anyone advances them past claimed cells).
//
// Anyone who finds itself waiting on such a cell for poll (50 ms) — a
// consumer whose head is a WRITING cell, a producer whose tail is a cell of
// the previous lap still WRITING or READING — checks whether the owner is
// alive, and if it is not, takes the cell over with a CAS from the exact
// state it saw to the same state with its own tag (so exactly one process
// recovers it, and a recoverer that dies is recovered in turn). It then moves
// head past the cell, frees the out-of-line block recorded in the cell if
// any (swapping the ool word to 0 first, which is also what a consumer does
// before freeing, so a block is never freed twice), counts the message in
// Skipped (dead producer) or Lost (dead consumer), and releases the cell
// for the next lap without delivering it. A dead producer's message is
// never delivered: READY is only ever stored by a producer after its last
// write to the cell. A dead consumer's message is never delivered twice: a
// cell in READING is never made READY again.
//
// A producer killed inside Alloc after the allocator's commit, before the
// block is recorded in the cell, leaks that block; a consumer killed
// between swapping ool to 0 and freeing it leaks it too. Both windows are a
// few instructions. The counters may be off by one per double fault (a
// recoverer killed between counting and releasing a cell).
//
// # Corruption
//
// A consumer validates what it reads: a length above MaxMessage or above the
// inline capacity, or an out-of-line offset that is not a live arena block
// big enough for the length, makes Get return an error wrapping ErrCorrupt
// (the cell is released, the suspicious block is not freed). Nothing read
// from shared memory is used to size an allocation before it is validated.
//
// The indices and cell states are checked on the paths that do not take a
// message (contention, empty, full), which cost nothing when a put or get
// succeeds at once: a cell whose sequence is not that of its index, or is
// more than a lap from an unchanged head or tail; a free cell at head
// with tail past it; a message of the previous lap with head past it; a
// segment sealed while the ring is not closed. Each gives ErrCorrupt to
// the caller, and again to every later one, rather than losing messages
// or walking 2^31 cells. A head moved forward over messages leaves them
// behind it, which consumers look for when a segment is drained for good
// and once a poll interval while blocked. Geometry is read once, at Open,
// and checked against the block. A scribbled owner tag looks like a claim
// by a dead process: the message is passed over and counted in Lost once
// recovered. A ring does not checksum payloads.
package ring

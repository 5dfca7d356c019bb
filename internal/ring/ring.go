package ring

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/errs"
	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/wait"
)

var (
	// ErrFull is returned by TryPut when the ring holds capacity messages.
	ErrFull = errs.Full
	// ErrEmpty is returned by TryGet when no message is ready.
	ErrEmpty = errs.Empty
	// ErrClosed is returned by puts after Close, and by gets once the ring
	// is closed and drained.
	ErrClosed = errs.Closed
	// ErrTooLarge is returned by puts of messages longer than MaxMessage.
	ErrTooLarge = errs.TooLarge
	// ErrCorrupt is returned (wrapped) by gets that find a cell whose
	// contents cannot be valid; the cell is consumed.
	ErrCorrupt = errs.Corrupt
	// ErrBadRing is returned (wrapped) by Open for an offset that is not a
	// ring.
	ErrBadRing = errors.New("ring: not a ring")
	// ErrShortBuffer is returned by GetInto and TryGetInto when the next
	// message is longer than the buffer; the message stays in the ring.
	ErrShortBuffer = errors.New("ring: message longer than the buffer")
)

const (
	// MaxMessage is the longest message a ring carries.
	MaxMessage = errs.MaxMessage
	// DefaultInline is the longest message New's rings carry inline.
	DefaultInline = 96
	// MaxInline is the largest inline capacity NewSized accepts.
	MaxInline = 1 << 20
	// MaxCapacity is the largest capacity New accepts.
	MaxCapacity = 1 << 24

	magic = 0x31474e4952504d6d // "mMPRING1"

	// Header words (byte offsets in the ring's block).
	hdrMagic       = 0
	hdrCap         = 8  // uint32
	hdrCellSize    = 12 // uint32
	hdrClosed      = 16 // uint32: the segment is sealed
	hdrChainClosed = 20 // uint32, first segment's: the ring is closed
	hdrLost        = 24
	hdrSkipped     = 32
	hdrSpare       = 40 // uint64: bytes of the blocks kept as spares
	hdrNext        = 48 // uint64: offset of the next segment
	hdrGrow        = 56 // uint32: owner tag of the process making the next segment
	hdrLimit       = 60 // uint32: the ring's limit, 0 if unbounded
	hdrTail        = 64
	hdrHead        = 128
	hdrNotEmpty    = 192 // uint32 futex word
	hdrGetWaiters  = 196 // uint32
	hdrNotFull     = 256 // uint32 futex word
	hdrPutWaiters  = 260 // uint32
	hdrSize        = 512

	cellHdr = 32

	flagOOL  = 1
	flagSkip = 2

	// How long a cell may stay claimed by the same owner before a waiter
	// checks that the owner is alive; also the futex wait's poll.
	poll = 50 * time.Millisecond

	// Out-of-line blocks of up to spareMax bytes are kept in their cell
	// for the next message, up to spareBudget bytes per ring.
	spareMax    = 64 << 10
	spareBudget = 8 << 20
)

// cell is the fixed part of a cell; the inline payload follows it.
type cell struct {
	state uint64
	len   uint32
	flags uint32
	ool   uint64
	spare uint64
}

// seg is a process's handle on one segment of a ring: a bounded ring of
// its own, with the link to the next segment. Its methods may be called
// concurrently from any number of goroutines.
type seg struct {
	a   *shm.Arena
	off shm.Offset

	tail, head          *uint64
	lost, skipped       *uint64
	spare               *uint64
	closed              *uint32 // sealed: puts go to the next segment, or fail if the ring is closed
	notEmpty, getWaiter *uint32
	notFull, putWaiter  *uint32
	next                *uint64 // offset of the next segment, 0 if none yet
	grow                *uint32 // owner tag of the process making the next segment
	chainClosed         *uint32 // the root's: the whole ring is closed

	cells    unsafe.Pointer
	cellSize uintptr
	capacity uint64
	mask     uint64
	inline   int
	limit    uint64 // the ring's limit (0: unbounded), as in every segment's header
	exact    uint64 // see Ring.SetLimit; 0 for capacity

	me uint32 // owner tag of this process

	nextSeg atomic.Pointer[seg] // handle on the next segment, once opened

	getGate, putGate chan struct{}
	getStuck         stuck
	putStuck         stuck
}

// New creates a ring for up to capacity messages (rounded up to a power of
// two, at least 2) with cells holding DefaultInline bytes inline, and
// returns its offset, which any process of the tree can Open. Its memory
// is taken at once: about 128 bytes per message of capacity.
func New(a *shm.Arena, capacity int) (shm.Offset, error) {
	return NewSized(a, capacity, DefaultInline)
}

// NewSized is New with cells holding messages of up to inline bytes
// inline (rounded up so that cells are a multiple of 64 bytes); longer
// messages are stored in blocks allocated from the arena.
func NewSized(a *shm.Arena, capacity, inline int) (shm.Offset, error) {
	if capacity <= 0 || capacity > MaxCapacity {
		return 0, fmt.Errorf("ring: capacity %d out of range (1 to %d)", capacity, MaxCapacity)
	}
	if inline < 0 || inline > MaxInline {
		return 0, fmt.Errorf("ring: inline size %d out of range (0 to %d)", inline, MaxInline)
	}
	c := pow2(capacity)
	return newRoot(a, c, cellSizeFor(inline), c)
}

// NewGrowing creates a ring that holds up to limit messages (rounded up to
// a power of two; 0 means no limit but the arena's space) with cells
// holding inline bytes inline, like NewSized, but takes memory as it is
// used: it starts with room for FirstCapacity messages and grows, by
// adding segments twice as big as the last, each time a Put finds it full
// and the limit allows. It never shrinks before Destroy.
//
// With a limit, Put blocks once limit messages are queued, except while
// the ring is growing: as long as the messages of the segment it grew from
// are not all taken, puts stop at the new segment's capacity counting
// those messages, which concurrent puts may exceed by one each.
func NewGrowing(a *shm.Arena, limit, inline int) (shm.Offset, error) {
	if limit < 0 || limit > MaxCapacity {
		return 0, fmt.Errorf("ring: limit %d out of range (0 to %d)", limit, MaxCapacity)
	}
	if inline < 0 || inline > MaxInline {
		return 0, fmt.Errorf("ring: inline size %d out of range (0 to %d)", inline, MaxInline)
	}
	l := uint64(0)
	c := uint64(FirstCapacity)
	if limit > 0 {
		l = pow2(limit)
		c = min(c, l)
	}
	return newRoot(a, c, cellSizeFor(inline), l)
}

// FirstCapacity is the capacity of the first segment of a NewGrowing ring.
const FirstCapacity = 16

func pow2(n int) uint64 {
	c := uint64(2)
	for c < uint64(n) {
		c <<= 1
	}
	return c
}

func cellSizeFor(inline int) uint64 { return (uint64(cellHdr+inline) + 63) &^ 63 }

func segBytes(c, cellSize uint64) int { return int(hdrSize + c*cellSize) }

func newRoot(a *shm.Arena, c, cellSize, limit uint64) (shm.Offset, error) {
	off, err := a.Alloc(segBytes(c, cellSize))
	if err != nil {
		return 0, fmt.Errorf("ring: %w", err)
	}
	initSeg(a.Bytes(off, segBytes(c, cellSize)), c, cellSize, limit)
	return off, nil
}

// initSeg lays out a segment in mem, a block nobody else uses yet (or a
// segment whose maker died before it was done: initSeg may be repeated),
// and stores the magic last.
func initSeg(mem []byte, c, cellSize, limit uint64) {
	atomic.StoreUint32(u32At(mem, hdrCap), uint32(c))
	atomic.StoreUint32(u32At(mem, hdrCellSize), uint32(cellSize))
	atomic.StoreUint32(u32At(mem, hdrLimit), uint32(limit))
	for i := uint64(0); i < c; i++ {
		atomic.StoreUint64(u64At(mem, hdrSize+i*cellSize), i) // FREE for position i
	}
	atomic.StoreUint64(u64At(mem, hdrMagic), magic)
}

// errNotReady is openSeg's error for a live block whose magic is zero: a
// segment being made (or whose maker died before it was done).
var errNotReady = errors.New("ring: segment not made yet")

// openSeg returns a handle on the segment at off. root is the ring's first
// segment (nil when off is that), whose geometry every segment shares.
func openSeg(a *shm.Arena, off shm.Offset, root *seg) (*seg, error) {
	size, err := a.BlockSize(off)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRing, err)
	}
	if size < hdrSize {
		return nil, fmt.Errorf("%w: block of %d bytes at %#x", ErrBadRing, size, uint64(off))
	}
	mem := a.Bytes(off, size)
	switch atomic.LoadUint64(u64At(mem, hdrMagic)) {
	case magic:
	case 0:
		if root != nil {
			return nil, errNotReady
		}
		fallthrough
	default:
		return nil, fmt.Errorf("%w: bad magic at %#x", ErrBadRing, uint64(off))
	}
	c := uint64(atomic.LoadUint32(u32At(mem, hdrCap)))
	cellSize := uint64(atomic.LoadUint32(u32At(mem, hdrCellSize)))
	limit := uint64(atomic.LoadUint32(u32At(mem, hdrLimit)))
	if !validGeometry(c, cellSize, size) || (limit != 0 && (c > limit || limit > MaxCapacity || limit&(limit-1) != 0)) ||
		(root != nil && (uint64(root.cellSize) != cellSize || root.limit != limit || c < root.capacity)) {
		return nil, fmt.Errorf("%w: corrupt header at %#x (capacity %d, cell size %d, limit %d, block %d bytes)",
			ErrBadRing, uint64(off), c, cellSize, limit, size)
	}
	u32 := func(o uint64) *uint32 { return u32At(mem, o) }
	u64 := func(o uint64) *uint64 { return u64At(mem, o) }
	s := &seg{
		a:         a,
		off:       off,
		tail:      u64(hdrTail),
		head:      u64(hdrHead),
		lost:      u64(hdrLost),
		skipped:   u64(hdrSkipped),
		spare:     u64(hdrSpare),
		closed:    u32(hdrClosed),
		notEmpty:  u32(hdrNotEmpty),
		getWaiter: u32(hdrGetWaiters),
		notFull:   u32(hdrNotFull),
		putWaiter: u32(hdrPutWaiters),
		next:      u64(hdrNext),
		grow:      u32(hdrGrow),
		cells:     unsafe.Pointer(&mem[hdrSize]),
		cellSize:  uintptr(cellSize),
		capacity:  c,
		mask:      c - 1,
		inline:    int(cellSize - cellHdr),
		limit:     limit,
		me:        selfTag(),
		getGate:   make(chan struct{}, 1),
		putGate:   make(chan struct{}, 1),
	}
	s.chainClosed = u32(hdrChainClosed)
	if root != nil {
		s.chainClosed = root.chainClosed
	}
	return s, nil
}

// validGeometry reports whether a header's capacity and cell size make a
// ring that fits a block of size bytes.
func validGeometry(c, cellSize uint64, size int) bool {
	return c >= 2 && c <= MaxCapacity && c&(c-1) == 0 && cellSize >= 64 && cellSize%64 == 0 &&
		cellSize <= cellHdr+MaxInline+64 && hdrSize+c*cellSize <= uint64(size)
}

func u64At(mem []byte, o uint64) *uint64 { return (*uint64)(unsafe.Pointer(&mem[o : o+8][0])) }
func u32At(mem []byte, o uint64) *uint32 { return (*uint32)(unsafe.Pointer(&mem[o : o+4][0])) }

// Len returns a snapshot of the number of messages in the segment.
func (r *seg) Len() int {
	h := atomic.LoadUint64(r.head)
	t := atomic.LoadUint64(r.tail)
	if t <= h {
		return 0
	}
	if r.exact != 0 {
		return int(min(t-h, r.exact))
	}
	return int(min(t-h, r.capacity))
}

func (r *seg) Lost() int { return int(atomic.LoadUint64(r.lost)) }

func (r *seg) Skipped() int { return int(atomic.LoadUint64(r.skipped)) }

// Closed reports whether the segment is sealed.
func (r *seg) Closed() bool { return atomic.LoadUint32(r.closed) != 0 }

// Close seals the segment: further puts fail with closed; gets return the
// messages still in it, then closed. Blocked callers are woken. A put that
// overlaps Close either succeeds, and its message is delivered, or fails
// with closed. Close is idempotent.
func (r *seg) Close() {
	atomic.StoreUint32(r.closed, 1)
	atomic.AddUint32(r.notEmpty, 1)
	atomic.AddUint32(r.notFull, 1)
	wait.Wake(r.notEmpty, math.MaxInt32)
	wait.Wake(r.notFull, math.MaxInt32)
	r.Trim()
}

func (r *seg) cell(pos uint64) *cell {
	return (*cell)(unsafe.Add(r.cells, uintptr(pos&r.mask)*r.cellSize))
}

func (r *seg) payload(c *cell) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(c), cellHdr)), r.inline)
}

func mkState(seq, owner uint32) uint64 { return uint64(seq) | uint64(owner)<<32 }

// status of an attempt that did not complete.
type status int

const (
	done    status = iota
	full           // no free cell (put) or no ready cell (get)
	busy           // the cell at the position is claimed by someone else: st tells who
	closed         // the ring is closed (and, for gets, drained)
	tooLong        // the next message is longer than the get's limit
)

func checkLen(head, body []byte) error {
	if n := len(head) + len(body); n > MaxMessage {
		return fmt.Errorf("%w: a message of %d bytes (at most %d)", ErrTooLarge, n, MaxMessage)
	}
	return nil
}

// putOnce makes one attempt at queueing head+body, recovering the cell in
// the way if its claimer has been dead for a poll interval. ok is false if
// the ring is full; otherwise err is the outcome.
func (r *seg) putOnce(head, body []byte) (ok bool, err error) {
	s, pos, st, err := r.tryPut(head, body)
	if s == busy && r.putStuck.due(pos, st) && r.recoverPut(pos, st) {
		s, _, _, err = r.tryPut(head, body)
	}
	switch s {
	case done:
		return true, err
	case closed:
		return true, ErrClosed
	}
	return false, nil
}

// tryPut makes one attempt at queueing the message head+body. It returns done (with an error
// if the out-of-line block could not be allocated: the cell was given back
// as a skip), closed, full, or busy when the ring is full because of a
// claimed cell of the previous lap, with that cell's position and state.
//
// A message too long to be inline is copied into an arena block allocated
// once the cell is claimed, and the block is recorded in the cell right
// away: a producer killed while holding the cell leaks nothing (bar the
// few instructions between the allocator's commit and the record), and one
// blocked on a full ring holds no block.
func (r *seg) tryPut(head, body []byte) (status, uint64, uint64, error) {
	n := len(head) + len(body)
	pos := atomic.LoadUint64(r.tail)
	for {
		c := r.cell(pos)
		st := atomic.LoadUint64(&c.state)
		seq, owner := uint32(st), uint32(st>>32)
		d := int32(seq - uint32(pos))
		switch {
		case d == 0 && owner == 0:
			if atomic.LoadUint32(r.closed) != 0 {
				return closed, 0, 0, nil
			}
			if r.exact != 0 && pos >= r.exact {
				// Full unless the message that many places back has been
				// taken: its cell has moved on to its next lap.
				q := pos - r.exact
				qst := atomic.LoadUint64(&r.cell(q).state)
				if int32(uint32(qst)-uint32(q+r.capacity)) < 0 {
					if t := atomic.LoadUint64(r.tail); t != pos {
						pos = t
						continue
					}
					if uint32(qst>>32) != 0 {
						return busy, q, qst, nil
					}
					return full, 0, 0, nil
				}
			}
			if !atomic.CompareAndSwapUint64(&c.state, st, mkState(seq, r.me)) {
				pos = atomic.LoadUint64(r.tail)
				continue
			}
			hook(hookPutClaimed)
			atomic.CompareAndSwapUint64(r.tail, pos, pos+1)
			var err error
			c.len = uint32(n)
			if n > r.inline {
				c.flags = flagOOL
				var off shm.Offset
				if off, err = r.oolBlock(c, n); err == nil {
					copy(r.a.Bytes(off, n)[copy(r.a.Bytes(off, n), head):], body)
				} else {
					err = fmt.Errorf("no room for a %d-byte message: %w", n, err)
					c.flags = flagSkip
					atomic.StoreUint64(&c.ool, 0)
				}
			} else {
				c.flags = 0
				atomic.StoreUint64(&c.ool, 0) // 0 already, unless the cell was corrupt
				p := r.payload(c)
				copy(p[copy(p, head):], body)
			}
			hook(hookPutWritten)
			s := done
			if err == nil && atomic.LoadUint32(r.closed) != 0 {
				// Close came between the check above and the claim: a
				// consumer may have seen the ring drained. Give the cell
				// back as a skip.
				c.flags = flagSkip
				if off := atomic.SwapUint64(&c.ool, 0); off != 0 {
					r.a.Free(shm.Offset(off))
				}
				s = closed
			}
			atomic.StoreUint64(&c.state, mkState(seq+1, 0)) // READY
			if atomic.LoadUint32(r.getWaiter) != 0 {
				atomic.AddUint32(r.notEmpty, 1)
				wait.Wake(r.notEmpty, 1)
			}
			return s, 0, 0, err
		case d >= 0:
			// Claimed at pos already (or tail is stale): move tail on.
			// A cell claimed at pos has seq pos or pos+1; one more than a
			// lap on only if tail has moved on since it was read.
			if uint32(d)&uint32(r.mask) > 1 || (d > int32(r.capacity) && atomic.LoadUint64(r.tail) == pos) {
				return done, 0, 0, r.corrupt("put", pos, st)
			}
			atomic.CompareAndSwapUint64(r.tail, pos, pos+1)
			pos = atomic.LoadUint64(r.tail)
		default:
			// The cell is still in the previous lap: full, if tail has not
			// moved meanwhile.
			t := atomic.LoadUint64(r.tail)
			if t != pos {
				pos = t
				continue
			}
			if atomic.LoadUint32(r.closed) != 0 {
				return closed, 0, 0, nil
			}
			// The previous lap's cell is being written (seq pos-capacity,
			// owned) or read, or holds a message (pos-capacity+1);
			// anything else is not a state the ring can be in.
			c32 := int32(r.capacity)
			if !(d == -c32+1 || (d == -c32 && owner != 0)) {
				return done, 0, 0, r.corrupt("put", pos, st)
			}
			if owner != 0 {
				return busy, pos, st, nil
			}
			return full, 0, 0, nil
		}
	}
}

// CopyOut copies a message out of shared memory: it is given the message
// in place, valid only until it returns (and which a faulty process could
// be writing to, so it must not trust it twice), and dst, and returns what
// Get is to return. Nil means append(dst[:0], msg...).
type CopyOut func(dst, msg []byte) []byte

// tryGetWith takes the next message of the segment, recovering the cell at
// its head if its claimer has been dead for a poll interval. It returns
// ErrEmpty, or ErrClosed once the segment is sealed and drained.
func (r *seg) tryGetWith(dst []byte, copyOut CopyOut, limit int) ([]byte, error) {
	for {
		msg, s, pos, st, err := r.tryGet(dst, copyOut, limit)
		if s == busy && r.getStuck.due(pos, st) && r.recoverGet(pos, st) {
			continue
		}
		switch s {
		case done:
			return msg, err
		case closed:
			if err := r.checkStalled(r.capacity); err != nil {
				return nil, err
			}
			return nil, ErrClosed
		case tooLong:
			return nil, &shortError{int(pos)}
		}
		return nil, ErrEmpty
	}
}

// shortError is the error of a get that left a message longer than its
// limit in the ring.
type shortError struct{ n int }

func (e *shortError) Error() string { return fmt.Sprintf("ring: a %d-byte message is next", e.n) }
func (e *shortError) Unwrap() error { return ErrShortBuffer }

// checkStalled looks for the signs of corrupt indices that the cells at
// head and tail cannot show by themselves, and that would stall the ring
// or lose messages without a trace: a free cell at head with tail past it
// (tail moves past a position only once its cell is claimed, and a
// claimed cell is never free for the same lap again), a message of the
// previous lap at tail with head past it, and messages behind head (see
// scanBehind, to which n is passed). It loads words the other side
// writes, so it is kept off the paths that spin: it runs when a consumer
// finds the segment drained for good, and once a poll interval while a
// put or get is blocked.
func (r *seg) checkStalled(n uint64) error {
	pos := atomic.LoadUint64(r.head)
	c := r.cell(pos)
	if st := atomic.LoadUint64(&c.state); st == mkState(uint32(pos), 0) {
		if t := atomic.LoadUint64(r.tail); int64(t-pos) > 0 && atomic.LoadUint64(&c.state) == st &&
			atomic.LoadUint64(r.head) == pos {
			return fmt.Errorf("%w: tail %d is past the free cell at head %d", ErrCorrupt, t, pos)
		}
	}
	pos = atomic.LoadUint64(r.tail)
	c = r.cell(pos)
	if st := atomic.LoadUint64(&c.state); st == mkState(uint32(pos-r.capacity+1), 0) {
		if h := atomic.LoadUint64(r.head); int64(h-(pos-r.capacity)) > 0 && atomic.LoadUint64(&c.state) == st &&
			atomic.LoadUint64(r.tail) == pos {
			return fmt.Errorf("%w: head %d is past the message at %d of a ring of %d cells",
				ErrCorrupt, h, pos-r.capacity, r.capacity)
		}
	}
	return r.scanBehind(n)
}

// scanBehind looks for a message left behind head: a cell holding the
// message of a position that head has passed, which a ring never has, as
// head passes a position only once its cell is claimed. It is the one sign
// of a head moved forward by a stray write, which otherwise loses the
// messages it skipped without a trace. It looks at up to n cells behind
// head, so it is done only when a consumer finds the segment drained for
// good (all of them), or has waited on it for a poll interval (a few).
func (r *seg) scanBehind(n uint64) error {
	h := atomic.LoadUint64(r.head)
	for i := uint64(1); i <= min(n, r.capacity) && i <= h; i++ {
		pos := h - i
		if atomic.LoadUint64(&r.cell(pos).state) == mkState(uint32(pos+1), 0) {
			return fmt.Errorf("%w: a message at position %d, behind head %d, in a ring of %d cells",
				ErrCorrupt, pos, h, r.capacity)
		}
	}
	return nil
}

// ready reports whether a message is ready at the head of the segment,
// and whether it is sealed and drained.
func (r *seg) ready() (msg, drained bool) {
	isClosed := atomic.LoadUint32(r.closed) != 0
	pos := atomic.LoadUint64(r.head)
	st := atomic.LoadUint64(&r.cell(pos).state)
	seq, owner := uint32(st), uint32(st>>32)
	if seq == uint32(pos+1) && owner == 0 {
		return true, false
	}
	return false, isClosed && r.Len() == 0
}

// tryGet makes one attempt at taking a message. When the cell at head is
// being written, it returns busy with its position and state. A message
// longer than limit (if limit >= 0) is left in place: tryGet returns
// tooLong and its length.
func (r *seg) tryGet(dst []byte, copyOut CopyOut, limit int) ([]byte, status, uint64, uint64, error) {
	isClosed := atomic.LoadUint32(r.closed) != 0
	pos := atomic.LoadUint64(r.head)
	for {
		c := r.cell(pos)
		st := atomic.LoadUint64(&c.state)
		seq, owner := uint32(st), uint32(st>>32)
		d := int32(seq - uint32(pos+1))
		switch {
		case d == 0 && owner == 0:
			if limit >= 0 && c.flags != flagSkip && int64(c.len) > int64(limit) && c.len <= MaxMessage {
				// The length was written before the message was published,
				// and is the message's if the cell is still in the state
				// that published it. A length no message has is left for
				// read to report.
				n := c.len
				if atomic.LoadUint64(&c.state) != st {
					pos = atomic.LoadUint64(r.head)
					continue
				}
				return nil, tooLong, uint64(n), 0, nil
			}
			if !atomic.CompareAndSwapUint64(&c.state, st, mkState(seq, r.me)) {
				pos = atomic.LoadUint64(r.head)
				continue
			}
			hook(hookGetClaimed)
			atomic.CompareAndSwapUint64(r.head, pos, pos+1)
			msg, skip, err := r.read(c, dst, copyOut)
			hook(hookGetFreed)
			atomic.StoreUint64(&c.state, mkState(uint32(pos+r.capacity), 0)) // FREE, next lap
			r.wakePutter()
			if skip {
				pos = atomic.LoadUint64(r.head)
				continue
			}
			return msg, done, 0, 0, err
		case d >= 0:
			// Claimed by another consumer already (or head is stale). A
			// cell of position pos has seq pos or pos+1; one a lap on
			// only if head has moved on since it was read: the consumer
			// that takes a message moves head past it before it frees
			// the cell for the next lap, so a cell free for the next lap
			// while head is still at pos is corrupt.
			if (uint32(d)+1)&uint32(r.mask) > 1 ||
				(d >= int32(r.capacity)-1 && atomic.LoadUint64(r.head) == pos) {
				return nil, done, 0, 0, r.corrupt("get", pos, st)
			}
			atomic.CompareAndSwapUint64(r.head, pos, pos+1)
			pos = atomic.LoadUint64(r.head)
		default:
			h := atomic.LoadUint64(r.head)
			if h != pos {
				pos = h
				continue
			}
			// The cell at head is free or being written (d == -1), or
			// its previous lap is still being read (d == -capacity,
			// owned); anything else is not a state the ring can be in.
			if d != -1 && !(d == -int32(r.capacity) && owner != 0) {
				return nil, done, 0, 0, r.corrupt("get", pos, st)
			}
			if owner != 0 {
				// d == -1: being written; d < -1: the previous lap is
				// still being read, so there is nothing to get.
				if d < -1 && isClosed {
					return nil, closed, 0, 0, nil
				}
				return nil, busy, pos, st, nil
			}
			if isClosed {
				return nil, closed, 0, 0, nil
			}
			return nil, full, 0, 0, nil
		}
	}
}

// corrupt returns the error of a cell at position pos whose state st is
// not one the ring can be in.
func (r *seg) corrupt(op string, pos, st uint64) error {
	return fmt.Errorf("%w: %s at position %d (head %d, tail %d) found cell state %#x in a ring of %d cells",
		ErrCorrupt, op, pos, atomic.LoadUint64(r.head), atomic.LoadUint64(r.tail), st, r.capacity)
}

func (r *seg) wakePutter() {
	if atomic.LoadUint32(r.putWaiter) != 0 {
		atomic.AddUint32(r.notFull, 1)
		wait.Wake(r.notFull, 1)
	}
}

// read copies the message of a cell this process has claimed, validating
// everything it reads, and frees its out-of-line block.
func (r *seg) read(c *cell, dst []byte, copyOut CopyOut) (msg []byte, skip bool, err error) {
	n, flags := c.len, c.flags
	if dst == nil {
		dst = []byte{}
	}
	switch {
	case flags == flagSkip:
		return nil, true, nil
	case flags == 0:
		if int64(n) > int64(r.inline) {
			return nil, false, fmt.Errorf("%w: inline length %d, cells hold %d", ErrCorrupt, n, r.inline)
		}
		return copyOut.run(dst, r.payload(c)[:n]), false, nil
	case flags == flagOOL:
		ool := shm.Offset(atomic.LoadUint64(&c.ool))
		if n > MaxMessage {
			atomic.StoreUint64(&c.ool, 0)
			return nil, false, fmt.Errorf("%w: length %d", ErrCorrupt, n)
		}
		size, err := r.a.BlockSize(ool)
		if err != nil || size < int(n) || n == 0 {
			atomic.StoreUint64(&c.ool, 0)
			return nil, false, fmt.Errorf("%w: out-of-line block %#x of %d bytes for a %d-byte message (%v)",
				ErrCorrupt, uint64(ool), size, n, err)
		}
		msg = copyOut.run(dst, r.a.Bytes(ool, int(n)))
		hook(hookGetRead)
		if off := atomic.SwapUint64(&c.ool, 0); off != 0 {
			r.keepOrFree(c, shm.Offset(off), size)
		}
		return msg, false, nil
	default:
		atomic.StoreUint64(&c.ool, 0)
		return nil, false, fmt.Errorf("%w: flags %#x", ErrCorrupt, flags)
	}
}

func (f CopyOut) run(dst, msg []byte) []byte {
	if f == nil {
		return append(dst[:0], msg...)
	}
	return f(dst, msg)
}

// oolBlock returns a block of at least n bytes for the cell c, which this
// process has claimed, and records it in the cell: the cell's spare if it
// is big enough, else a new one. The spare is forgotten before it is
// recorded as the message's block, so that no block is ever recorded
// twice (a producer killed in between leaks it).
func (r *seg) oolBlock(c *cell, n int) (shm.Offset, error) {
	if sp := shm.Offset(atomic.SwapUint64(&c.spare, 0)); sp != 0 {
		size, err := r.a.BlockSize(sp)
		if err == nil {
			atomic.AddUint64(r.spare, ^uint64(size-1))
			if size >= n {
				atomic.StoreUint64(&c.ool, uint64(sp))
				return sp, nil
			}
			r.a.Free(sp)
		}
	}
	off, err := r.a.Alloc(n)
	if errors.Is(err, shm.ErrNoSpace) && atomic.LoadUint64(r.spare) != 0 {
		// This ring's own spares may be what fills the arena.
		r.Trim()
		off, err = r.a.Alloc(n)
	}
	if err != nil {
		return 0, err
	}
	atomic.StoreUint64(&c.ool, uint64(off))
	return off, nil
}

// keepOrFree disposes of the out-of-line block off, of size bytes, whose
// message this process has just taken from the cell c: it becomes the
// cell's spare for the next lap's message if it is small, the cell has
// none, and the ring's spares are within budget; otherwise it is freed.
// Reusing the block saves two arena operations per message, which for
// messages of a few KiB are most of the cost.
func (r *seg) keepOrFree(c *cell, off shm.Offset, size int) {
	if size <= spareMax && atomic.LoadUint64(&c.spare) == 0 && atomic.LoadUint32(r.closed) == 0 &&
		atomic.LoadUint64(r.spare)+uint64(size) <= spareBudget {
		atomic.AddUint64(r.spare, uint64(size))
		atomic.StoreUint64(&c.spare, uint64(off))
		return
	}
	r.a.Free(off)
}

// Trim frees the blocks kept in cells for reuse. It may be called at any
// time; Close calls it, and a closed ring keeps no more blocks.
func (r *seg) Trim() {
	if atomic.LoadUint64(r.spare) == 0 {
		return // nothing kept: the count never falls short of the blocks kept
	}
	for i := uint64(0); i < r.capacity; i++ {
		c := r.cell(i)
		if sp := shm.Offset(atomic.SwapUint64(&c.spare, 0)); sp != 0 {
			if size, err := r.a.BlockSize(sp); err == nil {
				atomic.AddUint64(r.spare, ^uint64(size-1))
				r.a.Free(sp)
			}
		}
	}
}

// recoverGet is called by a consumer that has found the cell at head
// position pos claimed, with state st, for a poll interval; recoverPut by a
// producer that has found the cell at tail position pos claimed in the
// previous lap for a poll interval. If the owner is dead, the cell is
// taken over and released for the next lap.
func (r *seg) recoverGet(pos, st uint64) bool { return r.recoverCell(r.cell(pos), st) }
func (r *seg) recoverPut(pos, st uint64) bool { return r.recoverCell(r.cell(pos), st) }

// Reclaim looks at every cell and releases those claimed by processes that
// have died, counting their messages in Lost or Skipped, and returns how
// many it released. Puts and gets do this by themselves for the cells they
// wait on; Reclaim is for an owner that learns a process died and wants the
// counters to be exact at once (or the ring is closed and nobody waits).
func (r *seg) Reclaim() int {
	n := 0
	for i := range r.capacity {
		c := r.cell(i)
		if st := atomic.LoadUint64(&c.state); st>>32 != 0 && r.recoverCell(c, st) {
			n++
		}
	}
	return n
}

// recoverCell takes over a cell claimed with state st by a process that
// has died, and releases it for the next lap without delivering its
// message. The cell's index tells the phase: a WRITING cell for position
// p has seq p, a READING one seq p+1, and p is the cell's index modulo the
// capacity (which is at least 2).
func (r *seg) recoverCell(c *cell, st uint64) bool {
	owner := uint32(st >> 32)
	if owner == 0 || owner == r.me || ownerAlive(owner) {
		return false
	}
	idx := uint64(uintptr(unsafe.Pointer(c))-uintptr(r.cells)) / uint64(r.cellSize)
	seq := uint32(st)
	reading := uint64(seq)&r.mask != idx
	p32 := seq
	if reading {
		p32--
	}
	if !atomic.CompareAndSwapUint64(&c.state, st, mkState(seq, r.me)) {
		return false // someone else moved first
	}
	hook(hookRecovering)
	// The position as a 64-bit counter value, from head (it is within a
	// lap of it); the CASes below only move counters that are exactly there.
	h := atomic.LoadUint64(r.head)
	pos := h + uint64(int64(int32(p32-uint32(h))))
	atomic.CompareAndSwapUint64(r.tail, pos, pos+1)
	if off := atomic.SwapUint64(&c.ool, 0); off != 0 {
		// Only a block the dead process recorded itself is freed; check
		// it is one, in case the cell is corrupt.
		if _, err := r.a.BlockSize(shm.Offset(off)); err == nil {
			r.a.Free(shm.Offset(off))
		}
	}
	if reading {
		// Its message was taken, and is lost: the cell is free for the
		// next lap, and head moves past it if the reader died first.
		atomic.AddUint64(r.lost, 1)
		atomic.CompareAndSwapUint64(r.head, pos, pos+1)
		atomic.StoreUint64(&c.state, mkState(p32+uint32(r.capacity), 0))
	} else {
		// Its message was never written: the cell is published as a skip,
		// which the consumer that reaches it passes over like any other
		// message. (Released straight for the next lap, it would look to
		// that consumer like a cell already taken, the state a corrupt
		// one can also have, and the consumer could not tell them apart.)
		atomic.AddUint64(r.skipped, 1)
		c.flags = flagSkip
		atomic.StoreUint64(&c.state, mkState(p32+1, 0))
	}
	r.wakePutter()
	// Consumers may be parked behind this cell.
	atomic.AddUint32(r.notEmpty, 1)
	wait.Wake(r.notEmpty, math.MaxInt32)
	return true
}

// stuck remembers the claimed cell a process has been waiting on, to check
// its owner's liveness only once the same claim has lasted a poll interval.
type stuck struct {
	mu    sync.Mutex
	pos   uint64
	st    uint64
	since time.Time
}

// due records that the cell of position pos is claimed with state st and
// reports whether it has been so for a poll interval (restarting the
// interval if so).
func (s *stuck) due(pos, st uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.pos != pos || s.st != st || s.since.IsZero() {
		s.pos, s.st, s.since = pos, st, now
		return false
	}
	if now.Sub(s.since) < poll {
		return false
	}
	s.since = now
	return true
}

// Owner tags: pid in the low 22 bits (Linux's PID_MAX_LIMIT is 2^22), the
// low 10 bits of the start time above; 0 start bits mean "not checked".
const (
	pidBits  = 22
	pidMask  = 1<<pidBits - 1
	startLow = 1<<(32-pidBits) - 1
)

var selfTag = sync.OnceValue(func() uint32 {
	id := proc.Self()
	return uint32(id.Pid)&pidMask | uint32(id.Start&startLow)<<pidBits
})

// ownerAlive reports whether the process a tag names may still run.
func ownerAlive(tag uint32) bool {
	return proc.AliveStartBits(int(tag&pidMask), uint64(tag>>pidBits), 32-pidBits)
}

// Test hooks: points where a test may kill the process.
type hookPoint int

const (
	hookPutClaimed hookPoint = iota + 1 // producer holds a WRITING cell, tail not yet moved
	hookPutWritten                      // message written, not yet published
	hookGetClaimed                      // consumer holds a READING cell, head not yet moved
	hookGetRead                         // out-of-line message copied, block not yet freed
	hookGetFreed                        // message copied and block freed, cell not yet released
	hookRecovering                      // a recoverer holds a dead process's cell
	hookDestroy                         // Destroy is about to free a block
	hookGrowAlloc                       // a producer is about to allocate the next segment
	hookGrowInit                        // the next segment is allocated and linked, not yet laid out
	hookGrowSeal                        // the next segment is made, the last one not yet sealed
	hookDestroyed                       // Destroy has freed the ring's block
)

var testHook func(hookPoint)

// SetTestHook installs f (nil removes it) to run at each of the ring's kill
// points, numbered 1 (a WRITING cell claimed) to 6 (a dead process's cell
// being recovered) as above, for the kill tests of packages built on the
// ring. It must be called before the process uses a ring.
func SetTestHook(f func(point int)) {
	if f == nil {
		testHook = nil
		return
	}
	testHook = func(p hookPoint) { f(int(p)) }
}

func hook(p hookPoint) {
	if testHook != nil {
		testHook(p)
	}
}

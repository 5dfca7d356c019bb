package mp

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/errs"
	"github.com/multiproc/mp/internal/refs"
	"github.com/multiproc/mp/internal/ring"
	"github.com/multiproc/mp/internal/shm"
)

// Errors of queues.
var (
	// ErrFull is returned by TryPut when the queue holds maxsize items
	// (Python's queue.Full), and by Conn.TrySend on a full pipe.
	ErrFull = errFull()
	// ErrEmpty is returned by TryGet when the queue has no item (Python's
	// queue.Empty).
	ErrEmpty = errEmpty()
	// ErrClosed is returned by puts after Close, and by gets once the queue
	// is closed and every item put before has been taken; by every call on
	// a pipe's Conn after its own Close; and, wrapped, by a call on a
	// primitive after its Close (as a panic) and by the decoding of a handle
	// whose primitive no process holds any more.
	ErrClosed = errClosed()
	// ErrTooLarge is returned by Put for an item whose encoding exceeds
	// MaxMessage.
	ErrTooLarge = errTooLarge()
	// ErrTasksLost is returned by JoinableQueue.Join when items were taken
	// by a process that died before marking them done (or died in the
	// middle of taking or putting them), or were dropped by Get as
	// corrupt: Join does not wait for those forever, but reports how many
	// there were.
	ErrTasksLost = errors.New("mp: tasks lost with a dead process")
	// ErrTooManyProcesses is returned, by the Acquire of a Semaphore, the
	// puts and gets of a JoinableQueue, and the decoding of a pipe's end,
	// in a process beyond the MaxHolders live processes that the object can
	// record as holders: were that process to die holding something, it
	// could not be given back. Nothing is taken, put or held. An entry is
	// freed when its process has ended.
	ErrTooManyProcesses = errors.New("mp: too many live processes use the joinable queue")
	// ErrTaskDone is returned by TaskDone called more times than items were
	// put (Python's ValueError).
	ErrTaskDone = errors.New("mp: TaskDone called more times than there were items")
)

// MaxMessage is the largest encoded item a queue or a pipe carries, and
// the largest task or result a pool's worker carries: 64 MiB.
const MaxMessage = 64 << 20

// MaxMessage is the limit of the internal packages (this does not compile
// otherwise).
const _ = uint(MaxMessage-errs.MaxMessage) + uint(errs.MaxMessage-MaxMessage)

// DefaultQueueSize is a maxsize for queues meant to be large but bounded.
// A queue made with maxsize <= 0 is unbounded, as in Python: bounded only
// by the space of the shared-memory arena.
const DefaultQueueSize = 1 << 15

// Queue is a first-in, first-out queue of values of type T shared by every
// process of the tree, Python's multiprocessing.Queue. Values are encoded
// when put (so a value that cannot be encoded is an error from Put, never a
// silently lost item) and decoded when taken; []byte and string items are
// copied as they are.
//
// Items put by one producer are taken in the order it put them. A producer
// killed in the middle of a Put leaves no half-written item; a consumer
// killed in the middle of a Get loses that one item, and nobody blocks
// forever on either. Nor does either take capacity with it or give the
// queue more: whatever instruction a producer or consumer is killed at,
// the queue never holds more than maxsize items, and the items a dead
// process was putting or taking stop counting once the queue has noticed
// it is gone (a blocked Put checks every 50 ms).
//
// Memory: an idle unbounded queue (maxsize <= 0) takes about 8 KiB of
// the arena, of which a few KiB are touched. Its ring grows by doubling, from
// 16 items, when more items are queued at once than it holds, and keeps
// what it took until the queue is destroyed: RAM of about 128 bytes per
// item of the most it ever held at once, and arena space of up to four
// times that (the arena is sparse: space never written costs no RAM). A
// bounded queue (maxsize > 0) takes its ring for maxsize items at once:
// 4 KiB plus 256 bytes of arena per item of maxsize rounded up to a power
// of two, touched as it is used. Items whose encoding exceeds 96 bytes take
// a block each while queued.
//
// Blocked Puts and Gets park their goroutines without holding OS threads.
// A Queue may be passed to child processes as an argument, inside a struct,
// or through another queue.
//
// The zero Queue is not usable: make one with NewQueue. Its methods panic
// with an error wrapping ErrInvalidHandle, Close included.
type Queue[T any] struct {
	h     handle
	r     *ring.Ring
	max   int         // maxsize, or 0
	exact *exactCount // the item count, when maxsize is not the ring's own capacity
	join  *joinState
	acct  *takeAccounts // what a Get records as an item leaves the ring; nil if nothing
	raw   int           // rawBytes or rawString when T is []byte or string
	lends bool          // items may hold primitives (see lend)
}

const (
	rawBytes = iota + 1
	rawString
)

// Block layout of a queue's header (the items are in a ring of their own).
const (
	qRing       = 0  // u64: the ring's arena offset
	qMax        = 8  // u32: maxsize
	qFlags      = 12 // u32
	qType       = 16 // u64: hash of T's type, checked when a handle is decoded
	qCount      = 24 // u32: items queued or being put, under an exact maxsize
	qSlots      = 28 // u32: futex word bumped when qCount falls
	qUnfinished = 32 // u32: JoinableQueue's items put and not yet done (futex word)
	qLost       = 36 // u32: tasks given up as lost
	qRingLost   = 40 // u32: ring losses already counted in qLost
	qSlotLost   = 44 // u32: ring losses whose slots qCount has given back
	qHolders    = 64 // JoinableQueue: per-process items taken, not yet done

	// Exact maxsize: per-process slots reserved, items not yet put.
	qReserved  = qHolders + holdersSize
	qBlockSize = qReserved + holdersSize

	qJoinable = 1
)

// NewQueue returns an empty queue holding at most maxsize items; maxsize
// <= 0 means no limit but the arena's space (a Put then fails with an
// error wrapping ErrNoSpace when the queue cannot grow).
func NewQueue[T any](maxsize int) (*Queue[T], error) {
	return newQueue[T](maxsize, 0)
}

func newQueue[T any](maxsize int, flags uint32) (*Queue[T], error) {
	if maxsize > ring.MaxCapacity {
		return nil, fmt.Errorf("%w: maxsize %d (at most %d)", ErrBadArguments, maxsize, ring.MaxCapacity)
	}
	h, err := alloc(kindQueue, qBlockSize)
	if err != nil {
		return nil, err
	}
	a, _ := treeArena()
	off, err := retryNoSpace(func() (shm.Offset, error) {
		if maxsize <= 0 {
			return ring.NewGrowing(a, 0, ring.DefaultInline)
		}
		return ring.New(a, maxsize)
	})
	if err != nil {
		h.close() // the block goes back through its reference, like any other
		return nil, fmt.Errorf("mp: NewQueue: %w", noSpace(err))
	}
	atomic.StoreUint64(h.u64(qRing), uint64(off))
	atomic.StoreUint32(h.u32(qMax), uint32(max(maxsize, 0)))
	atomic.StoreUint32(h.u32(qFlags), flags)
	atomic.StoreUint64(h.u64(qType), typeHash[T]())
	return openQueue[T](h)
}

func openQueue[T any](h handle) (*Queue[T], error) {
	if got, want := atomic.LoadUint64(h.u64(qType)), typeHash[T](); got != want {
		return nil, fmt.Errorf("%w: the queue does not hold %s", ErrInvalidHandle, reflect.TypeFor[T]())
	}
	a, err := treeArena()
	if err != nil {
		return nil, err
	}
	r, err := ring.Open(a, shmOffset(atomic.LoadUint64(h.u64(qRing))))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidHandle, err)
	}
	q := &Queue[T]{h: h, r: r, max: int(atomic.LoadUint32(h.u32(qMax))), lends: lends(reflect.TypeFor[T]())}
	switch reflect.TypeFor[T]() {
	case reflect.TypeFor[[]byte]():
		q.raw = rawBytes
	case reflect.TypeFor[string]():
		q.raw = rawString
	}
	if q.max > 0 && q.max != r.Cap() {
		// The ring's capacity is a power of two; Python's maxsize is exact.
		r.SetLimit(q.max)
		q.exact = &exactCount{max: uint32(q.max)}
	}
	if atomic.LoadUint32(h.u32(qFlags))&qJoinable != 0 {
		j := &joinState{unfinished: h.u32(qUnfinished), lost: h.u32(qLost), ringLost: h.u32(qRingLost), r: r}
		j.holders.init(h, qHolders)
		j.reclaimFunc = func() { j.reclaimLost() }
		q.join = j
	}
	if q.exact != nil || q.join != nil {
		q.acct = &takeAccounts{join: q.join, exact: q.exact}
		q.acct.copyFunc = q.acct.copy
	}
	return q, nil
}

// typeHash identifies T, so that a handle decoded as a queue of another
// type is an error rather than garbage.
func typeHash[T any]() uint64 {
	t := reflect.TypeFor[T]()
	f := fnv.New64a()
	fmt.Fprintf(f, "%s.%s", t.PkgPath(), t.String())
	return f.Sum64()
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// Put appends v to the queue, blocking while the queue is full, until ctx
// ends. It returns nil, ctx.Err(), ErrClosed, an error wrapping
// ErrUnencodable or ErrTooLarge (nothing is put), an error from shared
// memory (full arena), or, for a JoinableQueue, an error wrapping
// ErrTooManyProcesses.
func (q *Queue[T]) Put(ctx context.Context, v T) error { return q.put(ctx, v, true) }

// TryPut is Put without blocking: it returns ErrFull if the queue is full.
func (q *Queue[T]) TryPut(v T) error { return q.put(context.Background(), v, false) }

func (q *Queue[T]) put(ctx context.Context, v T, block bool) error {
	q.check()
	// []byte and string items go into shared memory straight from the
	// caller's memory: their encoding is a one-byte header and the bytes.
	switch q.raw {
	case rawBytes:
		b := *(*[]byte)(unsafe.Pointer(&v))
		return q.putMsg(ctx, codec.BytesHeader(b), b, block)
	case rawString:
		s := *(*string)(unsafe.Pointer(&v))
		return q.putMsg(ctx, codec.StringHeader(), unsafe.Slice(unsafe.StringData(s), len(s)), block)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	msg := (*bp)[:0]
	var lent []refs.ID
	if q.lends {
		var err error
		if msg, lent, err = lend(msg, v); err != nil {
			return fmt.Errorf("mp: Put: %w", err)
		}
	}
	msg, err := codec.AppendMarshalContext(ctx, msg, v)
	if err != nil {
		giveBack(lent)
		return fmt.Errorf("mp: Put: %w", err)
	}
	*bp = msg[:0]
	if err := q.putMsg(ctx, msg, nil, block); err != nil {
		giveBack(lent)
		return err
	}
	return nil
}

// putMsg puts the encoded item head+body.
func (q *Queue[T]) putMsg(ctx context.Context, head, body []byte, block bool) error {
	if q.join != nil {
		if err := q.join.own(); err != nil {
			return err
		}
	}
	if q.exact != nil {
		testHook(hookSlotTaken)
	}
	if q.join != nil {
		// The item counts as unfinished from now on; until it is in the
		// ring, this process answers for it (see JoinableQueue).
		q.join.holders.add(1)
		atomic.AddUint32(q.join.unfinished, 1)
		defer q.join.holders.add(-1)
	}
	var err error
	if block {
		err = q.r.PutPair(ctx, head, body)
	} else {
		err = q.r.TryPutPair(head, body)
	}
	if err != nil {
		if q.join != nil {
			q.join.done(1)
		}
		return err
	}
	q.h.loc.raceRelease()
	return nil
}

// exactCount marks a queue whose maxsize is not its ring's capacity (a
// power of two): the ring then stops puts at maxsize itself (see
// ring.SetLimit), counting from its cells' states, so that the count is
// exact whatever instruction a producer or consumer is killed at: an item
// being put counts until it is in the ring or the ring skips it (its
// producer died), one being taken until it is taken or the ring counts it
// lost (its consumer died).
type exactCount struct {
	max uint32
}

// takeNew advances *seen, a count of events already accounted for, to now,
// the events so far, and returns how many it advanced it by: of processes
// calling it at once, each new event goes to one. Both wrap around.
func takeNew(seen *uint32, now uint32) uint32 {
	for {
		s := atomic.LoadUint32(seen)
		d := now - s
		if int32(d) <= 0 {
			return 0 // accounted for already, by whoever saw a later now
		}
		if atomic.CompareAndSwapUint32(seen, s, now) {
			return d
		}
	}
}

// takeAccounts is what a Get records as an item leaves the ring: that its
// process holds it (JoinableQueue), and that its slot is free (exact
// maxsize). The ring calls it in its copy-out, while it holds the item's
// cell as being read: a consumer killed before that point is the ring's
// loss, which reclaims count; after it, the item is its process's.
type takeAccounts struct {
	join     *joinState
	exact    *exactCount
	copyFunc ring.CopyOut // copy, bound once, so that a Get allocates no closure
}

func (a *takeAccounts) taking() {
	testHook(hookTaking)
	if a.join != nil {
		a.join.holders.add(1)
	}
	testHook(hookTaken)
}

func (a *takeAccounts) copy(dst, m []byte) []byte {
	a.taking()
	return append(dst[:0], m...)
}

// wrap returns copyOut made to account for the item first.
func (a *takeAccounts) wrap(copyOut ring.CopyOut) ring.CopyOut {
	if copyOut == nil {
		return a.copyFunc
	}
	return func(dst, m []byte) []byte {
		a.taking()
		return copyOut(dst, m)
	}
}

// Test hooks: points where a test may kill the process (see testHook).
type hookPoint int

const (
	hookSlotTaken hookPoint = iota + 1 // Put: a slot reserved, the item not yet in the ring
	hookTaking                         // Get: the ring holds the item's cell; nothing recorded
	hookTaken                          // Get: the item recorded; the ring still holds its cell
)

// queueHook is set, by tests only, before any queue is used.
var queueHook func(hookPoint)

func testHook(p hookPoint) {
	if queueHook != nil {
		queueHook(p)
	}
}

// Get removes and returns the item at the head of the queue, blocking
// while the queue is empty, until ctx ends. Once the queue is closed and
// empty it returns ErrClosed. An item that is corrupt in shared memory, or
// cannot be decoded as a T, is an error wrapping ErrCorrupt, never a
// panic: the item is dropped (in a JoinableQueue it counts as lost at
// once, and Join reports it with ErrTasksLost; TaskDone is not to be
// called for it). A JoinableQueue's Get may also return
// ErrTooManyProcesses.
func (q *Queue[T]) Get(ctx context.Context) (T, error) { return q.get(ctx, true) }

// TryGet is Get without blocking: it returns ErrEmpty if there is no item.
func (q *Queue[T]) TryGet() (T, error) { return q.get(context.Background(), false) }

func (q *Queue[T]) get(ctx context.Context, block bool) (T, error) {
	q.check()
	var v T
	if q.raw == rawBytes {
		msg, err := q.getMsg(ctx, nil, block, copyOutBytes)
		if err != nil {
			return v, err
		}
		if cap(msg) == len(msg) {
			*(*[]byte)(unsafe.Pointer(&v)) = msg
			return v, nil
		}
		return v, q.decode(msg, &v)
	}
	if q.raw == rawString {
		// The ring copies the item into a new buffer, which the result
		// then shares: one copy out of shared memory, none after.
		msg, err := q.getMsg(ctx, nil, block, nil)
		if err != nil {
			return v, err
		}
		var ok bool
		if *(*string)(unsafe.Pointer(&v)), ok = codec.AdoptString(msg); ok {
			return v, nil
		}
		return v, q.decode(msg, &v)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	msg, err := q.getMsg(ctx, (*bp)[:0], block, nil)
	if err != nil {
		return v, err
	}
	*bp = msg[:0]
	return v, q.decode(msg, &v)
}

// copyOutBytes copies a []byte item out of shared memory for Get: a raw
// item's payload goes straight into a slice of exactly its length (so a
// 4 KiB item takes one 4 KiB allocation, not a 4 KiB + 1 byte one, which
// rounds up to 4.75 KiB and touches a second page), with cap == len; any
// other encoding is copied whole, with cap > len, for decode. It captures
// nothing, so passing it allocates nothing.
func copyOutBytes(_, m []byte) []byte {
	if p, ok := codec.AdoptBytes(m); ok {
		if p == nil {
			return nil
		}
		out := make([]byte, len(p))
		copy(out, p)
		return out
	}
	out := make([]byte, len(m), len(m)+1)
	copy(out, m)
	return out
}

// GetInto is Get storing the item in *dst. For a queue of []byte, the
// item is copied into the array *dst already refers to when it has room,
// so a consumer that is done with each item before taking the next can
// take them without allocating (at 4 KiB per item, allocating is most of
// the cost of Get). For other types it is the same as Get.
func (q *Queue[T]) GetInto(ctx context.Context, dst *T) error {
	q.check()
	if q.raw != rawBytes {
		v, err := q.Get(ctx)
		if err == nil {
			*dst = v
		}
		return err
	}
	b := (*[]byte)(unsafe.Pointer(dst))
	raw, isNil := false, false
	msg, err := q.getMsg(ctx, (*b)[:0], true, func(buf, m []byte) []byte {
		if p, ok := codec.AdoptBytes(m); ok {
			raw, isNil = true, p == nil
			return append(buf[:0], p...)
		}
		return append([]byte(nil), m...) // to decode, below
	})
	switch {
	case err != nil:
		return err
	case isNil:
		*b = nil
	case raw:
		*b = msg
	default:
		return q.decode(msg, dst)
	}
	return nil
}

// getMsg takes the next encoded item, appended to dst[:0] (or as copyOut
// says).
func (q *Queue[T]) getMsg(ctx context.Context, dst []byte, block bool, copyOut ring.CopyOut) ([]byte, error) {
	if q.join != nil {
		// Before anything is taken: an item this process could not be
		// tracked as holding would be one Join might wait for forever.
		if err := q.join.own(); err != nil {
			return nil, err
		}
	}
	if q.acct != nil {
		copyOut = q.acct.wrap(copyOut)
	}
	var msg []byte
	var err error
	if block {
		msg, err = q.r.GetWith(ctx, dst, copyOut)
	} else {
		msg, err = q.r.TryGetWith(dst, copyOut)
	}
	if err != nil {
		if errors.Is(err, ring.ErrCorrupt) {
			// The ring consumed the cell without copying anything out,
			// so nothing was recorded of the item.
			if q.join != nil {
				q.join.drop(false)
			}
		}
		return nil, err
	}
	q.h.loc.raceAcquire()
	return msg, nil
}

func (q *Queue[T]) decode(msg []byte, v *T) error {
	if q.lends {
		lent, body, err := borrowed(msg)
		// The references the item carried go back once the decoded
		// handles hold their own.
		defer giveBack(lent)
		if err != nil {
			if q.join != nil {
				q.join.drop(true)
			}
			return decodeErr("Get", err)
		}
		msg = body
	}
	if err := codec.Unmarshal(msg, v); err != nil {
		if q.join != nil {
			q.join.drop(true)
		}
		return decodeErr("Get", err)
	}
	return nil
}

// decodeErr is the error of a Get or Recv (op) whose message failed to
// decode: it wraps ErrCorrupt whatever the decoder's reason, including the
// limits it enforces on nesting and lengths (which wrap ErrTooLarge), and
// keeps the decoder's detail.
func decodeErr(op string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("mp: %s: %w", op, err)
	}
	return fmt.Errorf("mp: %s: %w: %w", op, ErrCorrupt, err)
}

// PutMany puts every item of vs in order, as Put does, stopping at the
// first error; it returns how many were put.
func (q *Queue[T]) PutMany(ctx context.Context, vs []T) (int, error) {
	for i, v := range vs {
		if err := q.Put(ctx, v); err != nil {
			return i, err
		}
	}
	return len(vs), nil
}

// GetMany waits, as Get does, for one item, then takes up to max-1 more
// that are ready without waiting.
func (q *Queue[T]) GetMany(ctx context.Context, max int) ([]T, error) {
	v, err := q.Get(ctx)
	if err != nil {
		return nil, err
	}
	vs := []T{v}
	for len(vs) < max {
		v, err := q.TryGet()
		if err != nil {
			break
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// Len returns the number of items in the queue, counting those being put
// or taken at this moment: a snapshot.
func (q *Queue[T]) Len() int {
	q.check()
	return q.r.Len()
}

// Empty reports whether the queue has no item: a snapshot.
func (q *Queue[T]) Empty() bool { return q.Len() == 0 }

// Full reports whether the queue holds maxsize items: a snapshot.
func (q *Queue[T]) Full() bool {
	q.check()
	return q.max > 0 && q.Len() >= q.max
}

// Close closes the queue for every process: further puts fail with
// ErrClosed; gets take what is left, then fail with ErrClosed; blocked
// callers are woken. Closing twice does nothing.
func (q *Queue[T]) Close() {
	q.check()
	q.r.Close()
}

func (q *Queue[T]) check() {
	if q == nil || !q.h.valid() {
		panic(fmt.Errorf("%w: a queue must be made with NewQueue, NewSimpleQueue or NewJoinableQueue", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the queue's handle.
func (q *Queue[T]) MarshalBinary() ([]byte, error) { return q.h.marshal() }

// UnmarshalBinary makes q refer to the queue that data encodes. It fails
// with ErrInvalidHandle if data is not the handle of a queue of T.
func (q *Queue[T]) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindQueue, data); err != nil {
		return err
	}
	o, err := openQueue[T](h)
	if err != nil {
		return err
	}
	*q = *o
	return nil
}

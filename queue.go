package mp

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/ring"
	"github.com/multiproc/mp/internal/wait"
)

// Errors of queues.
var (
	// ErrFull is returned by TryPut when the queue holds maxsize items
	// (Python's queue.Full).
	ErrFull = errors.New("mp: queue is full")
	// ErrEmpty is returned by TryGet when the queue has no item (Python's
	// queue.Empty).
	ErrEmpty = errors.New("mp: queue is empty")
	// ErrClosed is returned by puts after Close, and by gets once the queue
	// is closed and every item put before has been taken; and by every
	// call on a pipe's Conn after its own Close.
	ErrClosed = errors.New("mp: use of a closed queue or connection")
	// ErrTooLarge is returned by Put for an item whose encoding exceeds
	// MaxMessage.
	ErrTooLarge = errors.New("mp: item too large")
	// ErrTasksLost is returned by JoinableQueue.Join when items were taken
	// by a process that died before marking them done (or died in the
	// middle of taking or putting them): Join does not wait for those
	// forever, but reports how many there were.
	ErrTasksLost = errors.New("mp: tasks lost with a dead process")
	// ErrTaskDone is returned by TaskDone called more times than items were
	// put (Python's ValueError).
	ErrTaskDone = errors.New("mp: TaskDone called more times than there were items")
)

// MaxMessage is the largest encoded item a queue carries.
const MaxMessage = ring.MaxMessage

// DefaultQueueSize is the capacity of a queue made with maxsize <= 0.
// Python's unbounded queues are bounded by memory; ours by this many items,
// which live in shared memory.
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
// forever on either.
//
// Blocked Puts and Gets park their goroutines without holding OS threads.
// A Queue may be passed to child processes as an argument, inside a struct,
// or through another queue.
type Queue[T any] struct {
	h     handle
	r     *ring.Ring
	max   int     // maxsize, or 0
	count *uint32 // items queued, when maxsize is not the ring's own capacity
	slots *uint32 // futex word bumped when count falls, for blocked Puts
	join  *joinState
	raw   int // rawBytes or rawString when T is []byte or string
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
	qCount      = 24 // u32
	qSlots      = 28 // u32
	qUnfinished = 32 // u32: JoinableQueue's items put and not yet done (futex word)
	qLost       = 36 // u32: tasks given up as lost
	qRingLost   = 40 // u32: ring losses already accounted for
	qHolders    = 64 // JoinableQueue: per-process items taken, not yet done
	qBlockSize  = qHolders + holdersSize

	qJoinable = 1
)

// NewQueue returns an empty queue holding at most maxsize items; maxsize
// <= 0 means DefaultQueueSize.
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
	capacity := maxsize
	if capacity <= 0 {
		capacity = DefaultQueueSize
	}
	off, err := ring.New(a, capacity)
	if err != nil {
		a.Free(h.off)
		return nil, fmt.Errorf("mp: NewQueue: %w", err)
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
	q := &Queue[T]{h: h, r: r, max: int(atomic.LoadUint32(h.u32(qMax)))}
	switch reflect.TypeFor[T]() {
	case reflect.TypeFor[[]byte]():
		q.raw = rawBytes
	case reflect.TypeFor[string]():
		q.raw = rawString
	}
	if q.max > 0 && q.max != r.Cap() {
		// The ring's capacity is a power of two; Python's maxsize is exact.
		q.count, q.slots = h.u32(qCount), h.u32(qSlots)
	}
	if atomic.LoadUint32(h.u32(qFlags))&qJoinable != 0 {
		q.join = &joinState{unfinished: h.u32(qUnfinished), lost: h.u32(qLost), ringLost: h.u32(qRingLost)}
		q.join.holders.base = unsafe.Add(h.base, qHolders)
		q.join.countingCopy = q.join.countingCopyFunc
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
// ErrUnencodable or ErrTooLarge (nothing is put), or an error from shared
// memory (full arena).
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
	msg, err := codec.AppendMarshal((*bp)[:0], v)
	if err != nil {
		return fmt.Errorf("mp: Put: %w", err)
	}
	*bp = msg[:0]
	return q.putMsg(ctx, msg, nil, block)
}

// putMsg puts the encoded item head+body.
func (q *Queue[T]) putMsg(ctx context.Context, head, body []byte, block bool) error {
	if q.count != nil {
		if err := q.takeSlot(ctx, block); err != nil {
			return err
		}
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
		if q.count != nil {
			q.giveSlot()
		}
		return queueErr(err)
	}
	q.h.loc.raceRelease()
	return nil
}

// takeSlot reserves room for one item under an exact maxsize.
func (q *Queue[T]) takeSlot(ctx context.Context, block bool) error {
	for {
		c := atomic.LoadUint32(q.count)
		if int(c) < q.max {
			if atomic.CompareAndSwapUint32(q.count, c, c+1) {
				return nil
			}
			continue
		}
		if !block {
			return ErrFull
		}
		if q.r.Closed() {
			return ErrClosed
		}
		s := atomic.LoadUint32(q.slots)
		if int(atomic.LoadUint32(q.count)) < q.max {
			continue
		}
		if err := wait.Wait(ctx, q.slots, s, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func (q *Queue[T]) giveSlot() {
	atomic.AddUint32(q.count, ^uint32(0))
	atomic.AddUint32(q.slots, 1)
	wait.Wake(q.slots, 1)
}

// Get removes and returns the item at the head of the queue, blocking
// while the queue is empty, until ctx ends. Once the queue is closed and
// empty it returns ErrClosed. A corrupt item in shared memory is an error
// (the item is dropped), never a panic.
func (q *Queue[T]) Get(ctx context.Context) (T, error) { return q.get(ctx, true) }

// TryGet is Get without blocking: it returns ErrEmpty if there is no item.
func (q *Queue[T]) TryGet() (T, error) { return q.get(context.Background(), false) }

func (q *Queue[T]) get(ctx context.Context, block bool) (T, error) {
	q.check()
	var v T
	if q.raw != 0 {
		// The ring copies the item into a new buffer, which the result
		// then shares: one copy out of shared memory, none after.
		msg, err := q.getMsg(ctx, nil, block, nil)
		if err != nil {
			return v, err
		}
		var ok bool
		if q.raw == rawBytes {
			*(*[]byte)(unsafe.Pointer(&v)), ok = codec.AdoptBytes(msg)
		} else {
			*(*string)(unsafe.Pointer(&v)), ok = codec.AdoptString(msg)
		}
		if ok {
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
		copyOut = q.join.counting(copyOut)
	}
	var msg []byte
	var err error
	if block {
		msg, err = q.r.GetWith(ctx, dst, copyOut)
	} else {
		msg, err = q.r.TryGetWith(dst, copyOut)
	}
	if err != nil {
		return nil, queueErr(err)
	}
	q.h.loc.raceAcquire()
	if q.count != nil {
		q.giveSlot()
	}
	return msg, nil
}

func (q *Queue[T]) decode(msg []byte, v *T) error {
	if err := codec.Unmarshal(msg, v); err != nil {
		return fmt.Errorf("mp: Get: %w", err)
	}
	return nil
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

// Len returns the number of items in the queue: a snapshot, exact at the
// moment it was read.
func (q *Queue[T]) Len() int {
	q.check()
	if q.count != nil {
		return int(atomic.LoadUint32(q.count))
	}
	return q.r.Len()
}

// Empty reports whether the queue has no item: a snapshot.
func (q *Queue[T]) Empty() bool { return q.Len() == 0 }

// Full reports whether the queue holds maxsize items: a snapshot.
func (q *Queue[T]) Full() bool {
	q.check()
	limit := q.max
	if limit == 0 {
		limit = q.r.Cap()
	}
	return q.Len() >= limit
}

// Close closes the queue for every process: further puts fail with
// ErrClosed; gets take what is left, then fail with ErrClosed; blocked
// callers are woken. Closing twice does nothing.
func (q *Queue[T]) Close() {
	q.check()
	q.r.Close()
	if q.slots != nil {
		atomic.AddUint32(q.slots, 1)
		wait.Wake(q.slots, math.MaxInt32)
	}
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

func queueErr(err error) error {
	switch {
	case errors.Is(err, ring.ErrFull):
		return ErrFull
	case errors.Is(err, ring.ErrEmpty):
		return ErrEmpty
	case errors.Is(err, ring.ErrClosed):
		return ErrClosed
	case errors.Is(err, ring.ErrTooLarge):
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case errors.Is(err, ring.ErrCorrupt):
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return err
}

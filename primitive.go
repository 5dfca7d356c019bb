package mp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/multiproc/mp/internal/refs"
	"github.com/multiproc/mp/internal/shm"
)

// kind tags the primitive a handle refers to, so that a decoded handle of
// the wrong type is an error rather than a misread of shared memory.
type kind byte

const (
	kindLock kind = iota + 1
	kindRLock
	kindSemaphore
	kindEvent
	kindCondition
	kindBarrier
	kindQueue
	kindConn
	kindValue
	kindArray
	kindDict
	kindList
)

func (k kind) String() string {
	switch k {
	case kindLock:
		return "Lock"
	case kindRLock:
		return "RLock"
	case kindSemaphore:
		return "Semaphore"
	case kindEvent:
		return "Event"
	case kindCondition:
		return "Condition"
	case kindBarrier:
		return "Barrier"
	case kindQueue:
		return "Queue"
	case kindConn:
		return "Conn"
	case kindValue:
		return "Value"
	case kindArray:
		return "Array"
	case kindDict:
		return "Dict"
	case kindList:
		return "List"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// ErrInvalidHandle is returned when decoding a primitive from bytes that do
// not describe one of the right type, and by MarshalBinary of a zero
// primitive (one not made by its New function). The other methods of a
// zero primitive panic with an error wrapping ErrInvalidHandle, but for
// String, and for Close where the type says that it does nothing.
var ErrInvalidHandle = errors.New("mp: invalid handle")

// handle is what makes a primitive encodable: where it lives in the tree's
// arena, and what it is. Every process of the tree maps the same arena, so
// the offset means the same thing in all of them.
type handle struct {
	kind kind
	off  shm.Offset
	base unsafe.Pointer // the block in this process's mapping
	loc  *local         // this process's companion state for the block
	ref  *ref           // this handle's claim on the block
}

// ref is one handle's claim on a primitive's memory: while it is
// reachable, this process holds the primitive. It is released by Close,
// or by the garbage collector once no copy of the handle is left.
type ref struct {
	id      refs.ID
	closed  atomic.Bool
	cleanup runtime.Cleanup
}

func newRef(id refs.ID, off shm.Offset) *ref {
	r := &ref{id: id}
	r.cleanup = runtime.AddCleanup(r, release, handleRef{id, off})
	return r
}

type handleRef struct {
	id  refs.ID
	off shm.Offset
}

// release gives up one handle's claim. The last handle of this process to
// go takes the process's companion state with it.
func release(r handleRef) {
	arena.refs.Detach(r.id, func() { locals.Delete(r.off) })
}

// close releases h's claim at once; h must not be used afterwards. It
// reports whether this call was the one that closed it.
func (h *handle) close() bool {
	if h.ref == nil || h.ref.closed.Swap(true) {
		return false
	}
	h.ref.cleanup.Stop()
	release(handleRef{h.ref.id, h.off})
	h.base = nil // see valid
	return true
}

// local is what a process keeps beside a primitive's shared block, shared
// by every handle of that primitive in the process.
type local struct {
	// gate admits one goroutine of this process at a time to wait on the
	// shared word, so that blocked goroutines queue here, parked, instead
	// of each waking on every release (see mutex).
	gate chan struct{}
	// hb carries happens-before edges for the race detector: it does not
	// see atomics on memory outside Go's heap, such as the arena, so every
	// release also updates hb and every acquire reads it.
	hb atomic.Uint64
}

var locals sync.Map // shm.Offset -> *local

func localFor(off shm.Offset) *local {
	if l, ok := locals.Load(off); ok {
		return l.(*local)
	}
	l, _ := locals.LoadOrStore(off, &local{gate: make(chan struct{}, 1)})
	return l.(*local)
}

// raceRelease and raceAcquire tell the race detector what the arena's
// atomics already guarantee; they compile to nothing without -race.
func (l *local) raceRelease() {
	if raceEnabled {
		l.hb.Add(1)
	}
}

func (l *local) raceAcquire() {
	if raceEnabled {
		l.hb.Load()
	}
}

// An encoded handle: "mp", the kind, the tree's identity, the object's
// entry and generation, and its offset.
const handleLen = 2 + 1 + 8 + 4 + 4 + 8

// alloc makes a new zeroed block of size bytes for a primitive, held by
// this process through the handle returned.
func alloc(k kind, size int) (handle, error) {
	t, err := treeRefs()
	if err != nil {
		return handle{}, err
	}
	id, off, err := t.New(uint8(k), size)
	if errors.Is(err, shm.ErrNoSpace) {
		// Primitives dropped without Close wait for the garbage collector,
		// and dead processes' references for a sweep: give both a chance
		// before failing.
		var r handleRef
		r, err = retryNoSpace(func() (handleRef, error) {
			id, off, err := t.New(uint8(k), size)
			return handleRef{id, off}, err
		})
		id, off = r.id, r.off
	}
	if err != nil {
		return handle{}, fmt.Errorf("mp: new %s: %w", k, noSpace(err))
	}
	return handle{kind: k, off: off, base: unsafe.Pointer(&arena.a.Bytes(off, size)[0]), loc: localFor(off), ref: newRef(id, off)}, nil
}

func (h *handle) marshal() ([]byte, error) {
	if h.ref != nil && h.ref.closed.Load() {
		return nil, fmt.Errorf("%w: %s", ErrClosed, h.kind)
	}
	if h.base == nil {
		return nil, fmt.Errorf("%w: zero value", ErrInvalidHandle)
	}
	return encodeHandle(h.kind, arena.refs.Tree(), h.ref.id, h.off), nil
}

func encodeHandle(k kind, tree uint64, id refs.ID, off shm.Offset) []byte {
	b := make([]byte, handleLen)
	b[0], b[1], b[2] = 'm', 'p', byte(k)
	binary.LittleEndian.PutUint64(b[3:], tree)
	binary.LittleEndian.PutUint32(b[11:], id.Index)
	binary.LittleEndian.PutUint32(b[15:], id.Gen)
	binary.LittleEndian.PutUint64(b[19:], uint64(off))
	return b
}

// unmarshal resolves an encoded handle of kind k in this process's arena,
// and makes this process a holder of the primitive.
func (h *handle) unmarshal(k kind, b []byte) error {
	if len(b) != handleLen || b[0] != 'm' || b[1] != 'p' {
		return fmt.Errorf("%w: not a %s", ErrInvalidHandle, k)
	}
	if kind(b[2]) != k {
		return fmt.Errorf("%w: a %s, not a %s", ErrInvalidHandle, kind(b[2]), k)
	}
	t, err := treeRefs()
	if err != nil {
		return err
	}
	if binary.LittleEndian.Uint64(b[3:]) != t.Tree() {
		return fmt.Errorf("%w: a %s of another process tree", ErrInvalidHandle, k)
	}
	id := refs.ID{Index: binary.LittleEndian.Uint32(b[11:]), Gen: binary.LittleEndian.Uint32(b[15:])}
	off := shm.Offset(binary.LittleEndian.Uint64(b[19:]))
	if err := t.Attach(id, uint8(k), off); err != nil {
		if errors.Is(err, refs.ErrGone) {
			return fmt.Errorf("%w: the %s was closed by every process that held it: %w", ErrInvalidHandle, k, ErrClosed)
		}
		return fmt.Errorf("%w: %s: %v", ErrInvalidHandle, k, err)
	}
	size, err := arena.a.BlockSize(off)
	if err != nil {
		t.Detach(id, nil)
		return fmt.Errorf("%w: %s at offset %d: %v", ErrInvalidHandle, k, off, err)
	}
	if h.ref != nil {
		h.close() // decoding over a handle in use replaces it
	}
	*h = handle{kind: k, off: off, base: unsafe.Pointer(&arena.a.Bytes(off, size)[0]), loc: localFor(off), ref: newRef(id, off)}
	return nil
}

// u32 and u64 return the words at byte offset i of the block.
func (h *handle) u32(i uintptr) *uint32 { return (*uint32)(unsafe.Add(h.base, i)) }
func (h *handle) u64(i uintptr) *uint64 { return (*uint64)(unsafe.Add(h.base, i)) }

// valid reports whether h was made by a New function or decoded, and
// panics with an error wrapping ErrClosed if it was closed since (close
// clears base, so that the check of every call stays one load).
func (h *handle) valid() bool {
	if h.base != nil {
		return true
	}
	if h.ref != nil && h.ref.closed.Load() {
		panic(fmt.Errorf("%w: %s used after Close", ErrClosed, h.kind))
	}
	return false
}

// Must returns v, or panics if err is not nil, for constructors called
// where failure can only be a programming error, as template.Must does:
//
//	lock := mp.Must(mp.NewLock())
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func shmOffset(v uint64) shm.Offset { return shm.Offset(v) }

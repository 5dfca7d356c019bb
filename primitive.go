package mp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

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
// not describe one of the right type, and by methods of a zero primitive
// (one not made by its New function).
var ErrInvalidHandle = errors.New("mp: invalid handle")

// handle is what makes a primitive encodable: where it lives in the tree's
// arena, and what it is. Every process of the tree maps the same arena, so
// the offset means the same thing in all of them.
type handle struct {
	kind kind
	off  shm.Offset
	base unsafe.Pointer // the block in this process's mapping
	loc  *local         // this process's companion state for the block
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

const handleLen = 2 + 1 + 8 // "mp", kind, offset

// alloc makes a new zeroed block of size bytes for a primitive.
func alloc(k kind, size int) (handle, error) {
	a, err := treeArena()
	if err != nil {
		return handle{}, err
	}
	off, err := a.Alloc(size)
	if err != nil {
		return handle{}, fmt.Errorf("mp: new %s: %w", k, err)
	}
	return handle{kind: k, off: off, base: unsafe.Pointer(&a.Bytes(off, size)[0]), loc: localFor(off)}, nil
}

func (h *handle) marshal() ([]byte, error) {
	if h.base == nil {
		return nil, fmt.Errorf("%w: zero value", ErrInvalidHandle)
	}
	b := make([]byte, handleLen)
	b[0], b[1], b[2] = 'm', 'p', byte(h.kind)
	binary.LittleEndian.PutUint64(b[3:], uint64(h.off))
	return b, nil
}

// unmarshal resolves an encoded handle of kind k in this process's arena.
func (h *handle) unmarshal(k kind, b []byte) error {
	if len(b) != handleLen || b[0] != 'm' || b[1] != 'p' {
		return fmt.Errorf("%w: not a %s", ErrInvalidHandle, k)
	}
	if kind(b[2]) != k {
		return fmt.Errorf("%w: a %s, not a %s", ErrInvalidHandle, kind(b[2]), k)
	}
	a, err := treeArena()
	if err != nil {
		return err
	}
	off := shm.Offset(binary.LittleEndian.Uint64(b[3:]))
	size, err := a.BlockSize(off)
	if err != nil {
		return fmt.Errorf("%w: %s at offset %d: %v", ErrInvalidHandle, k, off, err)
	}
	*h = handle{kind: k, off: off, base: unsafe.Pointer(&a.Bytes(off, size)[0]), loc: localFor(off)}
	return nil
}

// u32 and u64 return the words at byte offset i of the block.
func (h *handle) u32(i uintptr) *uint32 { return (*uint32)(unsafe.Add(h.base, i)) }
func (h *handle) u64(i uintptr) *uint64 { return (*uint64)(unsafe.Add(h.base, i)) }

func (h *handle) valid() bool { return h.base != nil }

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

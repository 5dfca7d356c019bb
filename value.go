package mp

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"sync/atomic"
	"unsafe"

	"github.com/multiproc/mp/internal/atom"
	"github.com/multiproc/mp/internal/shm"
)

// Scalar is the types a Value or an Array can hold: Go's fixed-size numbers
// and bool, and types defined on them (time.Duration, say). None is wider
// than 8 bytes, which is what lets every access be a single atomic
// operation on shared memory, with nothing to encode or decode.
type Scalar interface {
	~bool |
		~int | ~int8 | ~int16 | ~int32 | ~int64 |
		~uint | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~uintptr |
		~float32 | ~float64
}

// SharedOption configures a Value or an Array when it is made.
type SharedOption func(*sharedConfig)

type sharedConfig struct {
	lock *Lock
}

// WithLock makes a Value or an Array use l as its lock, instead of a lock
// of its own: Python's Value(typecode, v, lock=l). Several values and arrays
// given the same Lock are then updated together under it. A nil l means the
// default, a lock of their own.
func WithLock(l *Lock) SharedOption { return func(c *sharedConfig) { c.lock = l } }

func sharedOptions(opts []SharedOption) (sharedConfig, error) {
	var c sharedConfig
	for _, o := range opts {
		o(&c)
	}
	if c.lock != nil && !c.lock.h.valid() {
		return c, fmt.Errorf("%w: WithLock: a Lock must be made with NewLock", ErrInvalidHandle)
	}
	return c, nil
}

// The block of a Value or an Array starts with this header. Its lock word
// is used unless the block names another Lock (WithLock); naming that Lock
// by offset is what lets a decoded handle find it in any process.
const (
	shLock    = 0  // u64: the mutex, if no Lock was given
	shType    = 8  // u64: hash of the element type, checked when a handle is decoded
	shLockAt  = 16 // u64: offset of the Lock given with WithLock, or 0
	shWord    = 24 // Value: the value; Array: the length
	shLockRef = 32 // u64: the reference to that Lock the block holds
	shHeader  = 64 // Array: the elements
)

// sharedLock returns the lock of the block of h: the Lock it names, or its
// own lock word.
func sharedLock(h handle) (*Lock, error) {
	off := shm.Offset(atomic.LoadUint64(h.u64(shLockAt)))
	if off == 0 {
		return newLock(h), nil
	}
	lh, err := h.contained(shLockRef, kindLock, off)
	if err != nil {
		return nil, fmt.Errorf("the %s's Lock: %w", h.kind, err)
	}
	return newLock(lh), nil
}

// allocShared makes the block of a Value or an Array of elements of type
// E: the header, then extra bytes.
func allocShared[E Scalar](k kind, c sharedConfig, extra int) (handle, error) {
	h, err := alloc(k, shHeader+extra)
	if err != nil {
		return handle{}, err
	}
	atomic.StoreUint64(h.u64(shType), typeHash[E]())
	if c.lock != nil {
		atomic.StoreUint64(h.u64(shLockAt), uint64(c.lock.h.off))
		if err := h.contain(shLockRef, &c.lock.h); err != nil {
			h.close()
			return handle{}, err
		}
	}
	return h, nil
}

// numKind is how Add treats a Scalar type's bits.
type numKind uint8

const (
	numInt numKind = iota // two's complement, signed or not
	numFloat
	numBool
)

func numKindOf[T Scalar]() numKind {
	switch reflect.TypeFor[T]().Kind() {
	case reflect.Float32, reflect.Float64:
		return numFloat
	case reflect.Bool:
		return numBool
	}
	return numInt
}

// toBits and fromBits convert between a T and the zero-extended bits of its
// memory, which is what package atom works on. They go through the
// unsigned type of T's size, so that they are right in either byte order.
func toBits[T Scalar](x T) uint64 {
	p := unsafe.Pointer(&x)
	switch unsafe.Sizeof(x) {
	case 1:
		return uint64(*(*uint8)(p))
	case 2:
		return uint64(*(*uint16)(p))
	case 4:
		return uint64(*(*uint32)(p))
	}
	return *(*uint64)(p)
}

func fromBits[T Scalar](b uint64) T {
	var x T
	p := unsafe.Pointer(&x)
	switch unsafe.Sizeof(x) {
	case 1:
		*(*uint8)(p) = uint8(b)
	case 2:
		*(*uint16)(p) = uint16(b)
	case 4:
		*(*uint32)(p) = uint32(b)
	default:
		*(*uint64)(p) = b
	}
	return x
}

// addFloat adds the float of delta's bits to the float at p, with a
// compare-and-swap loop since no processor adds floats atomically, and
// returns the new bits.
func addFloat(p unsafe.Pointer, size uintptr, delta uint64) uint64 {
	for {
		old := atom.Load(p, size)
		var n uint64
		if size == 4 {
			n = uint64(math.Float32bits(math.Float32frombits(uint32(old)) + math.Float32frombits(uint32(delta))))
		} else {
			n = math.Float64bits(math.Float64frombits(old) + math.Float64frombits(delta))
		}
		if atom.CompareAndSwap(p, size, old, n) {
			return n
		}
	}
}

// Value is a number or a bool in shared memory, usable from every process
// of the tree: Python's multiprocessing.Value.
//
// Load, Store, Swap, Add and CompareAndSwap are atomic in every process and
// goroutine, and never block: a counter needs no lock. A compound update
// (read, compute, write back; or a change to several values together) takes
// the Value's lock with Lock or Acquire, as Python's
//
//	with v.get_lock(): v.value = f(v.value)
//
// The lock guards only against other holders of it: the atomic methods do
// not wait for it, so every writer of a Value updated under its lock must
// hold the lock, as in Python. The lock is the Value's own, or a Lock given
// with WithLock. It survives the death of its holder: the next Acquire
// returns ErrOwnerDied, and the Value stays usable.
//
// A Value may be passed to child processes as an argument, inside a struct
// or through a queue; every copy refers to the same value and the same
// lock. Its memory lives as long as the process tree.
//
// The zero Value is not usable: make one with NewValue. Its methods panic
// with an error wrapping ErrInvalidHandle; Close does nothing.
type Value[T Scalar] struct {
	h    handle
	p    unsafe.Pointer // the value
	size uintptr
	num  numKind
	lock *Lock
}

// NewValue returns a new Value holding v. It fails with an error wrapping
// ErrInvalidHandle for a WithLock of a Lock not made by NewLock, and
// otherwise only if the tree's shared memory cannot be created or is full.
func NewValue[T Scalar](v T, opts ...SharedOption) (*Value[T], error) {
	c, err := sharedOptions(opts)
	if err != nil {
		return nil, err
	}
	h, err := allocShared[T](kindValue, c, 0)
	if err != nil {
		return nil, err
	}
	atom.Store(unsafe.Add(h.base, shWord), unsafe.Sizeof(v), toBits(v))
	x := new(Value[T])
	if err := x.open(h); err != nil {
		return nil, err
	}
	return x, nil
}

// open makes v refer to the Value in block h, or fails leaving v as it was
// (see Array.open).
func (v *Value[T]) open(h handle) error {
	if got, want := atomic.LoadUint64(h.u64(shType)), typeHash[T](); got != want {
		return fmt.Errorf("%w: the Value does not hold %s", ErrInvalidHandle, reflect.TypeFor[T]())
	}
	l, err := sharedLock(h)
	if err != nil {
		return err
	}
	var zero T
	v.h, v.p, v.size, v.num, v.lock = h, unsafe.Add(h.base, shWord), unsafe.Sizeof(zero), numKindOf[T](), l
	return nil
}

// Load returns the value.
func (v *Value[T]) Load() T {
	v.check()
	x := fromBits[T](atom.Load(v.p, v.size))
	v.h.loc.raceAcquire()
	return x
}

// Store sets the value to x.
func (v *Value[T]) Store(x T) {
	v.check()
	v.h.loc.raceRelease()
	atom.Store(v.p, v.size, toBits(x))
}

// Swap sets the value to x and returns the value it replaced.
func (v *Value[T]) Swap(x T) (old T) {
	v.check()
	v.h.loc.raceRelease()
	return fromBits[T](atom.Swap(v.p, v.size, toBits(x)))
}

// Add adds delta to the value and returns the new value. Integers wrap
// around on overflow, as Go's arithmetic does; floats are added with a
// compare-and-swap loop, so under contention an Add may take a few tries.
//
// Adding bools has no meaning, and Add on a Value of a bool type panics
// with an error wrapping ErrNotSupported: a programming error, like an
// out-of-range index, that the first run of the code shows.
func (v *Value[T]) Add(delta T) T {
	v.check()
	v.h.loc.raceRelease()
	switch v.num {
	case numInt:
		return fromBits[T](atom.Add(v.p, v.size, toBits(delta)))
	case numFloat:
		return fromBits[T](addFloat(v.p, v.size, toBits(delta)))
	}
	panic(fmt.Errorf("%w: Add on a Value of %s", ErrNotSupported, reflect.TypeFor[T]()))
}

// CompareAndSwap sets the value to new if it is old, and reports whether it
// did. It compares representations, not values: for floats a NaN matches
// the same NaN, and 0 and -0 differ, so that a loop that read a NaN can
// replace it.
func (v *Value[T]) CompareAndSwap(old, new T) bool {
	v.check()
	v.h.loc.raceRelease()
	return atom.CompareAndSwap(v.p, v.size, toBits(old), toBits(new))
}

// Acquire takes the Value's lock, blocking until it holds it or ctx ends.
// It returns nil, or ErrOwnerDied if the previous holder died holding the
// lock (the caller then holds it, and should check the values the lock
// guards before releasing it), or ctx.Err() (the caller does not hold it).
func (v *Value[T]) Acquire(ctx context.Context) error {
	v.check()
	return v.lock.Acquire(ctx)
}

// Release releases the Value's lock. It returns ErrNotAcquired if the lock
// is not held.
func (v *Value[T]) Release() error {
	v.check()
	return v.lock.Release()
}

// Lock takes the Value's lock, blocking as long as it takes; with Unlock
// it makes a Value a sync.Locker. A previous holder's death is not
// reported here: use Acquire to learn of it.
func (v *Value[T]) Lock() {
	v.check()
	v.lock.Lock()
}

// Unlock releases the Value's lock; it panics if the lock is not held, as
// sync.Mutex does.
func (v *Value[T]) Unlock() {
	v.check()
	v.lock.Unlock()
}

func (v *Value[T]) check() {
	if !v.h.valid() {
		panic(fmt.Errorf("%w: a Value must be made with NewValue", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the handle of the Value (not the value), so that
// the Value can travel to another process of the tree.
func (v *Value[T]) MarshalBinary() ([]byte, error) { return v.h.marshal() }

// UnmarshalBinary makes v refer to the Value that data encodes, and to its
// lock. It returns an error wrapping ErrInvalidHandle if data is not the
// handle of a Value of T of this process tree.
func (v *Value[T]) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindValue, data); err != nil {
		return err
	}
	return v.open(h)
}

package mp

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"sync/atomic"
	"unsafe"

	"github.com/multiproc/mp/internal/atom"
)

// Array is a fixed-length array of numbers or bools in shared memory,
// usable from every process of the tree: Python's multiprocessing.Array.
//
// At and Set are atomic for each element, of any size, and never block:
// other processes see an element's old value or its new one, never a mix,
// and a Set never undoes a Set of a neighbouring element (1- and 2-byte
// elements are written with a compare-and-swap of the 32-bit word around
// them). They do not take the Array's lock. Update, CopyTo and CopyFrom
// do: they see and change the elements together, with respect to each
// other and to anyone holding the lock (Lock, Acquire), but not to a
// concurrent At or Set, which bypass it; code that mixes the two must hold
// the lock around its Sets.
//
// An index outside [0, Len()) panics, as it does for a Go slice, with an
// error wrapping ErrOutOfRange: the length never changes, so a bad index
// is a bug, not a condition to handle (unlike a List's, which may shrink
// under its caller).
//
// The lock is the Array's own, or a Lock given with WithLock, and survives
// the death of its holder: the next Acquire returns ErrOwnerDied. An Array
// may be passed to child processes as an argument, inside a struct or
// through a queue; every copy refers to the same elements. Its memory
// lives as long as the process tree.
//
// The zero Array is not usable: make one with NewArray. Its methods panic
// with an error wrapping ErrInvalidHandle; Close does nothing.
type Array[T Scalar] struct {
	h    handle
	data unsafe.Pointer // element 0
	n    int
	size uintptr
	lock *Lock
}

// wordSize is the widest element that a plain load or store of Go does not
// tear: Go's memory model promises it for values of up to a machine word.
const wordSize = unsafe.Sizeof(uintptr(0))

// NewArray returns a new Array of n elements, all zero. It fails with an
// error wrapping ErrBadArguments for a negative n, ErrNoSpace if the tree's
// shared memory has no room for it, or ErrInvalidHandle for a WithLock of a
// Lock not made by NewLock.
//
// The elements are zero because the arena hands out zeroed memory, also
// when it reuses freed memory, so NewArray does not write them.
func NewArray[T Scalar](n int, opts ...SharedOption) (*Array[T], error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: NewArray of %d elements", ErrBadArguments, n)
	}
	c, err := sharedOptions(opts)
	if err != nil {
		return nil, err
	}
	var zero T
	size := unsafe.Sizeof(zero)
	if uint64(n) > (math.MaxInt-shHeader)/uint64(size) {
		return nil, fmt.Errorf("%w: NewArray of %d %d-byte elements", ErrNoSpace, n, size)
	}
	h, err := allocShared[T](kindArray, c, n*int(size))
	if err != nil {
		return nil, err
	}
	atomic.StoreUint64(h.u64(shWord), uint64(n))
	a := new(Array[T])
	if err := a.open(h); err != nil {
		return nil, err
	}
	return a, nil
}

// open makes a refer to the Array in block h, or fails leaving a as it
// was. It fills in its receiver rather than returning a new Array so that
// UnmarshalBinary need not copy one Array over another, which vet's
// copylocks check rightly questions for a type with a Lock method.
func (a *Array[T]) open(h handle) error {
	if got, want := atomic.LoadUint64(h.u64(shType)), typeHash[T](); got != want {
		return fmt.Errorf("%w: the Array does not hold %s", ErrInvalidHandle, reflect.TypeFor[T]())
	}
	ar, err := treeArena()
	if err != nil {
		return err
	}
	var zero T
	size := unsafe.Sizeof(zero)
	n := atomic.LoadUint64(h.u64(shWord))
	if block, err := ar.BlockSize(h.off); err != nil || n > uint64(block-shHeader)/uint64(size) {
		return fmt.Errorf("%w: the Array's length %d does not fit its block", ErrInvalidHandle, n)
	}
	l, err := sharedLock(h)
	if err != nil {
		return err
	}
	a.h, a.data, a.n, a.size, a.lock = h, unsafe.Add(h.base, shHeader), int(n), size, l
	return nil
}

// Len returns the number of elements, fixed when the Array was made.
func (a *Array[T]) Len() int {
	a.check()
	return a.n
}

func (a *Array[T]) at(i int) unsafe.Pointer {
	a.check()
	if uint(i) >= uint(a.n) {
		panic(fmt.Errorf("%w: Array index %d, length %d", ErrOutOfRange, i, a.n))
	}
	return unsafe.Add(a.data, uintptr(i)*a.size)
}

// At returns element i. It panics if i is out of range.
func (a *Array[T]) At(i int) T {
	x := fromBits[T](atom.Load(a.at(i), a.size))
	a.h.loc.raceAcquire()
	return x
}

// Set sets element i to x. It panics if i is out of range.
func (a *Array[T]) Set(i int, x T) {
	p := a.at(i)
	a.h.loc.raceRelease()
	atom.Store(p, a.size, toBits(x))
}

func (a *Array[T]) slice() []T { return unsafe.Slice((*T)(a.data), a.n) }

// Update calls f with the Array's lock held and a slice over its elements
// in shared memory: what f writes there, every process sees. It is the
// atomic read-modify-write of several elements, Python's
//
//	with arr.get_lock(): arr[0], arr[1] = arr[1], arr[0]
//
// f must not keep the slice, nor call the Array's locking methods (the
// lock is not reentrant). Update blocks until it holds the lock; it
// returns nil, or ErrOwnerDied if a process died holding the lock, in
// which case f has run all the same, on elements that the dead process may
// have left half-updated. If f panics, the lock is released and the panic
// goes on.
func (a *Array[T]) Update(f func(s []T)) error {
	a.check()
	err := a.lock.Acquire(context.Background())
	defer a.lock.Release()
	f(a.slice())
	return err
}

// CopyTo copies the elements into dst, as Go's copy does, under the lock,
// and returns how many it copied: min(len(dst), Len()). It blocks until it
// holds the lock.
func (a *Array[T]) CopyTo(dst []T) int {
	a.check()
	a.lock.Lock()
	defer a.lock.Unlock()
	s := a.slice()
	n := min(len(dst), len(s))
	// One element at a time, never a memmove, which may copy byte by byte
	// and show a concurrent Set's element half-written.
	if a.size > wordSize {
		for i := range n {
			dst[i] = fromBits[T](atom.Load(unsafe.Pointer(&s[i]), a.size))
		}
		return n
	}
	for i := range n {
		dst[i] = s[i]
	}
	return n
}

// CopyFrom copies src into the elements, as Go's copy does, under the lock,
// and returns how many it copied: min(len(src), Len()). It blocks until it
// holds the lock.
func (a *Array[T]) CopyFrom(src []T) int {
	a.check()
	a.lock.Lock()
	defer a.lock.Unlock()
	s := a.slice()
	n := min(len(src), len(s))
	if a.size > wordSize {
		for i := range n {
			atom.Store(unsafe.Pointer(&s[i]), a.size, toBits(src[i]))
		}
		return n
	}
	for i := range n {
		s[i] = src[i]
	}
	return n
}

// Acquire takes the Array's lock, blocking until it holds it or ctx ends.
// It returns nil, or ErrOwnerDied if the previous holder died holding the
// lock (the caller then holds it, and should check the elements before
// releasing it), or ctx.Err() (the caller does not hold it).
func (a *Array[T]) Acquire(ctx context.Context) error {
	a.check()
	return a.lock.Acquire(ctx)
}

// Release releases the Array's lock. It returns ErrNotAcquired if the lock
// is not held.
func (a *Array[T]) Release() error {
	a.check()
	return a.lock.Release()
}

// Lock takes the Array's lock, blocking as long as it takes; with Unlock
// it makes an Array a sync.Locker. A previous holder's death is not
// reported here: use Acquire to learn of it. Update, CopyTo and CopyFrom
// take the lock themselves: calling them while holding it deadlocks.
func (a *Array[T]) Lock() {
	a.check()
	a.lock.Lock()
}

// Unlock releases the Array's lock; it panics if the lock is not held, as
// sync.Mutex does.
func (a *Array[T]) Unlock() {
	a.check()
	a.lock.Unlock()
}

func (a *Array[T]) check() {
	if !a.h.valid() {
		panic(fmt.Errorf("%w: an Array must be made with NewArray", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the handle of the Array (not its elements), so
// that the Array can travel to another process of the tree.
func (a *Array[T]) MarshalBinary() ([]byte, error) { return a.h.marshal() }

// UnmarshalBinary makes a refer to the Array that data encodes, and to its
// lock. It returns an error wrapping ErrInvalidHandle if data is not the
// handle of an Array of T of this process tree.
func (a *Array[T]) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindArray, data); err != nil {
		return err
	}
	return a.open(h)
}

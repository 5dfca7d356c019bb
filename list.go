package mp

import (
	"fmt"
	"iter"
	"reflect"
	"sync/atomic"

	"github.com/multiproc/mp/internal/shmap"
)

// List is a sequence of values of type T in shared memory, usable from
// every process of the tree: Python's Manager().list() without the
// manager's server process.
//
// Values are encoded when stored and decoded when read, so a List holds
// copies. Each call is atomic, also when the calling process is killed in
// the middle of it, and calls are serialised by a lock in the List. Since
// other processes may change the length at any moment, an index is checked
// when the call runs: out of range is the error ErrOutOfRange, not a panic.
//
// A List may be passed to child processes as an argument, inside a struct
// or through a queue. Its memory lives as long as the process tree. Like a
// Dict, a List damaged by another process fails its calls with ErrCorrupt.
//
// The zero List is not usable: make one with NewList. Its methods panic with
// an error wrapping ErrInvalidHandle; Close does nothing.
type List[T any] struct {
	h handle
	m mutex
	s shmap.List
}

// NewList returns a new, empty List. It fails only if the tree's shared
// memory cannot be created or is full.
func NewList[T any]() (*List[T], error) {
	h, err := alloc(kindList, dictBlock)
	if err != nil {
		return nil, err
	}
	atomic.StoreUint64(h.u64(dictType), typeHash[[]T]())
	return openList[T](h)
}

func openList[T any](h handle) (*List[T], error) {
	if got, want := atomic.LoadUint64(h.u64(dictType)), typeHash[[]T](); got != want {
		return nil, fmt.Errorf("%w: the List does not hold %s", ErrInvalidHandle, reflect.TypeFor[T]())
	}
	a, err := treeArena()
	if err != nil {
		return nil, err
	}
	return &List[T]{h: h, m: mutex{state: h.u64(dictLock), loc: h.loc}, s: shmap.OpenList(a, h.off+dictMap)}, nil
}

// lock takes the List's lock. The caller defers the unlock (so that a
// panic cannot leave the List locked) and then calls recover.
func (l *List[T]) lock() {
	if !l.h.valid() {
		panic(fmt.Errorf("%w: a List must be made with NewList", ErrInvalidHandle))
	}
	lockShared(l.m)
}

// recover finishes the change of a process that died holding the lock and
// checks the List's structure (see Dict.recover).
func (l *List[T]) recover() error { return sharedErr(l.s.Recover()) }

func (l *List[T]) inRange(i int) error {
	if n := l.s.Len(); i < 0 || i >= n {
		return fmt.Errorf("%w: index %d, length %d", ErrOutOfRange, i, n)
	}
	return nil
}

// Append adds value at the end of the List. It fails, changing nothing,
// for a value that cannot be encoded or when shared memory is full.
func (l *List[T]) Append(value T) error {
	return l.store(value, func(b []byte) error { return sharedErr(l.s.Append(b)) })
}

// Get returns element i.
func (l *List[T]) Get(i int) (T, error) {
	var zero T
	l.lock()
	defer l.m.unlock()
	if err := l.recover(); err != nil {
		return zero, err
	}
	if err := l.inRange(i); err != nil {
		return zero, err
	}
	b, err := l.s.At(i)
	if err != nil {
		return zero, sharedErr(err)
	}
	return decodeShared[T](b, "List")
}

// Set replaces element i with value.
func (l *List[T]) Set(i int, value T) error {
	return l.store(value, func(b []byte) error {
		if err := l.inRange(i); err != nil {
			return err
		}
		return sharedErr(l.s.Set(i, b))
	})
}

// store encodes value, then, holding the List's lock and with any change
// a dead process left half done finished, gives the encoding to f, which
// stores it.
func (l *List[T]) store(value T, f func(b []byte) error) error {
	bp := getBuf()
	defer putBuf(bp)
	b, err := encodeShared((*bp)[:0], value, "List")
	if err != nil {
		return err
	}
	*bp = b
	l.lock()
	defer l.m.unlock()
	if err := l.recover(); err != nil {
		return err
	}
	return f(b)
}

// Delete removes element i, moving the later elements down by one, as
// Python's del l[i]. It costs time in proportion to the length, but for
// the last element.
func (l *List[T]) Delete(i int) error {
	l.lock()
	defer l.m.unlock()
	if err := l.recover(); err != nil {
		return err
	}
	if err := l.inRange(i); err != nil {
		return err
	}
	return sharedErr(l.s.Delete(i))
}

// Update replaces element i with f of its current value, atomically (see
// Dict.Update: f runs with the List locked and must not call it).
func (l *List[T]) Update(i int, f func(old T) T) error {
	bp := getBuf()
	defer putBuf(bp)
	l.lock()
	defer l.m.unlock()
	if err := l.recover(); err != nil {
		return err
	}
	if err := l.inRange(i); err != nil {
		return err
	}
	cur, err := l.s.At(i)
	if err != nil {
		return sharedErr(err)
	}
	old, err := decodeShared[T](cur, "List")
	if err != nil {
		return err
	}
	b, err := encodeShared((*bp)[:0], f(old), "List")
	if err != nil {
		return err
	}
	*bp = b
	return sharedErr(l.s.Set(i, b))
}

// Len returns the length of the List: a snapshot, since other processes
// may change it at any moment.
func (l *List[T]) Len() int {
	if !l.h.valid() {
		panic(fmt.Errorf("%w: a List must be made with NewList", ErrInvalidHandle))
	}
	return l.s.Len()
}

// Insert puts value before element i, moving element i and the later
// ones up by one, as Python's l.insert(i, value); i may be Len, which
// appends. An i outside 0 to Len is the error ErrOutOfRange (Python would
// clamp it). It costs time in proportion to the length, and fails,
// changing nothing, for a value that cannot be encoded or when shared
// memory is full.
func (l *List[T]) Insert(i int, value T) error {
	return l.store(value, func(b []byte) error {
		if n := l.s.Len(); i < 0 || i > n {
			return fmt.Errorf("%w: Insert at %d, length %d", ErrOutOfRange, i, n)
		}
		return sharedErr(l.s.Insert(i, b))
	})
}

// Pop removes the last element and returns it, as Python's l.pop(). It
// takes constant time. On an empty List it returns an error wrapping
// ErrOutOfRange. Pop is atomic: processes popping at once each get a
// different element, and every element is popped once.
func (l *List[T]) Pop() (T, error) { return l.pop(-1) }

// PopAt removes element i and returns it, moving the later elements down
// by one, as Python's l.pop(i): atomically, like Pop. It costs time in
// proportion to the length, but for the last element. An index out of
// range is the error ErrOutOfRange.
func (l *List[T]) PopAt(i int) (T, error) {
	if i < 0 {
		var zero T
		return zero, fmt.Errorf("%w: index %d", ErrOutOfRange, i)
	}
	return l.pop(i)
}

// pop removes and returns element i, the last one if i is -1.
func (l *List[T]) pop(i int) (T, error) {
	var zero T
	l.lock()
	defer l.m.unlock()
	if err := l.recover(); err != nil {
		return zero, err
	}
	n := l.s.Len()
	if n == 0 {
		return zero, fmt.Errorf("%w: pop from an empty List", ErrOutOfRange)
	}
	if i < 0 {
		i = n - 1
	}
	if err := l.inRange(i); err != nil {
		return zero, err
	}
	b, err := l.s.At(i)
	if err != nil {
		return zero, sharedErr(err)
	}
	// Decoded before the element goes, so that an element that cannot be
	// decoded stays where it is.
	v, err := decodeShared[T](b, "List")
	if err != nil {
		return zero, err
	}
	return v, sharedErr(l.s.Delete(i))
}

// Clear removes every element, atomically (see Dict.Clear), giving their
// memory back to the tree's arena.
func (l *List[T]) Clear() error {
	l.lock()
	defer l.m.unlock()
	return sharedErr(l.s.Clear())
}

// Items returns a consistent snapshot of the List's elements. It fails,
// with an error wrapping ErrCorrupt, if a stored element cannot be decoded.
func (l *List[T]) Items() ([]T, error) {
	var out []T
	err := l.each(func(_ int, v T) bool {
		out = append(out, v)
		return true
	})
	return out, err
}

// All returns an iterator over the indexes and elements of a consistent
// snapshot of the List, taken when the loop starts, in order, as
// slices.All: changes made by any process during the loop are not seen,
// and the loop's body may call the List. A List damaged by another process,
// or an element that cannot be decoded as T, ends the loop early and
// silently: Items returns such errors.
func (l *List[T]) All() iter.Seq2[int, T] {
	return func(yield func(int, T) bool) { _ = l.each(yield) }
}

// each calls f with each index and element of a snapshot until f returns
// false, and returns the first error of taking or decoding it.
func (l *List[T]) each(f func(i int, value T) bool) error {
	buf, ends, err := l.snapshot()
	if err != nil {
		return err
	}
	start := 0
	for i, end := range ends {
		v, err := decodeShared[T](buf[start:end], "List")
		if err != nil {
			return err
		}
		start = end
		if !f(i, v) {
			break
		}
	}
	return nil
}

// snapshot copies every element out of shared memory under the lock, so
// that decoding them does not hold it.
func (l *List[T]) snapshot() (buf []byte, ends []int, err error) {
	l.lock()
	defer l.m.unlock()
	if err := l.recover(); err != nil {
		return nil, nil, err
	}
	err = l.s.Each(func(_ int, v []byte) bool {
		buf = append(buf, v...)
		ends = append(ends, len(buf))
		return true
	})
	return buf, ends, sharedErr(err)
}

// MarshalBinary encodes the List's handle (not its contents).
func (l *List[T]) MarshalBinary() ([]byte, error) { return l.h.marshal() }

// UnmarshalBinary makes l refer to the List that data encodes. It fails
// with ErrInvalidHandle if data is not the handle of a List of T.
func (l *List[T]) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindList, data); err != nil {
		return err
	}
	o, err := openList[T](h)
	if err != nil {
		return err
	}
	*l = *o
	return nil
}

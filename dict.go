package mp

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"sync/atomic"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/shmap"
)

// Dict is a map from K to V in shared memory, usable from every process of
// the tree: Python's Manager().dict() without the manager's server process
// and its round trip per operation.
//
// Keys and values are encoded when stored and decoded when read, so a Dict
// holds copies: changing a value read from it changes nothing in the Dict.
// Keys are compared by their encoding, which for the comparable types of Go
// agrees with == except for floating-point keys (NaN equals itself, and
// 0 and -0 differ).
//
// Each call is atomic: other processes see it happen entirely or not at
// all, also when the calling process is killed in the middle of it. Calls
// are serialised by a lock in the Dict, so they may wait for each other,
// briefly, and for Update's function. Update makes a read-modify-write
// atomic; a sequence of calls that must be atomic together needs a Lock of
// its own, as in Python.
//
// A Dict may be passed to child processes as an argument, inside a struct
// or through a queue. Its memory lives as long as the process tree.
//
// A Dict whose shared memory another process damaged (a faulty child
// writing where it should not) makes its calls fail with ErrCorrupt; it
// never panics, hangs or touches other objects' memory, and a panic in
// Update's function leaves it unlocked.
//
// The zero Dict is not usable: make one with NewDict. Its methods panic with
// an error wrapping ErrInvalidHandle; Close does nothing.
type Dict[K comparable, V any] struct {
	h   handle
	m   mutex
	s   shmap.Map
	raw bool // K is string: keys are stored as their bytes
}

// The Dict's block: the lock word, the type check, then the map's header.
const (
	dictLock  = 0
	dictType  = 8
	dictMap   = 64
	dictBlock = dictMap + shmap.HeaderSize
)

// NewDict returns a new, empty Dict. It fails only if the tree's shared
// memory cannot be created or is full.
func NewDict[K comparable, V any]() (*Dict[K, V], error) {
	h, err := alloc(kindDict, dictBlock)
	if err != nil {
		return nil, err
	}
	atomic.StoreUint64(h.u64(dictType), typeHash[map[K]V]())
	return openDict[K, V](h)
}

func openDict[K comparable, V any](h handle) (*Dict[K, V], error) {
	if got, want := atomic.LoadUint64(h.u64(dictType)), typeHash[map[K]V](); got != want {
		return nil, fmt.Errorf("%w: the Dict is not a map[%s]%s", ErrInvalidHandle, reflect.TypeFor[K](), reflect.TypeFor[V]())
	}
	a, err := treeArena()
	if err != nil {
		return nil, err
	}
	return &Dict[K, V]{
		h:   h,
		m:   mutex{state: h.u64(dictLock), loc: h.loc},
		s:   shmap.OpenMap(a, h.off+dictMap),
		raw: reflect.TypeFor[K]() == reflect.TypeFor[string](),
	}, nil
}

// lock takes the Dict's lock. The caller defers the unlock (so that a
// panic cannot leave the Dict locked) and then calls recover.
func (d *Dict[K, V]) lock() {
	d.check()
	lockShared(d.m)
}

// recover finishes the change of a process that died holding the lock, so
// that every call finds the Dict as some sequence of complete calls left
// it, and checks the Dict's structure: an error wrapping ErrCorrupt if
// another process damaged it.
func (d *Dict[K, V]) recover() error { return sharedErr(d.s.Recover()) }

// lockShared takes a container's lock. Its only error is ErrOwnerDied, which
// the container's recovery answers.
func lockShared(m mutex) {
	_ = m.lock(context.Background())
}

// sharedErr makes an error of a container's shared structure (shm's
// corruption sentinel) one that wraps ErrCorrupt too.
func sharedErr(err error) error {
	if err != nil && errors.Is(err, shm.ErrCorrupt) && !errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}

func getBuf() *[]byte  { return bufs.Get().(*[]byte) }
func putBuf(b *[]byte) { bufs.Put(b) }

func (d *Dict[K, V]) key(buf []byte, k K) ([]byte, error) {
	if d.raw {
		return append(buf, any(k).(string)...), nil
	}
	b, err := codec.AppendMarshal(buf, k)
	if err != nil {
		return nil, fmt.Errorf("mp: Dict key: %w", err)
	}
	return b, nil
}

func (d *Dict[K, V]) decodeKey(b []byte) (K, error) {
	var k K
	if d.raw {
		*(any(&k).(*string)) = string(b)
		return k, nil
	}
	if err := codec.Unmarshal(b, &k); err != nil {
		return k, fmt.Errorf("%w: Dict key: %v", ErrCorrupt, err)
	}
	return k, nil
}

func decodeShared[V any](b []byte, what string) (V, error) {
	var v V
	if err := codec.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("%w: %s value: %v", ErrCorrupt, what, err)
	}
	return v, nil
}

func encodeShared[V any](buf []byte, v V, what string) ([]byte, error) {
	b, err := codec.AppendMarshal(buf, v)
	if err != nil {
		return nil, fmt.Errorf("mp: %s value: %w", what, err)
	}
	return b, nil
}

// Get returns the value stored for key and true, or the zero value and
// false. It fails only for a key that cannot be encoded, or a stored value
// that cannot be decoded as V.
func (d *Dict[K, V]) Get(key K) (V, bool, error) {
	bp := getBuf()
	defer putBuf(bp)
	kb, err := d.key((*bp)[:0], key)
	if err != nil {
		var zero V
		return zero, false, err
	}
	*bp = kb
	var v V
	d.lock()
	defer d.m.unlock()
	if err := d.recover(); err != nil {
		return v, false, err
	}
	vb, ok, err := d.s.Get(shmap.Hash(kb), kb)
	if ok {
		v, err = decodeShared[V](vb, "Dict")
	}
	return v, ok && err == nil, sharedErr(err)
}

// Set stores value for key. It fails, changing nothing, for a key or value
// that cannot be encoded (ErrUnencodable) or when the tree's shared memory
// is full (ErrNoSpace).
func (d *Dict[K, V]) Set(key K, value V) error {
	bp := getBuf()
	defer putBuf(bp)
	kb, err := d.key((*bp)[:0], key)
	if err != nil {
		return err
	}
	b, err := encodeShared(kb, value, "Dict")
	if err != nil {
		return err
	}
	*bp = b
	kb, vb := b[:len(kb)], b[len(kb):]
	d.lock()
	defer d.m.unlock()
	if err := d.recover(); err != nil {
		return err
	}
	return sharedErr(d.s.Set(shmap.Hash(kb), kb, vb))
}

// Delete removes key, and reports whether it was there. It fails only for a
// key that cannot be encoded.
func (d *Dict[K, V]) Delete(key K) (bool, error) {
	bp := getBuf()
	defer putBuf(bp)
	kb, err := d.key((*bp)[:0], key)
	if err != nil {
		return false, err
	}
	*bp = kb
	d.lock()
	defer d.m.unlock()
	if err := d.recover(); err != nil {
		return false, err
	}
	ok, err := d.s.Delete(shmap.Hash(kb), kb)
	return ok, sharedErr(err)
}

// Update replaces the value of key with what f returns, atomically: no
// other call on the Dict, in any process, comes between f's reading of the
// old value and the storing of the new one. f receives the current value
// and whether there is one, and returns the new value and whether to keep
// it (false deletes the key). It is Python's
//
//	with lock: d[key] = f(d[key])
//
// without the separate lock.
//
// f runs with the Dict locked: it must be short and must not call the Dict.
// If the process dies while f runs, the Dict is left as before the call; if
// f panics, the Dict is unchanged and the panic goes on. Update fails,
// changing nothing, for a key or value that cannot be encoded or decoded,
// or when the tree's shared memory is full.
func (d *Dict[K, V]) Update(key K, f func(old V, ok bool) (V, bool)) error {
	bp := getBuf()
	defer putBuf(bp)
	kb, err := d.key((*bp)[:0], key)
	if err != nil {
		return err
	}
	h := shmap.Hash(kb)
	d.lock()
	defer d.m.unlock()
	if err := d.recover(); err != nil {
		return err
	}
	old, ok, err := d.s.Get(h, kb)
	if err != nil {
		return sharedErr(err)
	}
	var v V
	if ok {
		if v, err = decodeShared[V](old, "Dict"); err != nil {
			return err
		}
	}
	v, keep := f(v, ok)
	if !keep {
		_, err := d.s.Delete(h, kb)
		return sharedErr(err)
	}
	b, err := encodeShared(kb, v, "Dict")
	if err != nil {
		return err
	}
	*bp = b
	return sharedErr(d.s.Set(h, b[:len(kb)], b[len(kb):]))
}

// Len returns the number of keys. Other processes may change it at any
// moment: it is a snapshot.
func (d *Dict[K, V]) Len() int {
	d.check()
	return d.s.Len()
}

// snapshot copies every key and value out of shared memory under the lock,
// so that decoding them does not hold it.
func (d *Dict[K, V]) snapshot() (buf []byte, ends []int, err error) {
	d.lock()
	defer d.m.unlock()
	if err := d.recover(); err != nil {
		return nil, nil, err
	}
	err = d.s.Each(func(k, v []byte) bool {
		buf = append(buf, k...)
		ends = append(ends, len(buf))
		buf = append(buf, v...)
		ends = append(ends, len(buf))
		return true
	})
	return buf, ends, sharedErr(err)
}

// All returns an iterator over the keys and values of a consistent
// snapshot of the Dict, taken when the loop starts, in no particular order,
// as maps.All: changes made by any process during the loop are not seen,
// and the loop's body may call the Dict. A Dict damaged by another process,
// or a stored value that cannot be decoded as V, ends the loop early and
// silently: Items and Keys return such errors.
func (d *Dict[K, V]) All() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) { _ = d.each(yield) }
}

// each calls f with each key and value of a snapshot until f returns
// false, and returns the first error of taking or decoding it.
func (d *Dict[K, V]) each(f func(key K, value V) bool) error {
	buf, ends, err := d.snapshot()
	if err != nil {
		return err
	}
	start := 0
	for i := 0; i < len(ends); i += 2 {
		k, err := d.decodeKey(buf[start:ends[i]])
		if err != nil {
			return err
		}
		v, err := decodeShared[V](buf[ends[i]:ends[i+1]], "Dict")
		if err != nil {
			return err
		}
		start = ends[i+1]
		if !f(k, v) {
			break
		}
	}
	return nil
}

// Items returns a consistent snapshot of the Dict as a Go map. It fails,
// with an error wrapping ErrCorrupt, if a stored key or value cannot be
// decoded.
func (d *Dict[K, V]) Items() (map[K]V, error) {
	m := make(map[K]V)
	err := d.each(func(k K, v V) bool {
		m[k] = v
		return true
	})
	return m, err
}

// Keys returns the keys of a consistent snapshot of the Dict, in no
// particular order.
func (d *Dict[K, V]) Keys() ([]K, error) {
	buf, ends, err := d.snapshot()
	if err != nil {
		return nil, err
	}
	keys := make([]K, 0, len(ends)/2)
	start := 0
	for i := 0; i < len(ends); i += 2 {
		k, err := d.decodeKey(buf[start:ends[i]])
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
		start = ends[i+1]
	}
	return keys, nil
}

// Clear removes every key, atomically: a call on the Dict from any process
// sees it either before the Clear or after it, never with some keys gone,
// also when the process calling Clear is killed in the middle of it (the
// next call finishes it). The memory of the keys and values goes back to
// the tree's arena. Clear fails only for a Dict damaged by another process
// (an error wrapping ErrCorrupt), which it empties all the same, so that
// the Dict is usable again.
func (d *Dict[K, V]) Clear() error {
	d.lock()
	defer d.m.unlock()
	// Clear finishes the change in progress itself (see recover).
	return sharedErr(d.s.Clear())
}

func (d *Dict[K, V]) check() {
	if !d.h.valid() {
		panic(fmt.Errorf("%w: a Dict must be made with NewDict", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the Dict's handle (not its contents).
func (d *Dict[K, V]) MarshalBinary() ([]byte, error) { return d.h.marshal() }

// UnmarshalBinary makes d refer to the Dict that data encodes. It fails
// with ErrInvalidHandle if data is not the handle of a Dict of K to V.
func (d *Dict[K, V]) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindDict, data); err != nil {
		return err
	}
	o, err := openDict[K, V](h)
	if err != nil {
		return err
	}
	*d = *o
	return nil
}

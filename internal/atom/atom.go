// Package atom does atomic loads, stores, compare-and-swaps and adds on
// values of 1, 2, 4 or 8 bytes in memory that other processes share.
//
// sync/atomic has no operations on 1- and 2-byte values, and Go's memory
// model promises nothing for a racing plain access to memory that another
// process writes. A value of 1 or 2 bytes is therefore read with an atomic
// load of the aligned 32-bit word that contains it, and written with a
// compare-and-swap of that word that changes only its own bytes. The CAS
// fails, and is retried, if any byte of the word changed in between, so
// two processes writing neighbouring elements never undo each other's
// writes, and a reader never sees half of a 2-byte value.
//
// Every pointer must be aligned to the size of its value, which makes a
// value of 1 or 2 bytes lie inside one 32-bit word; memory from the arena
// of package shm is 64-byte aligned.
package atom

import (
	"sync/atomic"
	"unsafe"
)

// bigEndian reports the byte order of the machine, which decides where in
// its containing word a small value's bits are.
var bigEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 0
}()

// word returns the 32-bit word that contains the size-byte value at p, the
// shift of the value's bits in it and their mask.
func word(p unsafe.Pointer, size uintptr) (w *uint32, shift uint, mask uint32) {
	off := uintptr(p) & 3
	w = (*uint32)(unsafe.Add(p, -int(off)))
	if bigEndian {
		off = 4 - off - size
	}
	shift = uint(off * 8)
	return w, shift, (1<<(size*8) - 1) << shift
}

// Load returns the size-byte value at p, zero-extended.
func Load(p unsafe.Pointer, size uintptr) uint64 {
	switch size {
	case 8:
		return atomic.LoadUint64((*uint64)(p))
	case 4:
		return uint64(atomic.LoadUint32((*uint32)(p)))
	}
	w, shift, mask := word(p, size)
	return uint64(atomic.LoadUint32(w)&mask) >> shift
}

// Store stores the low size bytes of v at p.
func Store(p unsafe.Pointer, size uintptr, v uint64) {
	switch size {
	case 8:
		atomic.StoreUint64((*uint64)(p), v)
		return
	case 4:
		atomic.StoreUint32((*uint32)(p), uint32(v))
		return
	}
	w, shift, mask := word(p, size)
	nv := uint32(v) << shift & mask
	for {
		cur := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, cur, cur&^mask|nv) {
			return
		}
	}
}

// Swap stores the low size bytes of v at p and returns the old value.
func Swap(p unsafe.Pointer, size uintptr, v uint64) uint64 {
	switch size {
	case 8:
		return atomic.SwapUint64((*uint64)(p), v)
	case 4:
		return uint64(atomic.SwapUint32((*uint32)(p), uint32(v)))
	}
	w, shift, mask := word(p, size)
	nv := uint32(v) << shift & mask
	for {
		cur := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, cur, cur&^mask|nv) {
			return uint64(cur&mask) >> shift
		}
	}
}

// CompareAndSwap stores the low size bytes of new at p if the value there
// is old (zero-extended), and reports whether it did. A change to a
// neighbouring value in the same word does not make it fail.
func CompareAndSwap(p unsafe.Pointer, size uintptr, old, new uint64) bool {
	switch size {
	case 8:
		return atomic.CompareAndSwapUint64((*uint64)(p), old, new)
	case 4:
		return atomic.CompareAndSwapUint32((*uint32)(p), uint32(old), uint32(new))
	}
	w, shift, mask := word(p, size)
	ov, nv := uint32(old)<<shift&mask, uint32(new)<<shift&mask
	for {
		cur := atomic.LoadUint32(w)
		if cur&mask != ov {
			return false
		}
		if atomic.CompareAndSwapUint32(w, cur, cur&^mask|nv) {
			return true
		}
	}
}

// Add adds delta to the size-byte integer at p, wrapping around as Go's
// arithmetic on that size does, and returns the new value, zero-extended.
// Two's complement makes it right for signed integers too: pass a negative
// delta converted to uint64.
func Add(p unsafe.Pointer, size uintptr, delta uint64) uint64 {
	switch size {
	case 8:
		return atomic.AddUint64((*uint64)(p), delta)
	case 4:
		return uint64(atomic.AddUint32((*uint32)(p), uint32(delta)))
	}
	w, shift, mask := word(p, size)
	for {
		cur := atomic.LoadUint32(w)
		nv := (cur + uint32(delta)<<shift) & mask
		if atomic.CompareAndSwapUint32(w, cur, cur&^mask|nv) {
			return uint64(nv) >> shift
		}
	}
}

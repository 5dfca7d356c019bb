package shm

import "unsafe"

// OffsetOf returns the offset of the byte p points to, if p points into
// this process's mapping of the arena's heap.
func (a *Arena) OffsetOf(p unsafe.Pointer) (Offset, bool) {
	if len(a.mem) == 0 {
		return 0, false
	}
	base := uintptr(unsafe.Pointer(&a.mem[0]))
	u := uintptr(p)
	if u < base+uintptr(a.heapOff) || u >= base+uintptr(len(a.mem)) {
		return 0, false
	}
	return Offset(u - base), true
}

package shmap

import (
	"github.com/multiproc/mp/internal/shm"
)

// List is a sequence of byte strings: the Store's first Len slots, in
// order, each holding an entry with an empty key.
type List struct{ Store }

// OpenList returns the list whose header is the HeaderSize bytes at hdr.
func OpenList(a *shm.Arena, hdr shm.Offset) List { return List{open(a, hdr)} }

// At returns element i (a view into shared memory); i must be in range.
func (l List) At(i int) []byte {
	_, _, v := l.entry(l.table()[i])
	return v
}

// Set replaces element i; i must be in range. It fails only when the arena
// has no room, and then changes nothing.
func (l List) Set(i int, val []byte) error {
	e, err := l.newEntry(0, nil, val)
	if err != nil {
		return err
	}
	n, t := l.Len(), l.table()
	l.publishSlot(t, i, e, t[i], 0, n, n)
	return nil
}

// Append adds val at the end.
func (l List) Append(val []byte) error {
	n := l.Len()
	if n == len(l.table()) {
		if err := l.copyTable(max(8, 2*n), -1); err != nil {
			return err
		}
	}
	e, err := l.newEntry(0, nil, val)
	if err != nil {
		return err
	}
	l.publishSlot(l.table(), n, e, 0, 0, n+1, n+1)
	return nil
}

// Delete removes element i, which must be in range, moving the later ones
// down. The elements move in a new table published at once, so that no
// kill leaves an element twice or not at all.
func (l List) Delete(i int) error { return l.copyTable(len(l.table()), i) }

// copyTable publishes a table of n slots holding the elements, without
// element skip (if skip >= 0, and then frees its entry).
func (l List) copyTable(n, skip int) error {
	t, length := l.table(), l.Len()
	off, nt, err := l.newTable(n)
	if err != nil {
		return err
	}
	copy(nt, t[:length])
	var removed uint64
	if skip >= 0 {
		removed = t[skip]
		copy(nt[skip:], t[skip+1:length])
		length--
		nt[length] = empty
	}
	l.publishTable(off, l.get(wTable), removed, length, length)
	return nil
}

// Each calls f with every element (views into shared memory), in order,
// until f returns false.
func (l List) Each(f func(i int, val []byte) bool) {
	t := l.table()
	for i := range l.Len() {
		if _, _, v := l.entry(t[i]); !f(i, v) {
			return
		}
	}
}

package shmap

import (
	"github.com/multiproc/mp/internal/shm"
)

// List is a sequence of byte strings: the Store's first Len slots, in
// order, each holding an entry with an empty key.
type List struct{ Store }

// OpenList returns the list whose header is the HeaderSize bytes at hdr.
func OpenList(a *shm.Arena, hdr shm.Offset) List { return List{open(a, hdr)} }

// slot returns the table and checks that i is one of its first Len slots,
// which Recover's check of the header makes true of every i < Len unless
// another process damaged the list since.
func (l List) slot(i int) ([]uint64, error) {
	t, err := l.table()
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= l.Len() || l.Len() > len(t) {
		return nil, l.corrupt("index %d of %d in a table of %d", i, l.Len(), len(t))
	}
	return t, nil
}

// At returns element i (a view into shared memory); i must be in range.
func (l List) At(i int) ([]byte, error) {
	t, err := l.slot(i)
	if err != nil {
		return nil, err
	}
	_, _, v, err := l.entry(t[i])
	return v, err
}

// Set replaces element i; i must be in range. It fails, changing nothing,
// when the arena has no room or the list is damaged.
func (l List) Set(i int, val []byte) error {
	t, err := l.slot(i)
	if err != nil {
		return err
	}
	if err := l.ownedEntry(t[i]); err != nil {
		return err
	}
	e, err := l.newEntry(0, nil, val)
	if err != nil {
		return err
	}
	n := l.Len()
	return l.publishSlot(t, i, e, t[i], 0, n, n)
}

// Append adds val at the end.
func (l List) Append(val []byte) error {
	t, err := l.table()
	if err != nil {
		return err
	}
	n := l.Len()
	if n > len(t) {
		return l.corrupt("length %d in a table of %d", n, len(t))
	}
	if n == len(t) {
		if err := l.copyTable(max(8, 2*n), -1); err != nil {
			return err
		}
		if t, err = l.table(); err != nil {
			return err
		}
	}
	e, err := l.newEntry(0, nil, val)
	if err != nil {
		return err
	}
	return l.publishSlot(t, n, e, 0, 0, n+1, n+1)
}

// Delete removes element i, which must be in range, moving the later ones
// down. The elements move in a new table published at once, so that no
// kill leaves an element twice or not at all; the last element just
// leaves its slot.
func (l List) Delete(i int) error {
	t, err := l.slot(i)
	if err != nil {
		return err
	}
	if err := l.ownedEntry(t[i]); err != nil {
		return err
	}
	if n := l.Len(); i == n-1 {
		return l.publishSlot(t, i, empty, t[i], 0, n-1, n-1)
	}
	return l.copyTable(len(t), i)
}

// Insert puts val before element i, moving it and the later ones up; i
// may be Len, which appends. Like Delete, it publishes a new table holding
// the new entry at once; both blocks are allocated first through the redo
// record, so that a kill before the table is published frees them.
func (l List) Insert(i int, val []byte) error {
	t, err := l.table()
	if err != nil {
		return err
	}
	n := l.Len()
	if n > len(t) || i < 0 || i > n {
		return l.corrupt("insert at %d, length %d in a table of %d", i, n, len(t))
	}
	if i == n {
		return l.Append(val)
	}
	size := len(t)
	if n == size {
		size = max(8, 2*n)
	}
	l.put(wNew, 0)
	l.put(wNew2, 0)
	l.put(wPhase, prepared2|phaseMagic)
	eSize := entryHeader + len(val)
	e, err := l.a.AllocTo(eSize, l.at(wNew2))
	if err != nil {
		l.put(wPhase, idle)
		return err
	}
	l.fillEntry(l.a.Bytes(e, eSize), 0, nil, val)
	tSize := tableHeader + 8*size
	off, err := l.a.AllocTo(tSize, l.at(wNew))
	if err != nil {
		_ = l.free(wNew2)
		l.put(wPhase, idle)
		return err
	}
	nt := l.fillTable(l.a.Bytes(off, tSize), size)
	copy(nt, t[:i])
	nt[i] = uint64(e) // not yet shared: no need for ordered stores
	copy(nt[i+1:], t[i:n])
	err = l.publishTable(uint64(off), l.get(wTable), 0, n+1, n+1)
	l.put(wNew2, 0) // published: no longer the record's to free
	return err
}

// copyTable publishes a table of n slots holding the elements, without
// element skip (if skip >= 0, and then frees its entry).
func (l List) copyTable(n, skip int) error {
	t, err := l.table()
	if err != nil {
		return err
	}
	length := l.Len()
	if length > len(t) || skip >= length || n < length {
		return l.corrupt("length %d in a table of %d", length, len(t))
	}
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
	return l.publishTable(off, l.get(wTable), removed, length, length)
}

// Each calls f with every element (views into shared memory), in order,
// until f returns false.
func (l List) Each(f func(i int, val []byte) bool) error {
	t, err := l.table()
	if err != nil {
		return err
	}
	n := l.Len()
	if n > len(t) {
		return l.corrupt("length %d in a table of %d", n, len(t))
	}
	for i := range n {
		_, _, v, err := l.entry(t[i])
		if err != nil {
			return err
		}
		if !f(i, v) {
			return nil
		}
	}
	return nil
}

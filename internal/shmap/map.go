package shmap

import (
	"bytes"

	"github.com/multiproc/mp/internal/shm"
)

// Map is a hash map from byte strings to byte strings: open addressing with
// linear probing over the Store's slots, which hold entry offsets, empty or
// tombstone.
type Map struct{ Store }

// OpenMap returns the map whose header is the HeaderSize bytes at hdr.
func OpenMap(a *shm.Arena, hdr shm.Offset) Map { return Map{open(a, hdr)} }

// Hash is the hash the map uses for a key: FNV-1a, the same in every
// process (Go's own map hashes are seeded per process).
func Hash(key []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range key {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// find returns the slot holding key and its value, or -1 and the slot an
// insertion of key should use (-1 if the table is full or missing).
func (m Map) find(t []uint64, hash uint64, key []byte) (found, free int, val []byte, err error) {
	free = -1
	if len(t) == 0 {
		return -1, -1, nil, nil
	}
	mask := uint64(len(t) - 1)
	for i, n := hash&mask, 0; n < len(t); i, n = (i+1)&mask, n+1 {
		switch v := t[i]; v {
		case empty:
			if free < 0 {
				free = int(i)
			}
			return -1, free, nil, nil
		case tombstone:
			if free < 0 {
				free = int(i)
			}
		default:
			h, err := m.entryHash(v)
			if err != nil {
				return -1, -1, nil, err
			}
			if h != hash {
				continue
			}
			_, k, val, err := m.entry(v)
			if err != nil {
				return -1, -1, nil, err
			}
			if bytes.Equal(k, key) {
				return int(i), free, val, nil
			}
		}
	}
	return -1, free, nil, nil
}

// Get returns the value stored for key (a view into shared memory), and
// whether there is one.
func (m Map) Get(hash uint64, key []byte) ([]byte, bool, error) {
	t, err := m.table()
	if err != nil {
		return nil, false, err
	}
	i, _, v, err := m.find(t, hash, key)
	return v, i >= 0, err
}

// Set stores val for key. It fails, changing nothing, when the arena has
// no room or the map is damaged.
func (m Map) Set(hash uint64, key, val []byte) error {
	if err := m.reserve(); err != nil {
		return err
	}
	t, err := m.table()
	if err != nil {
		return err
	}
	i, free, _, err := m.find(t, hash, key)
	if err != nil {
		return err
	}
	length, used := m.Len(), int(m.get(wUsed))
	if i < 0 {
		if free < 0 {
			// reserve keeps a quarter of the slots empty: only damage
			// fills them.
			return m.corrupt("no free slot in a table of %d", len(t))
		}
		i = free
		length++
		if t[i] == empty {
			used++
		}
	}
	e, err := m.newEntry(hash, key, val)
	if err != nil {
		return err
	}
	return m.publishSlot(t, i, e, t[i], 0, length, used)
}

// Delete removes key, and reports whether it was there.
func (m Map) Delete(hash uint64, key []byte) (bool, error) {
	t, err := m.table()
	if err != nil {
		return false, err
	}
	i, _, _, err := m.find(t, hash, key)
	if i < 0 || err != nil {
		return false, err
	}
	return true, m.publishSlot(t, i, tombstone, t[i], 0, m.Len()-1, int(m.get(wUsed)))
}

// Each calls f with every key and value (views into shared memory) until f
// returns false.
func (m Map) Each(f func(key, val []byte) bool) error {
	t, err := m.table()
	if err != nil {
		return err
	}
	for _, v := range t {
		if v >= minEntry {
			_, k, val, err := m.entry(v)
			if err != nil {
				return err
			}
			if !f(k, val) {
				return nil
			}
		}
	}
	return nil
}

// reserve makes sure the table has room for one more entry, keeping at
// least a quarter of the slots empty so that probes stay short and end. A
// table crowded by tombstones is rebuilt at the same size.
func (m Map) reserve() error {
	t, err := m.table()
	if err != nil {
		return err
	}
	used, length := int(m.get(wUsed)), m.Len()
	if len(t) > 0 && 4*(used+1) <= 3*len(t) {
		return nil
	}
	n := max(8, len(t))
	if 2*(length+1) > n {
		n *= 2
	}
	off, nt, err := m.newTable(n)
	if err != nil {
		return err
	}
	mask := uint64(n - 1)
	for _, v := range t {
		if v < minEntry {
			continue
		}
		h, err := m.entryHash(v)
		if err != nil {
			m.unprepare()
			return err
		}
		i := h & mask
		for nt[i] != empty {
			i = (i + 1) & mask
		}
		nt[i] = v // not yet shared: no need for ordered stores
	}
	return m.publishTable(off, m.get(wTable), 0, length, length)
}

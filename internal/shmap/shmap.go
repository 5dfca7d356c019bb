// Package shmap keeps hash maps and lists of byte strings in a shared-memory
// arena, in a form that stays consistent when the process changing them is
// killed at any instruction.
//
// A Store is a 128-byte header inside a block the caller owns, and a table
// of 64-bit slots allocated from the arena; each live slot holds the offset
// of an immutable entry block. Every change publishes new state by storing
// one slot or the table offset, and is described first in a redo record in
// the header, so that the next holder of the caller's lock can finish it
// (Recover) whatever point its author reached.
//
// A Store is not synchronised: the caller serialises every method call
// with a lock of its own that survives the death of its holder, and calls
// Recover after each acquisition. Views returned by Get and At are valid
// until the lock is released.
//
// Blocks are allocated and freed through the redo record (shm's AllocTo and
// FreeFrom), so a killed process never leaks one nor frees one twice.
package shmap

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"

	"github.com/multiproc/mp/internal/shm"
)

// HeaderSize is the size of the zeroed region a Store lives in. Zero bytes
// are an empty store.
const HeaderSize = 128

// Header words, 8 bytes each.
const (
	wTable     = iota // offset of the slot table, or 0
	wLen              // live entries
	wUsed             // slots not empty: live entries and tombstones
	wPhase            // redo record: what the change in progress is
	wSlot             // slot the change stores
	wNew              // block the change publishes (entry, tombstone or table)
	wOld              // block it replaces, freed once it is done
	wOld2             // second block it replaces (List.Delete's entry)
	wLenAfter         // wLen once it is done
	wUsedAfter        // wUsed once it is done
)

// Phases of the redo record.
const (
	idle      = iota
	prepared  // wNew is allocated but not yet published: free it
	slotRedo  // store wNew in slot wSlot
	tableRedo // make wNew the table
)

// Slot values below minEntry are not offsets.
const (
	empty     = 0
	tombstone = 1
	minEntry  = 2
)

// crashHook, when set by a test, runs after every store to shared memory,
// so that the test can stop a change at each point a kill could.
var crashHook func()

// Store is the shared state common to Map and List.
type Store struct {
	a   *shm.Arena
	off shm.Offset
	hdr unsafe.Pointer
}

func open(a *shm.Arena, hdr shm.Offset) Store {
	return Store{a: a, off: hdr, hdr: unsafe.Pointer(&a.Bytes(hdr, HeaderSize)[0])}
}

// at is the arena offset of header word i.
func (s Store) at(i int) shm.Offset { return s.off + shm.Offset(8*i) }

func (s Store) word(i int) *uint64 { return (*uint64)(unsafe.Add(s.hdr, 8*i)) }
func (s Store) get(i int) uint64   { return atomic.LoadUint64(s.word(i)) }

// put stores with atomic stores, which the compiler cannot reorder: the
// order of stores is what Recover relies on.
func (s Store) put(i int, v uint64) { store(s.word(i), v) }

func store(p *uint64, v uint64) {
	atomic.StoreUint64(p, v)
	if crashHook != nil {
		crashHook()
	}
}

// Len returns the number of live entries.
func (s Store) Len() int { return int(s.get(wLen)) }

// table returns the slot table: its capacity and its slots.
func (s Store) table() []uint64 {
	t := s.get(wTable)
	if t == 0 {
		return nil
	}
	n := *(*uint64)(unsafe.Pointer(&s.a.Bytes(shm.Offset(t), 8)[0]))
	return unsafe.Slice((*uint64)(unsafe.Pointer(&s.a.Bytes(shm.Offset(t), 8+8*int(n))[8])), n)
}

// Recover finishes or undoes the change a dead holder of the caller's lock
// left in progress. It is cheap when there is none, and is idempotent, so a
// process killed while recovering leaves work that the next one finishes.
func (s Store) Recover() {
	switch s.get(wPhase) {
	case idle:
		return
	case prepared:
		s.free(wNew)
		s.put(wPhase, idle)
		return
	case slotRedo:
		store(&s.table()[s.get(wSlot)], s.get(wNew))
	case tableRedo:
		s.put(wTable, s.get(wNew))
	}
	s.finish()
}

// finish completes a published change: the counters, then the frees of
// the replaced blocks, then the record. Every step may be done twice.
func (s Store) finish() {
	s.put(wLen, s.get(wLenAfter))
	s.put(wUsed, s.get(wUsedAfter))
	s.free(wOld)
	s.free(wOld2)
	s.put(wPhase, idle)
}

// free frees the block recorded in header word i, if it is one, and clears
// the word in the same step (see shm.Arena.FreeFrom).
func (s Store) free(i int) {
	if s.get(i) < minEntry {
		s.put(i, 0)
		return
	}
	// An error means the word named a block that is not live, which only a
	// bug can cause; the word is left for inspection.
	_ = s.a.FreeFrom(s.at(i))
	if crashHook != nil {
		crashHook()
	}
}

// Destroy frees every block the store owns (its table, its entries, and
// any block a change in progress holds) and leaves its HeaderSize bytes
// zeroed: an empty store, which the caller may then free along with the
// block around it. It is for when the last user of the store is gone; like
// every method it must be called with the caller's lock held (or with no
// other process able to reach the store).
//
// Destroy is restartable: a process killed at any point of it leaves a
// store on which Destroy, called again, finishes the work, never freeing a
// block twice nor leaking one. Between the two calls the store is not
// usable for anything else. An error (a slot naming a block that is not
// live, which only corruption causes) does not stop it: it frees all it
// can, zeroes the header and returns the first such error.
func (s Store) Destroy() error {
	// Finishing or undoing the change in progress frees the blocks of the
	// redo record (a prepared block, the replaced ones) and leaves every
	// owned block reachable from the table.
	s.Recover()
	var first error
	if t := s.table(); t != nil {
		base := shm.Offset(s.get(wTable)) + 8
		// Each entry is freed together with the zeroing of its slot, so a
		// second pass finds only the slots still to do; the table goes last,
		// once no slot names anything.
		for i, v := range t {
			if v < minEntry {
				continue
			}
			if err := s.a.FreeFrom(base + shm.Offset(8*i)); err != nil {
				if first == nil {
					first = err
				}
				store(&t[i], empty)
			}
			if crashHook != nil {
				crashHook()
			}
		}
		if err := s.a.FreeFrom(s.at(wTable)); err != nil {
			if first == nil {
				first = err
			}
		}
		if crashHook != nil {
			crashHook()
		}
	}
	// What is left in the header are counters and stale offsets of the
	// redo record, none of them owned.
	for i := range HeaderSize / 8 {
		if s.get(i) != 0 {
			s.put(i, 0)
		}
	}
	return first
}

// prepare allocates a block of n bytes as the change's new block. The
// record is in the prepared phase before the block exists, and the arena
// records the block in it as it allocates, so a kill at any point frees it.
func (s Store) prepare(n int) (uint64, []byte, error) {
	s.put(wNew, 0)
	s.put(wPhase, prepared)
	off, err := s.a.AllocTo(n, s.at(wNew))
	if err != nil {
		s.put(wPhase, idle)
		return 0, nil, err
	}
	return uint64(off), s.a.Bytes(off, n), nil
}

// publishSlot stores v in slot i of the table t, replacing the block old
// (and old2), leaving the counters at length and used.
func (s Store) publishSlot(t []uint64, i int, v, old, old2 uint64, length, used int) {
	s.put(wSlot, uint64(i))
	s.put(wNew, v)
	s.put(wOld, old)
	s.put(wOld2, old2)
	s.put(wLenAfter, uint64(length))
	s.put(wUsedAfter, uint64(used))
	s.put(wPhase, slotRedo)
	store(&t[i], v)
	s.finish()
}

// publishTable makes the prepared block t the table, replacing old (and
// old2), with the counters at length and used.
func (s Store) publishTable(t, old, old2 uint64, length, used int) {
	s.put(wOld, old)
	s.put(wOld2, old2)
	s.put(wLenAfter, uint64(length))
	s.put(wUsedAfter, uint64(used))
	s.put(wPhase, tableRedo)
	s.put(wTable, t)
	s.finish()
}

// newTable prepares an empty table of n slots.
func (s Store) newTable(n int) (uint64, []uint64, error) {
	off, b, err := s.prepare(8 + 8*n)
	if err != nil {
		return 0, nil, err
	}
	binary.LittleEndian.PutUint64(b, uint64(n))
	return off, unsafe.Slice((*uint64)(unsafe.Pointer(&b[8])), n), nil
}

// Entry blocks are immutable once published: a 16-byte header (the key's
// hash, then the key's and the value's lengths) and the key and value bytes.
const entryHeader = 16

// newEntry prepares an entry block holding hash, key and val.
func (s Store) newEntry(hash uint64, key, val []byte) (uint64, error) {
	off, b, err := s.prepare(entryHeader + len(key) + len(val))
	if err != nil {
		return 0, err
	}
	binary.LittleEndian.PutUint64(b, hash)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(key)))
	binary.LittleEndian.PutUint32(b[12:], uint32(len(val)))
	copy(b[entryHeader:], key)
	copy(b[entryHeader+len(key):], val)
	return off, nil
}

// entry reads the entry block at off.
func (s Store) entry(off uint64) (hash uint64, key, val []byte) {
	h := s.a.Bytes(shm.Offset(off), entryHeader)
	kn, vn := int(binary.LittleEndian.Uint32(h[8:])), int(binary.LittleEndian.Uint32(h[12:]))
	b := s.a.Bytes(shm.Offset(off), entryHeader+kn+vn)
	return binary.LittleEndian.Uint64(h), b[entryHeader : entryHeader+kn], b[entryHeader+kn:]
}

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
	"fmt"
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
	wNew2             // second block a prepared2 change allocates (List.Insert's entry)
)

// Phases of the redo record. A phase other than idle carries a magic
// number above it, so that a word scribbled over while no change is in
// progress reads as garbage rather than as a change to redo.
const (
	idle       = iota
	prepared   // wNew is allocated but not yet published: free it
	slotRedo   // store wNew in slot wSlot
	tableRedo  // make wNew the table
	destroying // Clear (or Destroy) is under way: free wOld, then carry on
	prepared2  // wNew and wNew2 are allocated but not yet published: free both

	phaseMagic = 0x5eda_c0de_77a1 << 16
	phaseMask  = 1<<16 - 1
)

// Slot values below minEntry are not offsets.
const (
	empty     = 0
	tombstone = 1
	minEntry  = 2
)

// A table block is its number of slots, the offset of the store's header
// (which tells a table from any other block a corrupt offset could name),
// then the slots.
const tableHeader = 16

// crashHook, when set by a test, runs after every store to shared memory,
// so that the test can stop a change at each point a kill could.
var crashHook func()

// Store is the shared state common to Map and List.
//
// Everything a Store reads from shared memory is validated before use: a
// store that another process damaged gives errors wrapping shm.ErrCorrupt
// from its methods, never a panic, an access outside the arena, or a loop
// that does not end, and the blocks it frees are checked to be its own.
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

// Len returns the number of live entries; for a damaged store, some number
// from 0 to the table's capacity.
func (s Store) Len() int { return int(min(s.get(wLen), 1<<40)) }

// corrupt returns an error wrapping shm.ErrCorrupt for this store.
func (s Store) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: shared map or list at %#x: %s", shm.ErrCorrupt, uint64(s.off), fmt.Sprintf(format, args...))
}

// word64 returns the 8-byte word at off, which must lie in the heap.
func (s Store) word64(off uint64) *uint64 {
	return (*uint64)(unsafe.Pointer(&s.a.Bytes(shm.Offset(off), 8)[0]))
}

// table returns the slot table: its capacity and its slots.
func (s Store) table() ([]uint64, error) { return s.tableAt(s.get(wTable)) }

// tableAt returns the slots of the table block at off (none if 0), after
// checking that it is one of this store's tables.
func (s Store) tableAt(off uint64) ([]uint64, error) {
	if off == 0 {
		return nil, nil
	}
	if off%64 != 0 || !s.a.Contains(shm.Offset(off), tableHeader) {
		return nil, s.corrupt("table offset %#x", off)
	}
	n, owner := atomic.LoadUint64(s.word64(off)), atomic.LoadUint64(s.word64(off+8))
	if owner != uint64(s.off) || n < 8 || n&(n-1) != 0 || n > 1<<40 || !s.a.Contains(shm.Offset(off), tableHeader+8*int(n)) {
		return nil, s.corrupt("table at %#x: %d slots, header %#x", off, n, owner)
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&s.a.Bytes(shm.Offset(off), tableHeader+8*int(n))[tableHeader])), n), nil
}

// Recover finishes or undoes the change a dead holder of the caller's lock
// left in progress. It is cheap when there is none, and is idempotent, so
// a process killed while recovering leaves work that the next one
// finishes. It fails with an error wrapping shm.ErrCorrupt if the record of
// the change is damaged: every later call of the store's methods may then
// fail the same way.
func (s Store) Recover() error { return s.recover() }

func (s Store) recover() error {
	switch ph := s.get(wPhase); ph {
	case idle:
	case prepared | phaseMagic:
		err := s.free(wNew)
		s.put(wPhase, idle)
		if err != nil {
			return err
		}
	case prepared2 | phaseMagic:
		err := s.free(wNew2)
		if err2 := s.free(wNew); err == nil {
			err = err2
		}
		s.put(wPhase, idle)
		if err != nil {
			return err
		}
	case destroying | phaseMagic:
		return s.clearRest()
	case slotRedo | phaseMagic:
		t, err := s.table()
		if err != nil {
			return err
		}
		i := s.get(wSlot)
		if i >= uint64(len(t)) {
			return s.corrupt("change to slot %d of %d", i, len(t))
		}
		store(&t[i], s.get(wNew))
		if err := s.finish(); err != nil {
			return err
		}
	case tableRedo | phaseMagic:
		if _, err := s.tableAt(s.get(wNew)); err != nil {
			return err
		}
		s.put(wTable, s.get(wNew))
		if err := s.finish(); err != nil {
			return err
		}
	default:
		return s.corrupt("change in progress %#x", ph)
	}
	return nil
}

// checkCounts checks the counters against the table t, for the methods
// that rely on them: no more live entries than slots in use, and no more
// slots in use than slots.
func (s Store) checkCounts(t []uint64) error {
	length, used := s.get(wLen), s.get(wUsed)
	if length > used || used > uint64(len(t)) {
		return s.corrupt("%d entries in %d used slots of %d", length, used, len(t))
	}
	return nil
}

// finish completes a published change: the counters, then the frees of
// the replaced blocks, then the record. Every step may be done twice.
func (s Store) finish() error {
	s.put(wLen, s.get(wLenAfter))
	s.put(wUsed, s.get(wUsedAfter))
	err := s.free(wOld)
	if err2 := s.free(wOld2); err == nil {
		err = err2
	}
	s.put(wPhase, idle)
	return err
}

// free frees the block recorded in header word i, if it is one, and clears
// the word in the same step (see shm.Arena.FreeFrom). Blocks enter the
// record only once they are known to be the store's own (see owned): here
// they may have been zeroed already, by a Free that a kill cut short.
func (s Store) free(i int) error {
	v := s.get(i)
	if v < minEntry {
		s.put(i, 0)
		return nil
	}
	err := s.a.FreeFrom(s.at(i))
	if crashHook != nil {
		crashHook()
	}
	if err != nil {
		return s.corrupt("freeing %#x: %v", v, err)
	}
	return nil
}

// ownedEntry checks that slot value v is a live block holding one of the
// store's entries, as far as its contents tell: a slot naming anything
// else is damage, and the block must not be freed, so that the damage
// costs a leak rather than another object's memory.
func (s Store) ownedEntry(v uint64) error {
	size, ok := s.a.OwnedSize(shm.Offset(v))
	if !ok {
		return s.corrupt("%#x is not a live block", v)
	}
	_, err := s.checkEntry(v, size)
	return err
}

// prepare allocates a block of n bytes as the change's new block. The
// record is in the prepared phase before the block exists, and the arena
// records the block in it as it allocates, so a kill at any point frees it.
func (s Store) prepare(n int) (uint64, []byte, error) {
	s.put(wNew, 0)
	s.put(wPhase, prepared|phaseMagic)
	off, err := s.a.AllocTo(n, s.at(wNew))
	if err != nil {
		s.put(wPhase, idle)
		return 0, nil, err
	}
	return uint64(off), s.a.Bytes(off, n), nil
}

// unprepare frees the prepared block of a change that is given up.
func (s Store) unprepare() {
	_ = s.free(wNew)
	s.put(wPhase, idle)
}

// publishSlot stores v in slot i of the table t, replacing the block old
// (and old2), leaving the counters at length and used.
func (s Store) publishSlot(t []uint64, i int, v, old, old2 uint64, length, used int) error {
	s.put(wSlot, uint64(i))
	s.put(wNew, v)
	s.put(wOld, old)
	s.put(wOld2, old2)
	s.put(wLenAfter, uint64(length))
	s.put(wUsedAfter, uint64(used))
	s.put(wPhase, slotRedo|phaseMagic)
	store(&t[i], v)
	return s.finish()
}

// publishTable makes the prepared block t the table, replacing old (and
// old2), with the counters at length and used.
func (s Store) publishTable(t, old, old2 uint64, length, used int) error {
	s.put(wOld, old)
	s.put(wOld2, old2)
	s.put(wLenAfter, uint64(length))
	s.put(wUsedAfter, uint64(used))
	s.put(wPhase, tableRedo|phaseMagic)
	s.put(wTable, t)
	return s.finish()
}

// newTable prepares an empty table of n slots.
func (s Store) newTable(n int) (uint64, []uint64, error) {
	off, b, err := s.prepare(tableHeader + 8*n)
	if err != nil {
		return 0, nil, err
	}
	return off, s.fillTable(b, n), nil
}

// fillTable lays out an empty table of n slots in b, a new block of
// tableHeader+8*n zero bytes, and returns its slots.
func (s Store) fillTable(b []byte, n int) []uint64 {
	binary.LittleEndian.PutUint64(b, uint64(n))
	binary.LittleEndian.PutUint64(b[8:], uint64(s.off))
	return unsafe.Slice((*uint64)(unsafe.Pointer(&b[tableHeader])), n)
}

// Entry blocks are immutable once published: a 16-byte header (the key's
// hash sealed with the store's seal, then the key's and the value's
// lengths) and the key and value bytes. The seal binds an entry to its
// store: a damaged slot naming another store's entry is told apart, and
// that entry is never freed by this store.
const entryHeader = 16

// seal is what the hashes of the store's entries are XORed with: its
// header's offset, mixed.
func (s Store) seal() uint64 { return uint64(s.off) * 0x9e3779b97f4a7c15 }

// newEntry prepares an entry block holding hash, key and val.
func (s Store) newEntry(hash uint64, key, val []byte) (uint64, error) {
	off, b, err := s.prepare(entryHeader + len(key) + len(val))
	if err != nil {
		return 0, err
	}
	s.fillEntry(b, hash, key, val)
	return off, nil
}

// fillEntry writes an entry holding hash, key and val into b, a new block
// of entryHeader+len(key)+len(val) bytes.
func (s Store) fillEntry(b []byte, hash uint64, key, val []byte) {
	binary.LittleEndian.PutUint64(b, hash^s.seal())
	binary.LittleEndian.PutUint32(b[8:], uint32(len(key)))
	binary.LittleEndian.PutUint32(b[12:], uint32(len(val)))
	copy(b[entryHeader:], key)
	copy(b[entryHeader+len(key):], val)
}

// entryHash reads the hash of the entry block at off, which a probe
// compares before anything else.
func (s Store) entryHash(off uint64) (uint64, error) {
	h, ok := s.a.Load64(shm.Offset(off))
	if !ok || off%64 != 0 {
		return 0, s.corrupt("entry offset %#x", off)
	}
	return h ^ s.seal(), nil
}

// entry reads the entry block at off. Its lengths must fit the block, so
// that damage cannot make a reader copy more than a block's worth.
func (s Store) entry(off uint64) (hash uint64, key, val []byte, err error) {
	size, ok := s.a.OwnedSize(shm.Offset(off))
	if !ok {
		return 0, nil, nil, s.corrupt("entry offset %#x is not a live block", off)
	}
	h := s.a.Bytes(shm.Offset(off), entryHeader)
	kn, vn := int(binary.LittleEndian.Uint32(h[8:])), int(binary.LittleEndian.Uint32(h[12:]))
	if entryHeader+kn+vn > size {
		return 0, nil, nil, s.corrupt("entry at %#x: %d-byte key and %d-byte value in a %d-byte block", off, kn, vn, size)
	}
	b := s.a.Bytes(shm.Offset(off), entryHeader+kn+vn)
	return binary.LittleEndian.Uint64(h) ^ s.seal(), b[entryHeader : entryHeader+kn], b[entryHeader+kn:], nil
}

// checkEntry checks that the live block at off, of size bytes, holds an
// entry of this store as newEntry makes them: its lengths fill the block
// as an allocation of their size would, and its hash unsealed is its key's
// (a Map's) or 0 with no key (a List's).
func (s Store) checkEntry(off uint64, size int) (n int, err error) {
	h, k, v, err := s.entry(off)
	if err != nil {
		return 0, err
	}
	n = entryHeader + len(k) + len(v)
	if n > size || (size > 64 && n <= size/2) {
		return 0, s.corrupt("entry at %#x: %d bytes in a %d-byte block", off, n, size)
	}
	if !(h == 0 && len(k) == 0) && h != Hash(k) {
		return 0, s.corrupt("block %#x is not an entry of this store", off)
	}
	return n, nil
}

// Clear removes every entry, freeing the entries' blocks and the table
// (and any block a change in progress holds), and leaves its HeaderSize
// bytes zeroed: an empty store, which may be used again, or freed along
// with the block around it. Like every method it must be called with the
// caller's lock held (or with no other process able to reach the store).
//
// Clear is a change like the others: a process killed at any point of it
// leaves a Clear under way, which the next Recover (or Clear, or Destroy)
// finishes, never freeing a block twice nor leaking one; no holder of the
// lock sees it half done. Damage (an error wrapping shm.ErrCorrupt) does
// not stop it: blocks that are not evidently the store's own are left
// alone (leaked rather than taken from another object), the header is
// zeroed all the same, and the first such error is returned.
func (s Store) Clear() error {
	// Finishing or undoing the change in progress frees the blocks of the
	// redo record (a prepared block, the replaced ones) and leaves every
	// owned block reachable from the table; a Clear under way is finished.
	first := s.recover()
	t, err := s.table()
	if err != nil && first == nil {
		first = err
	}
	if t != nil {
		s.put(wOld, 0)
		s.put(wPhase, destroying|phaseMagic)
	}
	if err := s.clearRest(); first == nil {
		first = err
	}
	return first
}

// Destroy is Clear, for when the last user of the store is gone.
func (s Store) Destroy() error { return s.Clear() }

// clearRest does the work of a Clear from wherever one cut short left it.
// Each entry moves to the record (wOld), leaves its slot, and is freed
// from the record (FreeFrom clears the record in the same step), so a
// second pass finds only the slots still to do; the table goes last, once
// no slot names anything. An entry found in the record was moved there by
// a Clear cut short, which may not have cleared its slot yet: its slot is
// cleared first, then it is freed.
func (s Store) clearRest() error {
	var first error
	keep := func(err error) {
		if first == nil && err != nil {
			first = err
		}
	}
	t, err := s.table()
	if err != nil {
		keep(err)
	}
	if pending := s.get(wOld); pending >= minEntry {
		for i, v := range t {
			if v == pending {
				store(&t[i], empty)
			}
		}
	}
	keep(s.free(wOld))
	if t != nil {
		for i, v := range t {
			if v < minEntry {
				continue
			}
			if err := s.ownedEntry(v); err != nil {
				keep(err)
				store(&t[i], empty)
				continue
			}
			s.put(wOld, v)
			store(&t[i], empty)
			if err := s.free(wOld); err != nil {
				keep(err)
			}
		}
		if err := s.a.FreeFrom(s.at(wTable)); err != nil {
			keep(s.corrupt("freeing the table: %v", err))
		}
		if crashHook != nil {
			crashHook()
		}
	}
	// What is left in the header are counters and stale offsets of the
	// redo record, none of them owned. The counters go before the phase.
	for i := range HeaderSize / 8 {
		if s.get(i) != 0 {
			s.put(i, 0)
		}
	}
	return first
}

// Blocks returns the offsets of the store's table and of the entry blocks
// its slots name, for fault-injection tests and diagnostics. Like every
// method it must be called with the caller's lock held.
func (s Store) Blocks() []shm.Offset {
	t, err := s.table()
	if err != nil || t == nil {
		return nil
	}
	bs := []shm.Offset{shm.Offset(s.get(wTable))}
	for _, v := range t {
		if v >= minEntry {
			bs = append(bs, shm.Offset(v))
		}
	}
	return bs
}

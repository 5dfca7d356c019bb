package refs

import (
	"fmt"
	"sync/atomic"

	"github.com/multiproc/mp/internal/shm"
)

// Names: each object segment may have a names block beside it, linked from
// the word after the segment's link, with one slot per entry of the
// segment. A slot is valid for the generation it records, so that a name
// never outlives its object: a reused entry has another generation, and
// nothing needs freeing when an object goes. The names blocks are kept,
// like the segments.
const (
	segNames  = 8 // word of an object segment's header: its names block
	nameSlot  = 64
	slotEvent = 8 // gen<<32 | events: see CountEvent
	slotName  = 16
	MaxName   = nameSlot - slotName // bytes of a name
	// namesSize is a names block's size: a power of two, so that the
	// block takes no more than it says (Stats counts it), for objPerSeg
	// slots.
	namesSize = 128 << 10
)

var _ [namesSize - objPerSeg*nameSlot]struct{} // the slots fit

// SetName records name (at most MaxName bytes) for the live object id,
// where every process of the tree sees it. The last call wins.
func (t *Table) SetName(id ID, name string) error {
	if len(name) > MaxName {
		return fmt.Errorf("refs: name of %d bytes (at most %d)", len(name), MaxName)
	}
	e, slot, err := t.slot(id)
	if err != nil {
		return err
	}
	var words [MaxName / 8]uint64
	for i := 0; i < len(name); i++ {
		words[i/8] |= uint64(name[i]) << (8 * (i % 8))
	}
	return t.a.Update(func(x *shm.Txn) error {
		meta := x.Load(e + eMeta)
		if uint32(meta>>32) != id.Gen || meta&0xff != stateLive {
			return ErrGone
		}
		for i, w := range words {
			x.Store(slot+slotName+shm.Offset(8*i), w)
		}
		x.Store(slot, uint64(id.Gen)<<32|uint64(len(name))<<8|1)
		return nil
	})
}

// Object describes a live object of the table.
type Object struct {
	ID    ID
	Kind  uint8
	Block shm.Offset
	Count int    // processes holding it
	Name  string // "" if none was set
	// Events is what CountEvent counted for it.
	Events int
}

// Each calls f for every object live at the time the walk reaches its
// entry, in entry order, without locking the table: an object made or
// freed meanwhile may or may not be seen, and one seen may be gone by the
// time f looks at it (Attach tells).
func (t *Table) Each(f func(Object)) {
	link := t.root + rObjSegs
	next := uint32(t.load(t.root + rNext))
	for base := uint32(0); base < next; base += objPerSeg {
		seg := shm.Offset(t.load(link))
		if seg == 0 {
			return
		}
		names := shm.Offset(t.load(seg + segNames))
		for i := uint32(0); i < objPerSeg && base+i < next; i++ {
			e := seg + segHdr + shm.Offset(i)*objEntry
			meta := t.load(e + eMeta)
			if meta&0xff != stateLive {
				continue
			}
			o := Object{
				ID:    ID{Index: base + i, Gen: uint32(meta >> 32)},
				Kind:  uint8(meta >> 8),
				Block: shm.Offset(t.load(e + eBlock)),
				Count: int(t.load(e + eCount)),
			}
			if names != 0 {
				slot := names + shm.Offset(i)*nameSlot
				o.Name = t.nameAt(slot, o.ID.Gen)
				if ev := t.load(slot + slotEvent); uint32(ev>>32) == o.ID.Gen {
					o.Events = int(uint32(ev))
				}
			}
			if t.load(e+eMeta) == meta && o.Block != 0 {
				f(o)
			}
		}
		link = seg
	}
}

// nameAt reads the name in slot if it is generation gen's.
func (t *Table) nameAt(slot shm.Offset, gen uint32) string {
	meta := t.load(slot)
	n := int(uint8(meta >> 8))
	if meta&1 == 0 || uint32(meta>>32) != gen || n > MaxName {
		return ""
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(atomic.LoadUint64(t.a.Uint64(slot+slotName+shm.Offset(8*(i/8)))) >> (8 * (i % 8)))
	}
	if t.load(slot) != meta {
		return "" // renamed meanwhile
	}
	return string(b)
}

// slot returns the entry of id and its names slot, making the names
// block of the entry's object segment if it has none.
func (t *Table) slot(id ID) (e, slot shm.Offset, err error) {
	t.mu.Lock()
	e, err = t.entry(id.Index, false)
	var seg shm.Offset
	if err == nil {
		seg = t.objSegs[id.Index/objPerSeg]
	}
	t.mu.Unlock()
	if err != nil {
		return 0, 0, err
	}
	names, _, err := t.a.AllocToEmpty(namesSize, seg+segNames)
	if err != nil {
		return 0, 0, fmt.Errorf("refs: names: %w", err)
	}
	return e, names + shm.Offset(id.Index%objPerSeg)*nameSlot, nil
}

// CountEvent adds one to the event count of the live object id (the
// library counts the recoveries of a lock from a dead owner), where every
// process of the tree sees it.
func (t *Table) CountEvent(id ID) error {
	e, slot, err := t.slot(id)
	if err != nil {
		return err
	}
	return t.a.Update(func(x *shm.Txn) error {
		meta := x.Load(e + eMeta)
		if uint32(meta>>32) != id.Gen || meta&0xff != stateLive {
			return ErrGone
		}
		n := uint64(0)
		if ev := x.Load(slot + slotEvent); uint32(ev>>32) == id.Gen {
			n = uint64(uint32(ev))
		}
		x.Store(slot+slotEvent, uint64(id.Gen)<<32|(n+1))
		return nil
	})
}

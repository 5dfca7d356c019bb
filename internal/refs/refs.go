// Package refs counts the references that the processes of a tree hold on
// the objects they share in the arena, and frees an object exactly once,
// when the last reference goes: closed, garbage-collected, or held by a
// process that died.
//
// # Model
//
// An object is a block of the arena registered in the object table, under
// an entry index and a generation that changes every time the entry is
// reused, so that a stale handle (its object freed, the entry reused) is
// told apart from a live one. Its reference count is the number of
// processes that hold it. A process holds an object once however many
// handles to it it has: the handles of one process are counted in that
// process's memory, and only the first and the last touch shared memory.
//
// Every process that holds something has an entry in the process table,
// with a ledger: the list of the objects it holds. When a process dies,
// whoever sweeps (its parent, on the death; anyone, when the arena runs
// short) drops the references in its ledger and frees the objects whose
// count reaches zero.
//
// # Crash safety
//
// Every change of a count goes with the change of the ledger that accounts
// for it in one transaction of the arena (shm.Arena.Update): a process killed
// at any instruction has made both or neither. Freeing an object is three
// restartable steps: the entry is marked dying with the freeing process as
// its destroyer, in the same transaction as the count reaching zero; the
// kind's destroy function frees what the object owns and the object's block
// is freed (shm.Arena.FreeFrom, which clears the entry's pointer in the same
// step); a last transaction puts the entry on the free list. A sweeper that
// finds a dying entry whose destroyer is dead finishes its work. Blocks are
// added to the tables with shm.Arena.AllocToEmpty, so they are never leaked
// nor added twice.
package refs

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/shm"
)

var (
	// ErrGone is returned by Attach for a handle whose object has been
	// freed.
	ErrGone = errors.New("refs: object freed")
	// ErrBadHandle is returned by Attach for a handle that names no object
	// of this tree.
	ErrBadHandle = errors.New("refs: no such object")
)

// ID names an object: its entry in the object table and the entry's
// generation.
type ID struct {
	Index uint32
	Gen   uint32
}

func (id ID) word() uint64 { return uint64(id.Index+1) | uint64(id.Gen)<<32 }

func idOf(w uint64) ID { return ID{Index: uint32(w) - 1, Gen: uint32(w >> 32)} }

// Kinds number object kinds for the statistics and the destroy functions.
const MaxKinds = 24

// Layout of the root block.
const (
	rMagic    = 0
	rTree     = 8
	rObjSegs  = 16 // first object segment
	rProcSegs = 24 // first process segment
	rFree     = 32 // free entry list: index+1 of its first entry, 0 if empty
	rNext     = 40 // next never-used entry index
	rDying    = 48 // entries in the dying state
	rLive     = 56 // entries in the live state
	rKinds    = 64 // [MaxKinds] live entries by kind
	rootSize  = rKinds + 8*MaxKinds

	rootMagic = 0x31534645524d504d // "MPMREFS1"
)

// Object table: segments of objPerSeg entries of 32 bytes after a 32-byte
// header whose first word links the next segment.
const (
	objSegSize = 64 << 10
	segHdr     = 32
	objEntry   = 32
	objPerSeg  = (objSegSize - segHdr) / objEntry

	eBlock = 0  // the object's block, 0 once freed
	eMeta  = 8  // gen<<32 | kind<<8 | state
	eCount = 16 // references
	eLink  = 24 // free: next free index+1; dying: the destroyer

	stateFree  = 0
	stateLive  = 1
	stateDying = 2
)

// Process table: segments of procPerSeg entries; a process entry's ledger
// is a chain of ledger segments of ledgerPerSeg words.
const (
	procSegSize = 4 << 10
	procEntry   = 32
	procPerSeg  = (procSegSize - segHdr) / procEntry

	pOwner  = 0 // pid | start32<<32; 0 for a free entry
	pN      = 8 // ledger length
	pLedger = 16

	ledgerSegSize = 4 << 10
	ledgerPerSeg  = ledgerSegSize/8 - 1 // the first word links the next segment
)

// DestroyFunc frees what an object of some kind owns besides its block,
// when the last reference to it goes. It must be restartable: a process
// killed inside it leaves work that a second call finishes, never a block
// freed twice; freeing owned blocks through shm.Arena.FreeFrom from words of
// the object's block does that.
//
// A destroy function runs with the table locked: what it needs of the
// table is ReleaseContained.
type DestroyFunc func(t *Table, block shm.Offset)

var destroyers [MaxKinds]DestroyFunc

// SetDestroy sets the destroy function of kind. It is meant for init
// functions.
func SetDestroy(kind uint8, f DestroyFunc) { destroyers[kind] = f }

// Table is this process's view of the tree's reference tables.
type Table struct {
	a    *shm.Arena
	root shm.Offset
	tree uint64
	self uint64

	mu      sync.Mutex
	objSegs []shm.Offset // the object segments found so far, in order
	me      shm.Offset   // this process's entry, 0 before it has one
	loaded  bool         // the ledger left by a parent has been read
	held    map[ID]*held // the objects this process holds
	ledger  []shm.Offset // this process's ledger segments, in order
}

type held struct {
	handles int // live handles in this process
	pos     int // position in the ledger
	kind    uint8
	block   shm.Offset // 0 until a handle of this process names it
}

// Create makes the tables in a new arena, recording them in its root word.
func Create(a *shm.Arena) (*Table, error) {
	root, ok, err := a.AllocToEmpty(rootSize, a.RootWord())
	if err != nil {
		return nil, fmt.Errorf("refs: create tables: %w", err)
	}
	if ok {
		var tree [8]byte
		rand.Read(tree[:])
		id := binary.LittleEndian.Uint64(tree[:]) | 1
		err := a.Update(func(t *shm.Txn) error {
			t.Store(root+rTree, id)
			t.Store(root+rMagic, rootMagic)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return Open(a)
}

// Open returns the tables of an arena made by Create.
func Open(a *shm.Arena) (*Table, error) {
	root := a.Root()
	if root == 0 {
		return nil, fmt.Errorf("%w: the arena has no reference tables", ErrBadHandle)
	}
	if *a.Uint64(root + rMagic) != rootMagic {
		return nil, fmt.Errorf("refs: corrupt root block")
	}
	return &Table{
		a:    a,
		root: root,
		tree: atomic.LoadUint64(a.Uint64(root + rTree)),
		self: selfWord(),
		held: map[ID]*held{},
	}, nil
}

func selfWord() uint64 {
	id := proc.Self()
	return uint64(uint32(id.Pid)) | uint64(uint32(id.Start))<<32
}

// Tree returns the tree's identity: a random number fixed when the tables
// were created, which handles carry so that another tree's are refused.
func (t *Table) Tree() uint64 { return t.tree }

func (t *Table) load(off shm.Offset) uint64 { return atomic.LoadUint64(t.a.Uint64(off)) }

// entry returns the offset of object entry i, growing the table if grow.
func (t *Table) entry(i uint32, grow bool) (shm.Offset, error) {
	seg := int(i / objPerSeg)
	for len(t.objSegs) <= seg {
		link := t.root + rObjSegs
		if n := len(t.objSegs); n > 0 {
			link = t.objSegs[n-1]
		}
		next := shm.Offset(t.load(link))
		if next == 0 {
			if !grow {
				return 0, fmt.Errorf("%w: entry %d", ErrBadHandle, i)
			}
			var err error
			if next, _, err = t.a.AllocToEmpty(objSegSize, link); err != nil {
				return 0, err
			}
		}
		t.objSegs = append(t.objSegs, next)
	}
	return t.objSegs[seg] + segHdr + shm.Offset(i%objPerSeg)*objEntry, nil
}

// New allocates a zeroed block of size bytes for an object of kind and
// registers it with one reference, this process's.
func (t *Table) New(kind uint8, size int) (ID, shm.Offset, error) {
	if int(kind) >= MaxKinds {
		panic("refs: kind out of range")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.ensureLedgerRoom(); err != nil {
		return ID{}, 0, err
	}
	// Reserve an entry as dying with this process as its destroyer, so
	// that if we die before the object is live a sweeper frees its block.
	var idx uint32
	var e shm.Offset
	for {
		next := uint32(t.load(t.root + rNext))
		free := t.load(t.root + rFree)
		cand := next
		if free != 0 {
			cand = uint32(free - 1)
		}
		off, err := t.entry(cand, true)
		if err != nil {
			return ID{}, 0, err
		}
		taken := false
		err = t.a.Update(func(x *shm.Txn) error {
			if x.Load(t.root+rFree) != free || uint32(x.Load(t.root+rNext)) != next {
				return nil // raced with another process: look again
			}
			if free != 0 {
				x.Store(t.root+rFree, x.Load(off+eLink))
			} else {
				x.Store(t.root+rNext, uint64(next+1))
			}
			gen := uint32(x.Load(off+eMeta) >> 32)
			x.Store(off+eMeta, uint64(gen)<<32|uint64(kind)<<8|stateDying)
			x.Store(off+eLink, t.self)
			x.Store(off+eCount, 0)
			x.Store(t.root+rDying, x.Load(t.root+rDying)+1)
			taken = true
			return nil
		})
		if err != nil {
			return ID{}, 0, err
		}
		if taken {
			idx, e = cand, off
			break
		}
	}
	block, err := t.a.AllocTo(size, e+eBlock)
	if err != nil {
		t.finishLocked(idx, e)
		return ID{}, 0, err
	}
	var id ID
	err = t.a.Update(func(x *shm.Txn) error {
		meta := x.Load(e + eMeta)
		id = ID{Index: idx, Gen: uint32(meta >> 32)}
		x.Store(e+eMeta, meta&^0xff|stateLive)
		x.Store(e+eLink, 0)
		x.Store(e+eCount, 1)
		x.Store(t.root+rDying, x.Load(t.root+rDying)-1)
		x.Store(t.root+rLive, x.Load(t.root+rLive)+1)
		k := t.root + rKinds + 8*shm.Offset(kind)
		x.Store(k, x.Load(k)+1)
		t.ledgerAdd(x, id)
		return nil
	})
	if err != nil {
		return ID{}, 0, err
	}
	t.held[id] = &held{handles: 1, pos: int(t.load(t.me+pN)) - 1, kind: kind, block: block}
	return id, block, nil
}

// Attach counts a new handle of this process to the object id, which must
// be of kind at block: the first handle makes this process a holder. It
// returns ErrGone if the object was freed, ErrBadHandle if id names
// nothing of that kind and place.
func (t *Table) Attach(id ID, kind uint8, block shm.Offset) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.loadLedgerLocked()
	e, err := t.entry(id.Index, false)
	if err != nil {
		return err
	}
	if h := t.held[id]; h != nil {
		if h.block == 0 {
			// Made for us by a parent: check it once.
			if err := t.a.Update(func(x *shm.Txn) error { return check(x, e, id, kind, block) }); err != nil {
				return err
			}
			h.kind, h.block = kind, block
		} else if h.kind != kind || h.block != block {
			return fmt.Errorf("%w: entry %d is another object", ErrBadHandle, id.Index)
		}
		h.handles++
		return nil
	}
	if err := t.ensureLedgerRoom(); err != nil {
		return err
	}
	err = t.a.Update(func(x *shm.Txn) error {
		if err := check(x, e, id, kind, block); err != nil {
			return err
		}
		x.Store(e+eCount, x.Load(e+eCount)+1)
		t.ledgerAdd(x, id)
		return nil
	})
	if err != nil {
		return err
	}
	t.held[id] = &held{handles: 1, pos: int(t.load(t.me+pN)) - 1, kind: kind, block: block}
	return nil
}

func check(x *shm.Txn, e shm.Offset, id ID, kind uint8, block shm.Offset) error {
	meta := x.Load(e + eMeta)
	if uint32(meta>>32) != id.Gen || meta&0xff != stateLive {
		return ErrGone
	}
	if uint8(meta>>8) != kind || shm.Offset(x.Load(e+eBlock)) != block {
		return fmt.Errorf("%w: entry %d is another object", ErrBadHandle, id.Index)
	}
	return nil
}

// Detach gives up one handle of this process to id; the last one gives up
// this process's reference, and the last reference frees the object. last,
// if not nil, is called when this process's last handle goes, before the
// object may be freed and while no handle to id can be attached in this
// process.
func (t *Table) Detach(id ID, last func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.held[id]
	if h == nil {
		return
	}
	if h.handles--; h.handles > 0 {
		return
	}
	delete(t.held, id)
	if last != nil {
		last()
	}
	e, err := t.entry(id.Index, false)
	if err != nil {
		return
	}
	dying := false
	t.a.Update(func(x *shm.Txn) error {
		dying = drop(x, t.root, e, id, t.self)
		t.ledgerRemove(x, h.pos)
		return nil
	})
	if dying {
		t.finishLocked(id.Index, e)
	}
}

// drop takes one reference off the object id at entry e, inside a
// transaction; if it was the last, it marks the entry dying with destroyer
// as its destroyer and reports true.
func drop(x *shm.Txn, root, e shm.Offset, id ID, destroyer uint64) bool {
	meta := x.Load(e + eMeta)
	if uint32(meta>>32) != id.Gen || meta&0xff != stateLive {
		return false
	}
	n := x.Load(e + eCount)
	if n > 1 {
		x.Store(e+eCount, n-1)
		return false
	}
	x.Store(e+eCount, 0)
	x.Store(e+eMeta, meta&^0xff|stateDying)
	x.Store(e+eLink, destroyer)
	x.Store(root+rDying, x.Load(root+rDying)+1)
	x.Store(root+rLive, x.Load(root+rLive)-1)
	k := root + rKinds + 8*shm.Offset(uint8(meta>>8))
	x.Store(k, x.Load(k)-1)
	return true
}

// finishLocked frees the dying object at entry e (index idx), whose
// destroyer is this process.
func (t *Table) finishLocked(idx uint32, e shm.Offset) {
	if block := shm.Offset(t.load(e + eBlock)); block != 0 {
		kind := uint8(t.load(e+eMeta) >> 8)
		if f := destroyers[kind%MaxKinds]; f != nil {
			f(t, block)
		}
		t.a.FreeFrom(e + eBlock)
	}
	t.a.Update(func(x *shm.Txn) error {
		meta := x.Load(e + eMeta)
		if meta&0xff != stateDying || x.Load(e+eBlock) != 0 {
			return nil
		}
		x.Store(e+eMeta, (meta>>32+1)<<32) // next generation, free
		x.Store(e+eLink, x.Load(t.root+rFree))
		x.Store(e+eCount, 0)
		x.Store(t.root+rFree, uint64(idx)+1)
		x.Store(t.root+rDying, x.Load(t.root+rDying)-1)
		return nil
	})
}

// AttachFor makes the process owner (pid | start32<<32) a holder of id, as
// Process.Start does for the primitives it passes to a child before the
// child runs: the child's own handles then find the reference made, and a
// child that dies before decoding them leaves it to the sweep.
func (t *Table) AttachFor(owner uint64, id ID, kind uint8, block shm.Offset) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.entry(id.Index, false)
	if err != nil {
		return err
	}
	pe, err := t.procEntry(owner)
	if err != nil {
		return err
	}
	if err := t.ledgerRoom(pe, nil); err != nil {
		return err
	}
	return t.a.Update(func(x *shm.Txn) error {
		if err := check(x, e, id, kind, block); err != nil {
			return err
		}
		// One reference per process and object: a child passed the same
		// primitive twice holds it once.
		n := x.Load(pe + pN)
		for i := uint64(0); i < n; i++ {
			if x.Load(t.ledgerWord(pe, int(i))) == id.word() {
				return nil
			}
		}
		x.Store(e+eCount, x.Load(e+eCount)+1)
		x.Store(t.ledgerWord(pe, int(n)), id.word())
		x.Store(pe+pN, n+1)
		return nil
	})
}

// Arena returns the arena of the tables.
func (t *Table) Arena() *shm.Arena { return t.a }

// Contain records that the object whose block holds the word dst refers
// to the object id: id gains a reference, which the container gives back
// with ReleaseContained when it is destroyed, and dst holds id's word (see
// Contained), both in one step.
func (t *Table) Contain(id ID, kind uint8, block, dst shm.Offset) error {
	return t.addRef(id, kind, block, dst)
}

// addRef adds to id a reference that no ledger accounts for, and, unless
// dst is 0, records id's word at dst in the same step (dst must be clear).
func (t *Table) addRef(id ID, kind uint8, block, dst shm.Offset) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, err := t.entry(id.Index, false)
	if err != nil {
		return err
	}
	return t.a.Update(func(x *shm.Txn) error {
		if err := check(x, e, id, kind, block); err != nil {
			return err
		}
		if dst != 0 {
			if x.Load(dst) != 0 {
				return fmt.Errorf("refs: Contain: word %#x in use", uint64(dst))
			}
			x.Store(dst, id.word())
		}
		x.Store(e+eCount, x.Load(e+eCount)+1)
		return nil
	})
}

// Contained returns the object recorded at dst by Contain, and whether
// there is one.
func (t *Table) Contained(dst shm.Offset) (ID, bool) {
	w := t.load(dst)
	return idOf(w), w != 0
}

// ReleaseContained gives back the reference recorded at dst by Contain and
// clears dst in the same step; it does nothing if dst is clear. It is for
// destroy functions, which run with the table locked.
func (t *Table) ReleaseContained(dst shm.Offset) {
	if w := t.load(dst); w != 0 {
		t.dropRef(idOf(w), dst)
	}
}

// Lend adds to id a reference that no process holds: one that a message
// carries, from the process that sends it to the one that receives it,
// which gives it back with Return once it holds the object itself. A lent
// reference in a message that is never received is given back by whoever
// disposes of the message (see ReturnLocked); one in a message lost to a
// kill in the middle of a send or a receive keeps its object alive.
func (t *Table) Lend(id ID, kind uint8, block shm.Offset) error {
	return t.addRef(id, kind, block, 0)
}

// Return gives back a reference made by Lend; the last reference frees
// the object.
func (t *Table) Return(id ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ReturnLocked(id)
}

// ReturnLocked is Return for destroy functions, which run with the table
// locked.
func (t *Table) ReturnLocked(id ID) { t.dropRef(id, 0) }

// dropRef gives back a reference that no ledger accounts for, with the
// table locked, clearing dst (which must hold id's word) in the same step
// unless dst is 0; the last reference frees the object.
func (t *Table) dropRef(id ID, dst shm.Offset) {
	e, err := t.entry(id.Index, false)
	if err != nil {
		return
	}
	dying := false
	t.a.Update(func(x *shm.Txn) error {
		if dst != 0 {
			if x.Load(dst) != id.word() {
				return nil // given back already
			}
			x.Store(dst, 0)
		}
		dying = drop(x, t.root, e, id, t.self)
		return nil
	})
	if dying {
		t.finishLocked(id.Index, e)
	}
}

// Word and FromWord convert an ID to and from one 64-bit word.
func (id ID) Word() uint64 { return id.word() }

func FromWord(w uint64) ID { return idOf(w) }

// Held reports how many objects this process holds.
func (t *Table) Held() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.held)
}

// loadLedgerLocked reads, once, the references a parent made for this
// process before it ran (AttachFor): each is held with no handle yet.
func (t *Table) loadLedgerLocked() {
	if t.loaded {
		return
	}
	t.loaded = true
	pe := t.findProc(t.self)
	if pe == 0 {
		return
	}
	t.me = pe
	n := int(t.load(pe + pN))
	for i := 0; i < n; i++ {
		w := t.load(t.ledgerWord(pe, i))
		if w != 0 {
			t.held[idOf(w)] = &held{pos: i}
		}
	}
}

// ensureLedgerRoom makes sure this process has an entry and room in its
// ledger for one more reference.
func (t *Table) ensureLedgerRoom() error {
	t.loadLedgerLocked()
	if t.me == 0 {
		pe, err := t.procEntry(t.self)
		if err != nil {
			return err
		}
		t.me = pe
	}
	return t.ledgerRoom(t.me, &t.ledger)
}

// ledgerRoom grows the ledger of process entry pe so that it has room for
// one more word; cache, if not nil, keeps its segments.
func (t *Table) ledgerRoom(pe shm.Offset, cache *[]shm.Offset) error {
	need := int(t.load(pe+pN)) / ledgerPerSeg // index of the segment to exist
	link := pe + pLedger
	for i := 0; i <= need; i++ {
		if cache != nil && i < len(*cache) {
			link = (*cache)[i]
			continue
		}
		seg := shm.Offset(t.load(link))
		if seg == 0 {
			var err error
			if seg, _, err = t.a.AllocToEmpty(ledgerSegSize, link); err != nil {
				return err
			}
		}
		if cache != nil {
			*cache = append(*cache, seg)
		}
		link = seg
	}
	return nil
}

// ledgerWord returns the offset of word i of process entry pe's ledger,
// which must exist.
func (t *Table) ledgerWord(pe shm.Offset, i int) shm.Offset {
	var seg shm.Offset
	if pe == t.me && i/ledgerPerSeg < len(t.ledger) {
		seg = t.ledger[i/ledgerPerSeg]
	} else {
		seg = shm.Offset(t.load(pe + pLedger))
		for j := 0; j < i/ledgerPerSeg && seg != 0; j++ {
			seg = shm.Offset(t.load(seg))
		}
	}
	if seg == 0 {
		panic("refs: ledger segment missing")
	}
	return seg + 8 + shm.Offset(i%ledgerPerSeg)*8
}

func (t *Table) ledgerAdd(x *shm.Txn, id ID) {
	n := x.Load(t.me + pN)
	x.Store(t.ledgerWord(t.me, int(n)), id.word())
	x.Store(t.me+pN, n+1)
}

// ledgerRemove removes word pos of this process's ledger, moving the last
// word into its place.
func (t *Table) ledgerRemove(x *shm.Txn, pos int) {
	n := int(x.Load(t.me + pN))
	if pos >= n {
		return
	}
	last := x.Load(t.ledgerWord(t.me, n-1))
	x.Store(t.ledgerWord(t.me, pos), last)
	x.Store(t.ledgerWord(t.me, n-1), 0)
	x.Store(t.me+pN, uint64(n-1))
	if pos != n-1 {
		if h := t.held[idOf(last)]; h != nil {
			h.pos = pos
		}
	}
}

// findProc returns the process entry of owner, 0 if it has none.
func (t *Table) findProc(owner uint64) shm.Offset {
	for seg := shm.Offset(t.load(t.root + rProcSegs)); seg != 0; seg = shm.Offset(t.load(seg)) {
		for i := 0; i < procPerSeg; i++ {
			pe := seg + segHdr + shm.Offset(i*procEntry)
			if t.load(pe+pOwner) == owner {
				return pe
			}
		}
	}
	return 0
}

// procEntry finds or makes the process entry of owner.
func (t *Table) procEntry(owner uint64) (shm.Offset, error) {
	for {
		if pe := t.findProc(owner); pe != 0 {
			return pe, nil
		}
		link := t.root + rProcSegs
		var got shm.Offset
		for seg := shm.Offset(t.load(link)); seg != 0; seg = shm.Offset(t.load(seg)) {
			link = seg
			for i := 0; i < procPerSeg && got == 0; i++ {
				pe := seg + segHdr + shm.Offset(i*procEntry)
				if t.load(pe+pOwner) != 0 {
					continue
				}
				t.a.Update(func(x *shm.Txn) error {
					if x.Load(pe+pOwner) == 0 {
						x.Store(pe+pOwner, owner)
						x.Store(pe+pN, 0)
						got = pe
					}
					return nil
				})
			}
			if got != 0 {
				return got, nil
			}
		}
		if _, _, err := t.a.AllocToEmpty(procSegSize, link); err != nil {
			return 0, err
		}
	}
}

// Sweep drops the references of processes of the tree that have died and
// finishes the frees that dead processes left half done. It is safe to
// call at any time from any process, and from several at once.
func (t *Table) Sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for seg := shm.Offset(t.load(t.root + rProcSegs)); seg != 0; seg = shm.Offset(t.load(seg)) {
		for i := 0; i < procPerSeg; i++ {
			pe := seg + segHdr + shm.Offset(i*procEntry)
			if owner := t.load(pe + pOwner); owner != 0 && owner != t.self && !alive(owner) {
				t.sweepProc(pe, owner)
			}
		}
	}
	if t.load(t.root+rDying) == 0 {
		return
	}
	next := uint32(t.load(t.root + rNext))
	for i := uint32(0); i < next; i++ {
		e, err := t.entry(i, false)
		if err != nil {
			return
		}
		meta := t.load(e + eMeta)
		if meta&0xff != stateDying {
			continue
		}
		d := t.load(e + eLink)
		if d == t.self || alive(d) {
			continue
		}
		took := false
		t.a.Update(func(x *shm.Txn) error {
			if x.Load(e+eMeta) == meta && x.Load(e+eLink) == d {
				x.Store(e+eLink, t.self)
				took = true
			}
			return nil
		})
		if took {
			t.finishLocked(i, e)
		}
	}
}

// sweepProc drops the references of the dead process owner, whose entry
// is pe, frees its ledger and its entry.
func (t *Table) sweepProc(pe shm.Offset, owner uint64) {
	for {
		var id ID
		var e shm.Offset
		dying, more := false, false
		t.a.Update(func(x *shm.Txn) error {
			if x.Load(pe+pOwner) != owner {
				return nil
			}
			n := int(x.Load(pe + pN))
			if n == 0 {
				return nil
			}
			more = true
			w := t.ledgerWord(pe, n-1)
			v := x.Load(w)
			x.Store(w, 0)
			x.Store(pe+pN, uint64(n-1))
			if v == 0 {
				return nil
			}
			id = idOf(v)
			var err error
			if e, err = t.entry(id.Index, false); err != nil {
				return nil
			}
			dying = drop(x, t.root, e, id, t.self)
			return nil
		})
		if dying {
			t.finishLocked(id.Index, e)
		}
		if !more {
			break
		}
	}
	// Free the ledger from its last segment back, then the entry.
	for {
		link := pe + pLedger
		seg := shm.Offset(t.load(link))
		if seg == 0 {
			break
		}
		for next := shm.Offset(t.load(seg)); next != 0; next = shm.Offset(t.load(seg)) {
			link, seg = seg, next
		}
		t.a.FreeFrom(link)
	}
	t.a.Update(func(x *shm.Txn) error {
		if x.Load(pe+pOwner) == owner && x.Load(pe+pN) == 0 && x.Load(pe+pLedger) == 0 {
			x.Store(pe+pOwner, 0)
		}
		return nil
	})
}

func alive(owner uint64) bool {
	return proc.AliveStart32(int(uint32(owner)), uint32(owner>>32))
}

// Stats counts the live objects, by kind.
type Stats struct {
	Live   int
	Dying  int
	ByKind [MaxKinds]int
	// Tables is the bytes of the tables themselves: the object table
	// grows to the peak number of objects and is kept (with the names
	// blocks beside its segments), ledgers grow and shrink with their
	// processes' holdings.
	Tables int
}

// Stats returns the object counts.
func (t *Table) Stats() Stats {
	var s Stats
	t.a.Update(func(x *shm.Txn) error {
		s.Live = int(x.Load(t.root + rLive))
		s.Dying = int(x.Load(t.root + rDying))
		for k := range s.ByKind {
			s.ByKind[k] = int(x.Load(t.root + rKinds + 8*shm.Offset(k)))
		}
		s.Tables = 256 // the root block's size class
		for seg := shm.Offset(x.Load(t.root + rObjSegs)); seg != 0; seg = shm.Offset(x.Load(seg)) {
			s.Tables += objSegSize
			if x.Load(seg+segNames) != 0 {
				s.Tables += namesSize
			}
		}
		for seg := shm.Offset(x.Load(t.root + rProcSegs)); seg != 0; seg = shm.Offset(x.Load(seg)) {
			s.Tables += procSegSize
			for i := 0; i < procPerSeg; i++ {
				pe := seg + segHdr + shm.Offset(i*procEntry)
				for l := shm.Offset(x.Load(pe + pLedger)); l != 0; l = shm.Offset(x.Load(l)) {
					s.Tables += ledgerSegSize
				}
			}
		}
		return nil
	})
	return s
}

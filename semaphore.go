package mp

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/wait"
)

// Semaphore is a counter of permits shared by every process of the tree,
// Python's multiprocessing.Semaphore: Acquire takes a permit, waiting while
// there is none; Release returns one.
//
// Permits are exact under SIGKILL: whatever instruction a process is killed
// at, a permit it had taken is given back once it is gone (a waiter that
// finds no permit checks for dead holders every 50 ms), a permit it had
// returned is not given back again, and a BoundedSemaphore never admits
// more holders than its value. For this each process's holdings are
// recorded beside the count, and count and record change as one step.
//
// Permits are not tied to the process that took them, as in Python: any
// process may Release. A Release returns a permit held by the calling
// process if it holds one, and otherwise one held by another process (so
// that a permit taken by one process and returned by another is not
// recovered again when the first exits); only when no live or dead process
// holds a permit does Release add a new one, a signal (as with a
// Semaphore(0) that one process releases for another to acquire). The
// permits recovered from a dead process are thus those taken and not
// returned by anyone.
//
// Up to MaxHolders live processes can hold permits of one semaphore at a
// time; beyond that, Acquire returns an error wrapping ErrTooManyProcesses
// (TryAcquire reports false) rather than hand out a permit that could not
// be recovered.
//
// The zero Semaphore is not usable: make one with NewSemaphore or
// NewBoundedSemaphore. Its methods panic with an error wrapping
// ErrInvalidHandle; Close does nothing.
type Semaphore struct {
	h       handle
	word    *uint64 // the count and the last change's record: see ledger
	count   *uint32 // the count's half of word: the futex word
	bound   *uint32 // the initial value for a bounded semaphore, 0 otherwise
	waiters *uint32 // processes' goroutines currently parked
	hint    *uint32 // an entry last seen holding permits, for a Release that holds none
	holders holders // what each process holds, to recover a dead one's permits
	me      atomic.Pointer[semEntry]
}

// Block layout: the ledger's word, counter words, then the holder table.
const (
	semWord      = 0  // u64: count | tag (see ledger)
	semBound     = 8  // u32
	semWaiters   = 12 // u32
	semHint      = 16 // u32
	semTableOff  = 64
	semBlockSize = semTableOff + holdersSize
)

// NewSemaphore returns a semaphore with n permits.
func NewSemaphore(n int) (*Semaphore, error) { return newSemaphore(n, false) }

// NewBoundedSemaphore returns a semaphore with n permits whose Release
// fails with ErrNotAcquired if it would take the count above n, Python's
// BoundedSemaphore.
func NewBoundedSemaphore(n int) (*Semaphore, error) { return newSemaphore(n, true) }

func newSemaphore(n int, bounded bool) (*Semaphore, error) {
	name := "NewSemaphore"
	if bounded {
		name = "NewBoundedSemaphore"
	}
	if n < 0 || n >= math.MaxInt32 {
		return nil, badValue("%s(%d): a semaphore's value must be from 0 to %d", name, n, math.MaxInt32-1)
	}
	if bounded && n == 0 {
		return nil, badValue("%s(0): a bounded semaphore of 0 could never be released", name)
	}
	h, err := alloc(kindSemaphore, semBlockSize)
	if err != nil {
		return nil, err
	}
	s := openSemaphore(h)
	atomic.StoreUint64(s.word, mkWord(uint32(n), 0))
	if bounded {
		atomic.StoreUint32(s.bound, uint32(n))
	}
	return s, nil
}

func openSemaphore(h handle) *Semaphore {
	s := &Semaphore{h: h, word: h.u64(semWord), count: h.u32(semWord), bound: h.u32(semBound),
		waiters: h.u32(semWaiters), hint: h.u32(semHint)}
	if !littleEndian {
		s.count = h.u32(semWord + 4)
	}
	s.holders.init(h, semTableOff)
	s.holders.keep = true
	return s
}

// The ledger. The semaphore's word holds the count and a tag recording the
// last change made to it: which entry of the holder table it changes
// (entry), how (op) and that entry's sequence number for it (seq). Every
// change of count goes through one compare-and-swap of the word, and
// whoever changes the word first settles the change it records: applies it
// to its entry, unless the entry shows it applied already (its sequence
// number is the tag's). So a change is made in full by its one CAS, and its
// entry catches up with it at the latest with the next change, or a
// reclaim, by any process: a process killed after its CAS is completed by
// others; one killed before it changed nothing.
//
// An entry's state word is its held count and the sequence number of the
// last change applied to it. Changes to an entry are made one at a time
// (each settles the one before), so the tag's change is due exactly when
// the entry's sequence number is the tag's minus one. (Sequence numbers
// have tagSeqBits bits: a process stalled between loading the word and its
// CAS through 2^20 changes of one entry could be confused; no other.)
const (
	opNone  = 0 // no entry changes: a signal (a Release by no holder), or a new semaphore
	opTake  = 1 // the entry took a permit: held+1
	opGive  = 2 // the entry's permit was returned: held-1
	opClear = 3 // a dead entry's held permits were given back: held=0

	tagSeqBits   = 20
	tagEntryBits = 10
	tagSeqMask   = 1<<tagSeqBits - 1
)

// The tag can name every entry.
var _ [1<<tagEntryBits - holderMax]struct{}

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// mkWord packs count and tag so that count is the half of the word at the
// lower address, which s.count points to.
func mkWord(count, tag uint32) uint64 {
	if littleEndian {
		return uint64(count) | uint64(tag)<<32
	}
	return uint64(tag) | uint64(count)<<32
}

func wordCount(w uint64) uint32 {
	if littleEndian {
		return uint32(w)
	}
	return uint32(w >> 32)
}

func wordTag(w uint64) uint32 {
	if littleEndian {
		return uint32(w >> 32)
	}
	return uint32(w)
}

func mkTag(op, entry int, seq uint32) uint32 {
	return uint32(op)<<(tagSeqBits+tagEntryBits) | uint32(entry)<<tagSeqBits | seq&tagSeqMask
}

func tagParts(tag uint32) (op, entry int, seq uint32) {
	return int(tag >> (tagSeqBits + tagEntryBits)), int(tag>>tagSeqBits) & (1<<tagEntryBits - 1), tag & tagSeqMask
}

// An entry's state: held in the half at the lower address (where the
// holder table's generic code reads a count), its sequence number in the
// other.
func mkState(held, seq uint32) uint64 { return mkWord(held, seq) }
func stateHeld(x uint64) uint32       { return wordCount(x) }
func stateSeq(x uint64) uint32        { return wordTag(x) & tagSeqMask }

// settle applies the change that word w records to its entry, if it is
// not applied yet.
func (s *Semaphore) settle(w uint64) {
	op, i, seq := tagParts(wordTag(w))
	if op == opNone {
		return
	}
	_, st := s.holders.slot(i)
	if st == nil {
		return // not an entry: a corrupt tag
	}
	settleAt(st, op, seq)
}

// settleMine settles w for a caller whose entry is me, and returns me's
// state as of w: the word most often records the caller's own last change.
// w must have been loaded before.
func (s *Semaphore) settleMine(w uint64, me *semEntry) uint64 {
	x := atomic.LoadUint64(me.st)
	op, i, seq := tagParts(wordTag(w))
	switch {
	case op == opNone:
	case i != me.i:
		s.settle(w) // another entry's: me's state is final as it is
	case stateSeq(x) == (seq-1)&tagSeqMask:
		settleAt(me.st, op, seq)
		x = atomic.LoadUint64(me.st)
	}
	return x
}

// settleAt applies change op, numbered seq, to the entry whose state word
// is st, if it is not applied yet.
func settleAt(st *uint64, op int, seq uint32) {
	for {
		x := atomic.LoadUint64(st)
		if stateSeq(x) != (seq-1)&tagSeqMask {
			return // applied already
		}
		h := stateHeld(x)
		switch op {
		case opTake:
			h++
		case opGive:
			h--
		case opClear:
			h = 0
		}
		semHook()
		if atomic.CompareAndSwapUint64(st, x, mkState(h, seq)) {
			return
		}
	}
}

// state returns the state of entry i, which the caller has just seen the
// word settle.
func (s *Semaphore) state(i int) uint64 {
	_, st := s.holders.slot(i)
	return atomic.LoadUint64(st)
}

// change makes the change of entry i by op, with the count going from that
// of w to c, in one CAS of the word, which must still be w; x is the
// entry's state, read after w was settled. It reports whether it did.
func (s *Semaphore) change(w uint64, c uint32, op, i int, x uint64) bool {
	nw := mkWord(c, mkTag(op, i, stateSeq(x)+1))
	if op == opNone {
		nw = mkWord(c, 0)
	}
	semHook()
	if !atomic.CompareAndSwapUint64(s.word, w, nw) {
		return false
	}
	s.settle(nw)
	return true
}

// semEntry is this process's entry of the holder table.
type semEntry struct {
	i  int
	st *uint64
}

// mine returns this process's entry, or nil if it has none yet.
func (s *Semaphore) mine() *semEntry {
	if me := s.me.Load(); me != nil {
		return me
	}
	i := int(s.holders.mine.Load()) - 1
	if i < 0 {
		return nil
	}
	_, st := s.holders.slot(i)
	me := &semEntry{i, st}
	s.me.Store(me)
	return me
}

// Acquire takes a permit, blocking until one is available or ctx ends. It
// returns nil, ctx.Err(), or an error wrapping ErrTooManyProcesses (see
// Semaphore); a failed Acquire takes nothing.
func (s *Semaphore) Acquire(ctx context.Context) error {
	s.check()
	if s.take() {
		return nil
	}
	return s.acquireSlow(ctx)
}

// TryAcquire takes a permit if one is available, without blocking, and
// reports whether it did. It reports false, taking nothing, in a process
// that cannot be recorded as a holder (see Semaphore).
func (s *Semaphore) TryAcquire() bool {
	s.check()
	return s.take()
}

func (s *Semaphore) take() bool {
	me := s.me.Load()
	if me == nil {
		if !s.own() {
			return false
		}
		me = s.mine()
	}
	for {
		w := atomic.LoadUint64(s.word)
		c := wordCount(w)
		if c == 0 {
			return false
		}
		x := s.settleMine(w, me)
		seq := (stateSeq(x) + 1) & tagSeqMask
		semHook()
		if atomic.CompareAndSwapUint64(s.word, w, mkWord(c-1, mkTag(opTake, me.i, seq))) {
			// The entry is still x, unless a later change settled this
			// one already: then the CAS fails, as it should.
			semHook()
			atomic.CompareAndSwapUint64(me.st, x, mkState(stateHeld(x)+1, seq))
			s.h.loc.raceAcquire()
			return true
		}
	}
}

// own gives this process an entry in the holder table, reclaiming dead
// processes' entries if the table is full.
func (s *Semaphore) own() bool {
	return s.holders.own(func() { s.reclaim() })
}

func (s *Semaphore) acquireSlow(ctx context.Context) error {
	if !s.own() {
		return fmt.Errorf("%w: %d processes, all alive, are recorded holding the semaphore", ErrTooManyProcesses, holderMax)
	}
	g := s.h.loc.gate
	select {
	case g <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g }()
	reclaimed := time.Now() // look for dead holders only after a poll interval
	for i := 0; ; i++ {
		if s.take() {
			return nil
		}
		if i < spins {
			continue
		}
		if time.Since(reclaimed) >= ownerPoll {
			reclaimed = time.Now()
			if s.reclaim() {
				continue
			}
		}
		atomic.AddUint32(s.waiters, 1)
		err := wait.Wait(ctx, s.count, 0, ownerPoll)
		atomic.AddUint32(s.waiters, ^uint32(0))
		if err != nil {
			// Pass on a wake-up this waiter may have absorbed.
			if atomic.LoadUint32(s.count) > 0 {
				wait.Wake(s.count, 1)
			}
			return err
		}
	}
}

// Release returns a permit, waking a waiter if there is one: one this
// process holds, or else one another process holds, or else a new one
// (see Semaphore). For a bounded semaphore it returns ErrNotAcquired, and
// changes nothing, if the count is already at its initial value; for any
// semaphore, if the count is at its maximum, math.MaxInt32.
func (s *Semaphore) Release() error {
	s.check()
	s.h.loc.raceRelease()
	bound := atomic.LoadUint32(s.bound)
	me := s.me.Load()
	if me == nil {
		// This handle took nothing, but another handle of this process
		// may have: the process has one entry, whichever handle made it.
		if i := s.holders.find(self64()); i >= 0 {
			s.holders.mine.Store(int32(i + 1))
		}
		me = s.mine()
	}
	if me != nil {
		if done, err := s.releaseMine(bound, me); done {
			return err
		}
	}
	mine := -1
	if me != nil {
		mine = me.i
	}
	for {
		w := atomic.LoadUint64(s.word)
		c := wordCount(w)
		if bound != 0 && c >= bound {
			return fmt.Errorf("%w: BoundedSemaphore(%d) released too many times", ErrNotAcquired, bound)
		}
		if c >= math.MaxInt32 {
			return fmt.Errorf("%w: semaphore released too many times (its value is at its maximum)", ErrNotAcquired)
		}
		s.settle(w)
		i, x := mine, uint64(0)
		if i >= 0 {
			x = s.state(i)
		}
		if i < 0 || stateHeld(x) == 0 {
			i, x = s.holderOther()
		}
		op := opGive
		if i < 0 {
			op = opNone
		}
		if s.change(w, c+1, op, i, x) {
			break
		}
	}
	if atomic.LoadUint32(s.waiters) > 0 {
		wait.Wake(s.count, 1)
	}
	return nil
}

// releaseMine is Release's fast path, for a process that holds a permit:
// it reports done false, having changed nothing, if the process holds none.
func (s *Semaphore) releaseMine(bound uint32, me *semEntry) (done bool, err error) {
	for {
		w := atomic.LoadUint64(s.word)
		c := wordCount(w)
		if (bound != 0 && c >= bound) || c >= math.MaxInt32 {
			return false, nil // the slow path says why
		}
		x := s.settleMine(w, me)
		if stateHeld(x) == 0 {
			return false, nil
		}
		seq := (stateSeq(x) + 1) & tagSeqMask
		semHook()
		if atomic.CompareAndSwapUint64(s.word, w, mkWord(c+1, mkTag(opGive, me.i, seq))) {
			semHook()
			atomic.CompareAndSwapUint64(me.st, x, mkState(stateHeld(x)-1, seq))
			if atomic.LoadUint32(s.waiters) > 0 {
				wait.Wake(s.count, 1)
			}
			return true, nil
		}
	}
}

// holderOther returns an entry holding a permit and its state, or -1 if no
// entry holds one, for a Release by a process that holds none.
func (s *Semaphore) holderOther() (int, uint64) {
	if h := int(atomic.LoadUint32(s.hint)); h < holderMax {
		if _, st := s.holders.slot(h); st != nil {
			if x := atomic.LoadUint64(st); stateHeld(x) > 0 {
				return h, x
			}
		}
	}
	found, state := -1, uint64(0)
	s.holders.each(func(i int, _, st *uint64) bool {
		if x := atomic.LoadUint64(st); stateHeld(x) > 0 {
			found, state = i, x
			return false
		}
		return true
	})
	if found >= 0 {
		atomic.StoreUint32(s.hint, uint32(found))
	}
	return found, state
}

// Value returns the number of permits available: a snapshot.
func (s *Semaphore) Value() int {
	s.check()
	return int(atomic.LoadUint32(s.count))
}

// reclaim gives back the permits of dead holders, reporting whether it
// recovered any, and frees their entries. Any number of processes may
// reclaim at once, and be killed doing it: each dead entry's permits go
// back in one change of the word (see ledger), made by one of them.
func (s *Semaphore) reclaim() bool {
	got := false
	s.settle(atomic.LoadUint64(s.word)) // a dead process's last change, maybe
	s.holders.each(func(i int, id, st *uint64) bool {
		who := atomic.LoadUint64(id)
		if who == 0 || stateHeld(atomic.LoadUint64(st)) == 0 || idAlive(who) {
			return true // (a dead entry holding nothing is freed when the table is full)
		}
		for {
			w := atomic.LoadUint64(s.word)
			s.settle(w)
			x := atomic.LoadUint64(st)
			h := stateHeld(x)
			if h == 0 {
				break
			}
			if s.change(w, wordCount(w)+h, opClear, i, x) {
				got = true
				break
			}
		}
		// Free only once nothing is held: a process killed before this
		// leaves a dead entry holding nothing, which the next reclaim
		// frees.
		semHook()
		atomic.CompareAndSwapUint64(id, who, 0)
		return true
	})
	if got {
		wait.Wake(s.count, math.MaxInt32)
	}
	return got
}

// semHook is set, by tests only, to run before every store to shared
// memory that Acquire, Release and reclaim make, so that a test can kill
// the process at each.
var semTestHook func()

func semHook() {
	if semTestHook != nil {
		semTestHook()
	}
}

func (s *Semaphore) check() {
	if !s.h.valid() {
		panic(fmt.Errorf("%w: a Semaphore must be made with NewSemaphore or NewBoundedSemaphore", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the semaphore's handle.
func (s *Semaphore) MarshalBinary() ([]byte, error) { return s.h.marshal() }

// UnmarshalBinary makes s refer to the semaphore that data encodes.
func (s *Semaphore) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindSemaphore, data); err != nil {
		return err
	}
	o := openSemaphore(h)
	s.h, s.word, s.count, s.bound, s.waiters, s.hint = o.h, o.word, o.count, o.bound, o.waiters, o.hint
	s.holders.mine.Store(0)
	s.holders.blocks.Store(nil)
	s.me.Store(nil)
	s.holders.init(h, semTableOff)
	s.holders.keep = true
	return nil
}

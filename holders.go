package mp

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/shm"
)

// holders is a table, in a primitive's shared block, of what each process
// holds of it: a semaphore's permits, a joinable queue's items taken but not
// yet marked done, a pipe end's holders. When a process dies, whoever
// notices gives back what it held. Each process finds its own entry once and
// caches its index.
//
// The table is a chain of blocks of holderBlockSlots entries: the first in
// the primitive's block, the others allocated from the arena when the
// entries run out and no process of those recorded is dead, up to
// holderMax entries in all. A process that finds no entry is told so (see
// own): holdings are never silently left untracked.
type holders struct {
	base unsafe.Pointer // the first block: holdersSize bytes
	off  shm.Offset     // base's arena offset; 0 for a table that cannot grow
	mine atomic.Int32   // this process's entry + 1, once claimed; 0 before
	keep bool           // a new entry keeps its state word (the semaphore's: see ledger)

	mu     sync.Mutex               // guards fullAt and extending blocks
	fullAt time.Time                // when own last called its full func
	blocks atomic.Pointer[[]hblock] // the chain as far as this process has seen it
}

// Layout of each block: a header, then the entries.
const (
	holderNext       = 0  // u64: arena offset of the next block, 0 if none
	holderGrow       = 8  // u64 (first block only): the id of the process extending the chain
	holderHdr        = 16 // bytes
	holderEntry      = 16 // id u64 (pid u32, start32 u32), state u64 (held, and the semaphore's seq)
	holdersSize      = 1024
	holderBlockSlots = (holdersSize - holderHdr) / holderEntry // 63
	holderMaxBlocks  = 16
	holderMax        = holderBlockSlots * holderMaxBlocks // 1008
)

// MaxHolders is how many live processes one Semaphore, JoinableQueue,
// exact-maxsize Queue or pipe end can record as holders (see
// ErrTooManyProcesses).
const MaxHolders = 1008

// MaxHolders must be the number of entries a holder table can have (this does
// not compile otherwise).
const _ = uint(MaxHolders-holderMax) + uint(holderMax-MaxHolders)

// claimMu serialises the search for an entry of this process, so that a
// process never has two entries in one table.
var claimMu sync.Mutex

// init points t at the table at byte at of h's block.
func (t *holders) init(h handle, at uintptr) {
	t.base = unsafe.Add(h.base, at)
	t.off = h.off + shm.Offset(at)
}

// hblock is a block of the chain as this process maps it.
type hblock struct {
	p   unsafe.Pointer
	off shm.Offset // 0 for a first block outside the arena
}

// chain returns the blocks of the chain, at least k+1 of them if the chain
// has that many.
func (t *holders) chain(k int) []hblock {
	if p := t.blocks.Load(); p != nil {
		bs := *p
		if k < len(bs) || atomic.LoadUint64((*uint64)(unsafe.Add(bs[len(bs)-1].p, holderNext))) == 0 {
			return bs // the chain as this process knows it is all of it
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var bs []hblock
	if p := t.blocks.Load(); p != nil {
		bs = *p
	} else {
		bs = []hblock{{t.base, t.off}}
	}
	if t.off != 0 && len(bs) <= k {
		a, err := treeArena()
		for err == nil && len(bs) <= k && len(bs) < holderMaxBlocks {
			next := shm.Offset(atomic.LoadUint64((*uint64)(unsafe.Add(bs[len(bs)-1].p, holderNext))))
			if next == 0 {
				break
			}
			size, serr := a.BlockSize(next)
			if serr != nil || size < holdersSize {
				break // not a block of ours: the chain ends here
			}
			bs = append(bs, hblock{unsafe.Pointer(&a.Bytes(next, holdersSize)[0]), next})
		}
	}
	t.blocks.Store(&bs)
	return bs
}

// block returns block k of the chain, or nil if the chain is shorter.
func (t *holders) block(k int) unsafe.Pointer {
	if k == 0 {
		return t.base
	}
	if bs := t.chain(k); k < len(bs) {
		return bs[k].p
	}
	return nil
}

// slot returns entry i's two words, or nils if the chain has no entry i.
func (t *holders) slot(i int) (id, state *uint64) {
	b := t.block(i / holderBlockSlots)
	if b == nil {
		return nil, nil
	}
	p := unsafe.Add(b, holderHdr+(i%holderBlockSlots)*holderEntry)
	return (*uint64)(p), (*uint64)(unsafe.Add(p, 8))
}

// held returns entry i's count, the first half in memory of its state
// word, for the tables that keep a plain count (all but the semaphore's).
func (t *holders) held(i int) *uint32 {
	_, st := t.slot(i)
	return (*uint32)(unsafe.Pointer(st))
}

// each calls f for every entry of the chain as it is now, until f returns
// false.
func (t *holders) each(f func(i int, id, state *uint64) bool) {
	bs := []hblock{{t.base, t.off}}
	if t.off != 0 {
		bs = t.chain(holderMaxBlocks)
	}
	for k, blk := range bs {
		b := blk.p
		for j := 0; j < holderBlockSlots; j++ {
			p := unsafe.Add(b, holderHdr+j*holderEntry)
			if !f(k*holderBlockSlots+j, (*uint64)(p), (*uint64)(unsafe.Add(p, 8))) {
				return
			}
		}
	}
}

// add adds d to this process's count, making it an entry if it has none.
// It reports false, and adds nothing, if no entry can be had (see own).
func (t *holders) add(d int32) bool {
	i := int(t.mine.Load()) - 1
	if i < 0 {
		if !t.own(nil) {
			return false
		}
		i = int(t.mine.Load()) - 1
	}
	atomic.AddUint32(t.held(i), uint32(d))
	return true
}

// own makes sure this process has an entry, so that what it adds is
// tracked, and reports whether it has. When every entry is taken it calls
// full, if not nil, which is to empty the entries of dead processes
// (giving back what they held, as the table's owner does), then frees the
// entries of dead processes that hold nothing, then extends the chain; it
// fails only with holderMax live processes recorded. full is called at
// most once per ownerPoll per handle: with every recorded process alive it
// frees nothing and costs a look at each.
func (t *holders) own(full func()) bool {
	if t.mine.Load() > 0 {
		return true
	}
	i := t.claimFor(self64(), !t.keep, full)
	if i < 0 {
		return false
	}
	t.mine.Store(int32(i + 1))
	return true
}

// claimFor finds or makes the entry of process id (pid | start32<<32), and
// returns its index, or -1 if the table is full of live processes. With
// reset, a new entry's count is zeroed (see reclaim); the semaphore's
// entries are always free with a zero count and keep their sequence.
func (t *holders) claimFor(id uint64, reset bool, full func()) int {
	claimMu.Lock()
	defer claimMu.Unlock()
	if i := t.find(id); i >= 0 {
		return i
	}
	for attempt := 0; ; attempt++ {
		if i := t.claimFree(id, reset); i >= 0 {
			return i
		}
		switch attempt {
		case 0:
			t.mu.Lock()
			due := full != nil && time.Since(t.fullAt) >= ownerPoll
			if due {
				t.fullAt = time.Now()
			}
			t.mu.Unlock()
			if due {
				full()
			}
		case 1:
			t.freeDead()
		case 2:
			if !t.grow() {
				return -1
			}
		default:
			if attempt > 2+holderMaxBlocks {
				return -1
			}
			if !t.grow() {
				return -1
			}
		}
	}
}

// find returns the index of id's entry, or -1.
func (t *holders) find(id uint64) int {
	found := -1
	t.each(func(i int, w, _ *uint64) bool {
		if atomic.LoadUint64(w) == id {
			found = i
			return false
		}
		return true
	})
	return found
}

// claimFree takes a free entry for id in one compare-and-swap, and returns
// its index, or -1 if there is none.
func (t *holders) claimFree(id uint64, reset bool) int {
	found := -1
	t.each(func(i int, w, st *uint64) bool {
		if atomic.LoadUint64(w) == 0 && atomic.CompareAndSwapUint64(w, 0, id) {
			if reset {
				// A process killed before this store leaves an entry
				// of its own with a count of zero or below (see
				// reclaim), which the next reclaim frees.
				atomic.StoreUint32((*uint32)(unsafe.Pointer(st)), 0)
			}
			found = i
			return false
		}
		return true
	})
	return found
}

// freeDead frees the entries of dead processes that hold nothing.
func (t *holders) freeDead() {
	t.each(func(_ int, w, st *uint64) bool {
		id := atomic.LoadUint64(w)
		if id != 0 && int32(atomic.LoadUint32((*uint32)(unsafe.Pointer(st)))) <= 0 && !idAlive(id) {
			atomic.CompareAndSwapUint64(w, id, 0)
		}
		return true
	})
}

// grow adds a block to the chain, unless another process just did, and
// reports whether the chain may now have a free entry.
func (t *holders) grow() bool {
	if t.off == 0 {
		return false
	}
	a, err := treeArena()
	if err != nil {
		return false
	}
	lock := (*uint64)(unsafe.Add(t.base, holderGrow))
	me := self64()
	for tries := 0; ; tries++ {
		o := atomic.LoadUint64(lock)
		if o == 0 && atomic.CompareAndSwapUint64(lock, 0, me) {
			break
		}
		if o != 0 && o != me && !idAlive(o) && atomic.CompareAndSwapUint64(lock, o, me) {
			break // its holder died extending the chain, which AllocTo makes all or nothing
		}
		if tries > 1000 {
			return true // another process is extending it: look again
		}
		runtime.Gosched()
	}
	defer atomic.StoreUint64(lock, 0)
	bs := t.chain(holderMaxBlocks)
	last := bs[len(bs)-1]
	if atomic.LoadUint64((*uint64)(unsafe.Add(last.p, holderNext))) != 0 {
		return true // extended since chain looked
	}
	if len(bs) >= holderMaxBlocks {
		return false
	}
	// Recorded in the chain in the same step as it is allocated: a
	// process killed here leaks nothing.
	if _, err := a.AllocTo(holdersSize, last.off+holderNext); err != nil {
		return false
	}
	return true
}

// idAlive reports whether the process id (pid | start32<<32) is alive.
func idAlive(id uint64) bool {
	return proc.AliveStart32(int(uint32(id)), uint32(id>>32))
}

// reclaim empties the entries of dead processes and returns the sum of
// what they held (only positive holdings count: a process that gave back
// more than it took owes nothing). Processes may reclaim at once: each
// dead entry's holdings are returned by exactly one of them, the one whose
// swap took them.
func (t *holders) reclaim() int {
	total := 0
	t.each(func(_ int, w, st *uint64) bool {
		id := atomic.LoadUint64(w)
		if id == 0 || idAlive(id) {
			return true
		}
		if h := int32(atomic.SwapUint32((*uint32)(unsafe.Pointer(st)), 0)); h > 0 {
			total += int(h)
		}
		atomic.CompareAndSwapUint64(w, id, 0)
		return true
	})
	return total
}

// addFor adds d to the count of the process id (pid | start32<<32),
// making it an entry if it has none. It reports false, adding nothing, if
// the table is full of live processes.
func (t *holders) addFor(id uint64, d int32) bool {
	i := t.claimFor(id, true, nil)
	if i < 0 {
		return false
	}
	atomic.AddUint32(t.held(i), uint32(d))
	return true
}

// total returns the sum of the positive counts of the table's entries,
// dead processes included (reclaim removes those).
func (t *holders) total() int {
	n := 0
	t.each(func(_ int, w, st *uint64) bool {
		if atomic.LoadUint64(w) != 0 {
			if h := int32(atomic.LoadUint32((*uint32)(unsafe.Pointer(st)))); h > 0 {
				n += int(h)
			}
		}
		return true
	})
	return n
}

// freeHolderChain frees the blocks that the holder table whose first
// block is at first grew into, for the destroy of its primitive (see
// close.go): the last block first, each through FreeFrom on the link that
// names it, so that a process killed half way leaves a shorter chain that
// a second call finishes. A link that names no block of a table's size
// (damage) ends the chain there.
func freeHolderChain(a *shm.Arena, first shm.Offset) {
	for range holderMaxBlocks {
		link := first + holderNext
		next := shm.Offset(atomic.LoadUint64(a.Uint64(link)))
		if next == 0 {
			return
		}
		for range holderMaxBlocks {
			if size, err := a.BlockSize(next); err != nil || size < holdersSize {
				atomic.StoreUint64(a.Uint64(link), 0) // not ours: forget it
				break
			}
			n := shm.Offset(atomic.LoadUint64(a.Uint64(next + holderNext)))
			if n == 0 {
				break
			}
			link, next = next+holderNext, n
		}
		if atomic.LoadUint64(a.Uint64(link)) != 0 {
			a.FreeFrom(link)
		}
	}
}

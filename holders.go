package mp

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/proc"
)

// holders is a table, in a primitive's shared block, of what each process
// holds of it: a semaphore's permits, a joinable queue's items taken but not
// yet marked done. When a process dies, whoever notices gives back what it
// held. Each process finds its own entry once and caches its index.
type holders struct {
	base unsafe.Pointer // the table: holderSlots entries of holderEntry bytes
	mine atomic.Int32   // this process's entry + 1, once claimed; 0 before

	mu     sync.Mutex // own's search for an entry
	fullAt time.Time  // under mu: when own last called its full func
}

const (
	holderSlots = 64
	holderEntry = 16 // pid uint32, start32 uint32, held int32, pad
	holdersSize = holderSlots * holderEntry
	reclaiming  = math.MaxUint32 // pid of an entry being claimed or emptied
)

func (t *holders) entry(i int) (pid, start, held *uint32) {
	p := unsafe.Add(t.base, uintptr(i*holderEntry))
	return (*uint32)(p), (*uint32)(unsafe.Add(p, 4)), (*uint32)(unsafe.Add(p, 8))
}

// id is entry i's pid and start32 as one word, so that a reclaimer's
// compare-and-swap cannot take an entry that a new process with the same
// pid claimed since the reclaimer found the old one dead.
func (t *holders) id(i int) *uint64 {
	return (*uint64)(unsafe.Add(t.base, uintptr(i*holderEntry)))
}

// idPid returns the pid half of an id word, and withPid the word with its
// pid half replaced: the halves are the fields' memory, whatever the byte
// order.
func idPid(w uint64) uint32 { return *(*uint32)(unsafe.Pointer(&w)) }

func withPid(w uint64, pid uint32) uint64 {
	*(*uint32)(unsafe.Pointer(&w)) = pid
	return w
}

func idStart(w uint64) uint32 { return *(*uint32)(unsafe.Add(unsafe.Pointer(&w), 4)) }

// add adds d to this process's count. If the table is full, this process's
// holdings are not tracked (and not recovered).
func (t *holders) add(d int32) {
	i := int(t.mine.Load()) - 1
	if i < 0 {
		if i = t.claim(); i < 0 {
			return
		}
		t.mine.Store(int32(i + 1))
	}
	_, _, held := t.entry(i)
	atomic.AddUint32(held, uint32(d))
}

// claim finds or makes this process's entry.
func (t *holders) claim() int { return t.claimFor(self64()) }

// own makes sure this process has an entry, so that what it adds is
// tracked, and reports whether it has. When the table is full it calls
// full, if not nil, which is to empty the entries of dead processes
// (giving back what they held, as the table's owner does), and tries
// again. With holderSlots live processes that frees nothing and costs a
// look at each, so full is called at most once per ownerPoll per handle.
func (t *holders) own(full func()) bool {
	if t.mine.Load() > 0 {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mine.Load() > 0 {
		return true // another goroutine's call made it
	}
	i := t.claim()
	if now := time.Now(); i < 0 && full != nil && now.Sub(t.fullAt) >= ownerPoll {
		t.fullAt = now
		full()
		i = t.claim()
		// Entries another process is emptying at this moment are free
		// a few instructions later.
		for tries := 0; i < 0 && tries < 100 && t.emptying(); tries++ {
			runtime.Gosched()
			i = t.claim()
		}
	}
	if i < 0 {
		return false
	}
	t.mine.Store(int32(i + 1))
	return true
}

// adjust adds d to this process's count if it has an entry (see own);
// unlike add, it never makes one, so that a process untracked when it
// began something is not tracked for only half of it.
func (t *holders) adjust(d int32) {
	if i := int(t.mine.Load()) - 1; i >= 0 {
		_, _, held := t.entry(i)
		atomic.AddUint32(held, uint32(d))
	}
}

// emptying reports whether an entry is being claimed or emptied.
func (t *holders) emptying() bool {
	for i := 0; i < holderSlots; i++ {
		if pid, _, _ := t.entry(i); atomic.LoadUint32(pid) == reclaiming {
			return true
		}
	}
	return false
}

// claimFor finds or makes the entry of process id (pid | start32<<32).
func (t *holders) claimFor(id uint64) int {
	pid32, start32 := uint32(id), uint32(id>>32)
	for i := 0; i < holderSlots; i++ {
		pid, start, _ := t.entry(i)
		if atomic.LoadUint32(pid) == pid32 && atomic.LoadUint32(start) == start32 {
			return i
		}
	}
	for i := 0; i < holderSlots; i++ {
		pid, start, held := t.entry(i)
		if atomic.CompareAndSwapUint32(pid, 0, reclaiming) {
			atomic.StoreUint32(held, 0)
			atomic.StoreUint32(start, start32)
			atomic.StoreUint32(pid, pid32)
			return i
		}
	}
	return -1
}

// reclaim empties the entries of dead processes and returns the sum of
// what they held (only positive holdings count: a process that gave back
// more than it took owes nothing). Processes may reclaim at once: each
// dead entry's holdings are returned by exactly one of them.
func (t *holders) reclaim() int {
	total := 0
	for i := 0; i < holderSlots; i++ {
		pid, _, held := t.entry(i)
		w := atomic.LoadUint64(t.id(i))
		p := idPid(w)
		if p == 0 || p == reclaiming || proc.AliveStart32(int(p), idStart(w)) {
			continue
		}
		if !atomic.CompareAndSwapUint64(t.id(i), w, withPid(w, reclaiming)) {
			continue
		}
		if h := int32(atomic.SwapUint32(held, 0)); h > 0 {
			total += int(h)
		}
		atomic.StoreUint32(pid, 0)
	}
	return total
}

// addFor adds d to the count of the process id (pid | start32<<32),
// making it an entry if it has none.
func (t *holders) addFor(id uint64, d int32) {
	if i := t.claimFor(id); i >= 0 {
		_, _, held := t.entry(i)
		atomic.AddUint32(held, uint32(d))
	}
}

// total returns the sum of the positive counts of the table's entries,
// dead processes included (reclaim removes those).
func (t *holders) total() int {
	n := 0
	for i := 0; i < holderSlots; i++ {
		pid, _, held := t.entry(i)
		if p := atomic.LoadUint32(pid); p != 0 && p != reclaiming {
			if h := int32(atomic.LoadUint32(held)); h > 0 {
				n += int(h)
			}
		}
	}
	return n
}

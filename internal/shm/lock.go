package shm

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/multiproc/mp/internal/proc"
)

// Waiting for the allocator lock: spinSteps tries back to back (the holder
// usually needs well under a microsecond), then yieldSteps tries with a
// runtime.Gosched in between, then sleeps doubling from minSleep to maxSleep,
// checking each time whether the holder is still alive.
const (
	spinSteps  = 16
	yieldSteps = 64
	minSleep   = 10 * time.Microsecond
	maxSleep   = time.Millisecond
)

// lock acquires the allocator lock for this process, taking it over from a
// dead holder and rolling back the holder's unfinished operation if needed.
func (a *Arena) lock() {
	a.mu.Lock()
	w := a.word(hdrLock)
	sleep := minSleep
	for i := 0; ; i++ {
		v := atomic.LoadUint64(w)
		next := (v>>32+1)<<32 | uint64(a.pid)
		owner := uint32(v)
		if owner == 0 {
			if atomic.CompareAndSwapUint64(w, v, next) {
				a.held = next
				break
			}
			continue
		}
		if i < spinSteps {
			continue
		}
		if i < spinSteps+yieldSteps {
			runtime.Gosched()
			continue
		}
		// owner == a.pid is another mapping of the arena in this process; it
		// is alive since we are.
		if owner != a.pid && !alive(int(owner)) {
			// The sequence number in v makes this fail if the lock changed
			// hands since we looked, so we never steal from a live holder
			// that happens to reuse the dead one's pid.
			if atomic.CompareAndSwapUint64(w, v, next) {
				a.held = next
				atomic.AddUint64(a.word(hdrRecoveries), 1)
				break
			}
			continue
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, maxSleep)
	}
	// A non-empty journal means the previous holder died inside an
	// operation (or while rolling back another one); undo it before
	// touching anything. Checking on every acquisition rather than only
	// after a takeover costs one load and needs no argument about how the
	// lock came to be free.
	if a.get(hdrJournalLen) != 0 {
		a.rollback()
	}
}

func (a *Arena) unlock() {
	atomic.StoreUint64(a.word(hdrLock), a.held&^(1<<32-1))
	a.held = 0
	a.mu.Unlock()
}

// alive reports whether process pid can still run, and so might still be
// inside the allocator. A zombie counts as dead: it will never run again,
// and waiting for its parent to reap it could take forever (the parent may
// be waiting for us).
func alive(pid int) bool { return proc.Alive(proc.ID{Pid: pid}) }

// set is the only way allocator metadata is modified while the arena is
// shared: it records the word's old value in the journal before storing v.
// The order of the three stores is what crash recovery relies on; see the
// package documentation.
func (a *Arena) set(off, v uint64) {
	old := a.get(off)
	if old == v {
		return
	}
	n := a.get(hdrJournalLen)
	if n >= journalCap {
		panic("shm: allocator journal overflow")
	}
	e := hdrJournal + 16*n
	a.put(e, off)
	a.put(e+8, old)
	a.put(hdrJournalLen, n+1)
	a.put(off, v)
}

// commit makes the journaled writes since the last commit permanent.
func (a *Arena) commit() {
	a.put(hdrJournalLen, 0)
	if crashHook != nil {
		crashHook() // lets a test die between commit and unlock
	}
}

// rollback undoes the journaled writes of an operation that its process did
// not live to commit. It is idempotent, so a process killed while rolling
// back leaves a journal that the next holder rolls back again.
func (a *Arena) rollback() {
	n := a.get(hdrJournalLen)
	if n > journalCap {
		panic(fmt.Sprintf("shm: corrupt allocator journal: %d entries", n))
	}
	for i := n; i > 0; i-- {
		e := hdrJournal + 16*(i-1)
		off, old := a.get(e), a.get(e+8)
		// Journaled words are list heads, statistics, tags and free-list
		// links; never the lock or the journal itself.
		if off%8 != 0 || off < hdrInUse || (off >= hdrJournal && off < hdrTags) || off > uint64(len(a.mem))-8 {
			panic(fmt.Sprintf("shm: corrupt allocator journal: entry %d at offset %#x", i-1, off))
		}
		a.put(off, old)
	}
	a.put(hdrJournalLen, 0)
}

package shm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/multiproc/mp/internal/proc"
)

// Waiting for the allocator lock: spinSteps tries back to back (the holder
// usually needs well under a microsecond), then yieldSteps tries with a
// runtime.Gosched in between, then sleeps doubling from minSleep to maxSleep,
// checking each time whether the holder is still alive, and every
// treeCheck whether it is a process of this tree at all.
const (
	spinSteps  = 16
	yieldSteps = 64
	minSleep   = 10 * time.Microsecond
	maxSleep   = time.Millisecond
	treeCheck  = 50 * time.Millisecond
	// selfStuck is how long a lock word naming this very process may stay
	// unchanged while no goroutine of this Arena holds it before it is taken
	// for a forgery: allocator code holds the lock for microseconds and
	// never blocks, and this process is evidently running.
	selfStuck = time.Second
)

// lock acquires the allocator lock for this process, waiting as long as it
// takes. See lockCtx.
func (a *Arena) lock() error { return a.lockCtx(nil) }

// lockCtx acquires the allocator lock for this process, taking it over from
// a holder that is dead or is no process of this tree, and rolling back the
// holder's unfinished operation if needed. With a nil ctx it waits as long
// as it takes, which is bounded: the holder is running allocator code,
// which never blocks, or is dead or foreign, which is detected; only a
// stopped holder (SIGSTOP, a debugger) makes it wait until it resumes.
// Otherwise it returns ctx.Err() if ctx ends first. It returns an error
// wrapping ErrCorrupt, with the lock not held, if the journal found under
// the lock is corrupt.
func (a *Arena) lockCtx(ctx context.Context) error {
	if ctx == nil {
		a.mu.Lock()
	} else if !a.mu.TryLock() {
		if err := a.lockLocal(ctx); err != nil {
			return err
		}
	}
	w := a.word(hdrLock)
	v := atomic.LoadUint64(w)
	next := (v>>32+1)<<32 | uint64(a.pid)
	if uint32(v) != 0 || !atomic.CompareAndSwapUint64(w, v, next) {
		var err error
		if next, err = a.lockSlow(ctx); err != nil {
			a.mu.Unlock()
			return err
		}
	}
	a.held = next
	a.jn = 0
	// A non-empty journal means the previous holder died inside an
	// operation (or while rolling back another one), or that the length was
	// scribbled over; undo or discard it before touching anything. Checking
	// on every acquisition rather than only after a takeover costs one load
	// and needs no argument about how the lock came to be free.
	if a.get(hdrJournalLen) != 0 {
		if err := a.rollback(); err != nil {
			a.unlock()
			return err
		}
	}
	return nil
}

// lockLocal waits for the process-local mutex until ctx ends. sync.Mutex
// cannot wait with a deadline, so this polls; only callers with a context
// that find another goroutine of this process in the allocator come here.
func (a *Arena) lockLocal(ctx context.Context) error {
	sleep := minSleep
	for i := 0; ; i++ {
		if a.mu.TryLock() {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if i < yieldSteps {
			runtime.Gosched()
			continue
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, maxSleep)
	}
}

// lockSlow waits for the shared lock word and returns the value it stored.
func (a *Arena) lockSlow(ctx context.Context) (uint64, error) {
	w := a.word(hdrLock)
	sleep := minSleep
	var seen uint64         // the word as last checked for a foreign or stuck holder
	var seenAt time.Time    // since when it has held that value
	var checkedAt time.Time // when the holder was last checked for membership of the tree
	for i := 0; ; i++ {
		v := atomic.LoadUint64(w)
		next := (v>>32+1)<<32 | uint64(a.pid)
		owner := uint32(v)
		if owner == 0 {
			if atomic.CompareAndSwapUint64(w, v, next) {
				return next, nil
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
		if ctx != nil {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		now := time.Now()
		if v != seen {
			seen, seenAt, checkedAt = v, now, now
		}
		if a.foreign(owner, now.Sub(seenAt), &checkedAt, now) {
			// The sequence number in v makes this fail if the lock changed
			// hands since we looked, so we never steal from a live holder
			// that happens to reuse the dead one's pid.
			if atomic.CompareAndSwapUint64(w, v, next) {
				atomic.AddUint64(a.word(hdrRecoveries), 1)
				return next, nil
			}
			continue
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, maxSleep)
	}
}

// foreign reports whether the lock's owner, as recorded, cannot be a live
// process of this tree inside the allocator: it is dead, its pid is
// impossible, it does not map this arena, or it is this very process,
// which does not hold the lock, and the word has stayed the same for
// selfStuck. held is how long the word has had its present value.
func (a *Arena) foreign(owner uint32, held time.Duration, checkedAt *time.Time, now time.Time) bool {
	if owner == a.pid {
		// Another mapping of the arena in this process (tests make them) is
		// alive since we are, and quick about it.
		return held >= selfStuck
	}
	if !proc.Possible(int(owner)) || !alive(int(owner)) {
		return true
	}
	if now.Sub(*checkedAt) < treeCheck {
		return false
	}
	*checkedAt = now
	return !a.MappedBy(int(owner))
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

// MappedBy reports whether process pid maps this arena's memory, which
// every process of the tree that can hold one of its locks does, and any
// other process does not. It reads /proc/<pid>/maps, so it is for slow
// paths: deciding whether a lock's recorded owner is a process of the tree.
// A process whose maps cannot be read (undumpable, or another user's)
// counts as mapping the arena if its parent does. When /proc cannot tell
// (not mounted), it reports true.
func (a *Arena) MappedBy(pid int) bool {
	for range 64 { // a bound on the walk up the parents below
		if pid == os.Getpid() {
			return true
		}
		dir := "/proc/" + strconv.Itoa(pid)
		b, err := os.ReadFile(dir + "/maps")
		switch {
		case err == nil:
			return bytes.Contains(b, a.mapsKey)
		case errors.Is(err, fs.ErrNotExist):
			// Gone; or, if /proc itself is missing, nobody can be told
			// apart, and the caller must then assume the owner is ours.
			_, serr := os.Stat("/proc/self/maps")
			return serr != nil
		case !errors.Is(err, fs.ErrPermission):
			return true // cannot tell
		}
		// A process we may not inspect: another user's, or one of ours
		// that made itself undumpable. Ours descend from a process of the
		// tree that we can inspect; look at its parent.
		ppid, ok := proc.Parent(pid)
		if !ok || ppid < 1 {
			return false
		}
		pid = ppid
	}
	return false
}

// mapsKey returns the " dev inode " fields a line of /proc/<pid>/maps has
// for a mapping of the file with st_dev dev and st_ino ino.
func mapsKey(major, minor uint32, ino uint64) []byte {
	return fmt.Appendf(nil, " %02x:%02x %d ", major, minor, ino)
}

// set is the only way allocator metadata is modified while the arena is
// shared: it records the word's old value in the journal before storing v.
// The order of the three stores is what crash recovery relies on; see the
// package documentation.
func (a *Arena) set(off, v uint64) {
	old := a.get(off)
	if old == v {
		return
	}
	// The length is counted here, not read back from the arena: another
	// process scribbling over it while we hold the lock must not make us
	// write past the journal.
	n := a.jn
	if n >= journalCap {
		panic("shm: allocator journal overflow") // a bug: see doc.go for the bound
	}
	a.jn = n + 1
	tag := a.journalTag()
	if n == 0 {
		a.put(hdrJournalTag, tag)
	}
	e := hdrJournal + 16*n
	a.put(e, off|tag<<entryTagShift)
	a.put(e+8, old)
	a.put(hdrJournalLen, n+1)
	a.put(off, v)
}

// journalTag is the tag of the journal entries of the present holder: the
// low bits of its acquisition's sequence number, never 0.
func (a *Arena) journalTag() uint64 { return (a.held>>32)&(1<<15-1) | 1<<15 }

// Journal entries carry the writer's journal tag above the offset.
const (
	entryTagShift = 48
	entryOffMask  = 1<<entryTagShift - 1
)

// commit makes the journaled writes since the last commit permanent.
func (a *Arena) commit() {
	a.jn = 0
	a.put(hdrJournalLen, 0)
	a.put(hdrJournalTag, 0)
	if crashHook != nil {
		crashHook() // lets a test die between commit and unlock
	}
}

// abort undoes the journaled writes of the operation in progress, which
// found the metadata corrupt, and releases the lock, returning err.
func (a *Arena) abort(err error) error {
	a.rollback()
	a.unlock()
	return err
}

// rollback undoes the journaled writes of an operation that its process did
// not live to commit. It is idempotent, so a process killed while rolling
// back leaves a journal that the next holder rolls back again.
//
// It validates what it reads: the operation's entries are the leading ones
// that carry the tag recorded when its first entry was written, so a
// length scribbled over while no operation was in progress (tag 0) or
// beyond its entries (stale ones, with older tags) is discarded rather than
// replayed. An entry of the operation naming a word that no operation
// writes is corruption that cannot be undone: rollback then returns an
// error wrapping ErrCorrupt and changes nothing.
func (a *Arena) rollback() error {
	n := min(a.get(hdrJournalLen), journalCap)
	if a.jn != 0 {
		n = a.jn // our own operation's entries, whatever the length word says now
	}
	tag := a.get(hdrJournalTag)
	m := uint64(0)
	if tag != 0 {
		for m < n && a.get(hdrJournal+16*m)>>entryTagShift == tag {
			m++
		}
	}
	for i := range m {
		off := a.get(hdrJournal+16*i) & entryOffMask
		if !a.journaled(off) {
			return fmt.Errorf("%w: allocator journal entry %d of %d names offset %#x", ErrCorrupt, i, m, off)
		}
	}
	for i := m; i > 0; i-- {
		e := hdrJournal + 16*(i-1)
		a.put(a.get(e)&entryOffMask, a.get(e+8))
	}
	a.jn = 0
	a.put(hdrJournalLen, 0)
	a.put(hdrJournalTag, 0)
	return nil
}

// journaled reports whether off is a word that allocator operations
// journal: the counters, the list heads, the tags, and in the heap the
// links of free blocks and the words of AllocTo and FreeFrom.
func (a *Arena) journaled(off uint64) bool {
	switch {
	case off%8 != 0:
		return false
	case off == hdrInUse, off == hdrAllocs, off == hdrRoot:
		return true
	case off >= hdrHeads && off < hdrHeads+8*64:
		return true
	case off >= hdrTags && off < a.heapOff:
		return true
	}
	return off >= a.heapOff && off-a.heapOff < a.heapSize
}

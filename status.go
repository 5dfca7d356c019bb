package mp

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/proc"
	"github.com/multiproc/mp/internal/refs"
	"github.com/multiproc/mp/internal/ring"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/shmap"
	"github.com/multiproc/mp/internal/spawn"
)

// Status is a view of the process tree at one moment, as ReadStatus takes
// it. Its figures are read without stopping anything, so each is exact at
// some moment of the call rather than all at the same one.
type Status struct {
	Time time.Time

	// Processes are the calling process and its descendants, parents
	// before their children. Ended are the children of the calling process
	// that ended most recently (the last 32), oldest first.
	Processes []ProcessStatus
	Ended     []ProcessStatus

	// Pools are the pools of the calling process (a pool lives in the
	// process that made it).
	Pools []PoolStatus

	// The primitives of the whole tree, whichever process made them: every
	// one that some live process holds, in the order they were made (or
	// their place in the tree's table reused).
	Queues      []QueueStatus      // queues (Queue, JoinableQueue, SimpleQueue) and pipes
	Locks       []LockStatus       // Lock and RLock
	Semaphores  []SemaphoreStatus  // Semaphore and BoundedSemaphore
	Collections []CollectionStatus // Dict and List
	Others      []PrimitiveStatus  // events, conditions, barriers, values, arrays

	Arena ArenaStats
}

// ProcessStatus describes one process.
type ProcessStatus struct {
	// Name is the process's name ("MainProcess", "Process-1:2", a pool's
	// "PoolWorker-3"): for deeper descendants than children, as their
	// command line says it; for processes that are not the library's (a
	// command a child runs), the kernel's name for them.
	Name    string
	Pid     int
	Parent  int
	Daemon  bool
	State   string // "running", "sleeping", "disk wait", "stopped", "zombie"; "exited" in Ended
	Started time.Time
	CPU     time.Duration // user and system time used
	RSS     int64         // resident memory, bytes
	Threads int

	// For ended processes (which have no State, CPU, RSS or Threads but
	// "exited"): when, their exit status (-N: killed by signal N), and how
	// they ended in words.
	Ended    time.Time
	ExitCode int
	Exit     string
}

// PrimitiveStatus is what every primitive has.
type PrimitiveStatus struct {
	Kind string // "Queue", "Lock", ...
	// ID tells primitives apart ("queue-12"): stable while the primitive
	// lives, reused after it is freed.
	ID string
	// Name is the one given with SetName, or "".
	Name string
	// Holders is how many processes hold it.
	Holders int
}

// Label is the primitive's Name, or its ID if it has none.
func (p PrimitiveStatus) Label() string { return cmp.Or(p.Name, p.ID) }

// QueueStatus describes a queue or a pipe (both directions together).
type QueueStatus struct {
	PrimitiveStatus
	Len int // items queued now
	Cap int // the most it holds (maxsize), 0 if unbounded
	// Puts and Gets count items put and taken since the queue was made
	// (including the cells of puts that failed after taking one).
	Puts, Gets uint64
	// BlockedGets and BlockedPuts count processes parked in a Get or a
	// Put (each process parks one goroutine; the others wait behind it).
	BlockedGets, BlockedPuts int
	Lost                     int  // items taken by consumers that died before they had them
	Unfinished               int  // JoinableQueue: items put and not yet marked done
	Closed                   bool // closed (for a pipe: one direction at least)
}

// LockStatus describes a Lock or an RLock.
type LockStatus struct {
	PrimitiveStatus
	Held       bool
	HolderPid  int
	HolderName string // if the holder is among Processes
	// Waiting reports that some process may be waiting for it.
	Waiting bool
	// Recovered counts the times it was taken over from a dead holder
	// (Acquire returned ErrOwnerDied).
	Recovered int
}

// SemaphoreStatus describes a semaphore.
type SemaphoreStatus struct {
	PrimitiveStatus
	Value   int // permits free now
	Bound   int // a BoundedSemaphore's initial value, 0 otherwise
	Waiting int // processes' goroutines parked in Acquire
	// Holders is how many permits each process holds, by pid.
	HeldBy map[int]int
}

// CollectionStatus describes a Dict or a List.
type CollectionStatus struct {
	PrimitiveStatus
	Len int // entries or items
}

// ReadStatus returns a view of the tree: processes, pools, primitives and
// the arena (see Status). It may be called from any process of the tree,
// at any time, from any goroutine; it does not block what it looks at
// (beyond a few of the arena's short critical sections), and costs nothing
// to the operations it observes. It takes milliseconds for thousands of
// primitives. It fails only if the arena cannot be created.
func ReadStatus() (Status, error) {
	st := Status{Time: time.Now()}
	a, err := treeArena()
	if err != nil {
		return Status{}, err
	}
	st.Processes = readProcesses()
	procLog.mu.Lock()
	st.Ended = slices.Clone(procLog.ended)
	procLog.mu.Unlock()
	eachPool(func(p *Pool) { st.Pools = append(st.Pools, p.status()) })
	names := map[int]string{}
	for _, p := range st.Processes {
		names[p.Pid] = p.Name
	}
	arena.refs.Each(func(o refs.Object) { st.add(a, o, names) })
	if st.Arena, err = ReadArenaStats(); err != nil {
		return Status{}, err
	}
	return st, nil
}

// add reads the primitive o into st, holding it meanwhile so that it cannot
// be freed under the reading.
func (st *Status) add(a *shm.Arena, o refs.Object, names map[int]string) {
	k := kind(o.Kind)
	var h handle
	if h.unmarshal(k, encodeHandle(k, arena.refs.Tree(), o.ID, o.Block)) != nil {
		return // freed since the walk saw it
	}
	defer h.close()
	ps := PrimitiveStatus{Kind: k.String(), ID: fmt.Sprintf("%s-%d", strings.ToLower(k.String()), o.ID.Index),
		Name: o.Name, Holders: o.Count}
	ringAt := func(at uintptr) *ring.Ring {
		off := shm.Offset(atomic.LoadUint64(h.u64(at)))
		if off == 0 {
			return nil
		}
		r, err := ring.Open(a, off)
		if err != nil {
			return nil
		}
		return r
	}
	switch k {
	case kindQueue:
		q := QueueStatus{PrimitiveStatus: ps, Cap: int(atomic.LoadUint32(h.u32(qMax)))}
		if atomic.LoadUint32(h.u32(qFlags))&qJoinable != 0 {
			q.Kind = "JoinableQueue"
			q.Unfinished = int(int32(atomic.LoadUint32(h.u32(qUnfinished))))
		}
		if r := ringAt(qRing); r != nil {
			q.addRing(r)
		}
		st.Queues = append(st.Queues, q)
	case kindConn:
		q := QueueStatus{PrimitiveStatus: ps}
		q.Kind = "Pipe"
		for _, at := range []uintptr{pRecv0, pRecv1} {
			if r := ringAt(at); r != nil {
				q.addRing(r)
			}
		}
		st.Queues = append(st.Queues, q)
	case kindLock, kindRLock:
		s := atomic.LoadUint64(h.u64(0))
		l := LockStatus{PrimitiveStatus: ps, Held: s != 0, HolderPid: int(uint32(s) &^ contended),
			Waiting: uint32(s)&contended != 0, Recovered: o.Events}
		if l.Held {
			l.HolderName = names[l.HolderPid]
		}
		st.Locks = append(st.Locks, l)
	case kindSemaphore:
		s := openSemaphore(h)
		ss := SemaphoreStatus{PrimitiveStatus: ps, Value: int(atomic.LoadUint32(s.count)),
			Bound: int(atomic.LoadUint32(s.bound)), Waiting: int(atomic.LoadUint32(s.waiters)), HeldBy: map[int]int{}}
		s.holders.each(func(_ int, id, state *uint64) bool {
			if w := atomic.LoadUint64(id); w != 0 {
				if n := int(uint32(atomic.LoadUint64(state))); n > 0 {
					ss.HeldBy[int(uint32(w))] += n
				}
			}
			return true
		})
		st.Semaphores = append(st.Semaphores, ss)
	case kindDict, kindList:
		c := CollectionStatus{PrimitiveStatus: ps}
		c.Len = collectionLen(a, h)
		st.Collections = append(st.Collections, c)
	default:
		st.Others = append(st.Others, ps)
	}
}

func (q *QueueStatus) addRing(r *ring.Ring) {
	c := r.Counters()
	q.Len += r.Len()
	q.Puts += c.Puts
	q.Gets += c.Gets
	q.BlockedGets += c.GetWaiters
	q.BlockedPuts += c.PutWaiters
	q.Lost += r.Lost()
	q.Closed = q.Closed || r.Closed()
}

// Processes.

// procLog is what this process knows of its children: names, and the
// recently ended.
var procLog struct {
	mu    sync.Mutex
	live  map[int]*Process
	since map[int]time.Time // when each live one started
	ended []ProcessStatus
}

const keepEnded = 32

func noteStarted(p *Process, pid int) {
	procLog.mu.Lock()
	if procLog.live == nil {
		procLog.live, procLog.since = map[int]*Process{}, map[int]time.Time{}
	}
	procLog.live[pid] = p
	procLog.since[pid] = time.Now()
	procLog.mu.Unlock()
	logEvent(slog.LevelInfo, "process started", slog.String("name", p.Name), slog.Int("pid", pid))
}

// noteExit records the end of p (its mutex held) and logs it.
func noteExit(p *Process, st spawn.Status, limit string) {
	pid := p.child.Pid
	e := ProcessStatus{Name: p.Name, Pid: pid, Parent: self.info.Pid, Daemon: p.Daemon, State: "exited",
		Ended: time.Now(), ExitCode: st.Code}
	var why string
	level := slog.LevelInfo
	if st.Signaled() {
		level = slog.LevelWarn
		sig := st.Signal()
		switch {
		case limit != "":
			why = "the " + limit + " limit"
		case st.OOMKilled:
			why = "the kernel's out-of-memory killer"
		case p.sent == sig:
			why = map[syscall.Signal]string{syscall.SIGKILL: "Kill", syscall.SIGTERM: "Terminate"}[sig]
			if why == "" {
				why = "the library"
			}
		default:
			why = "a signal from outside the library"
		}
		name := unix.SignalName(sig)
		e.Exit = fmt.Sprintf("killed by %s (%s)", name, why)
		logEvent(level, "process killed", slog.String("name", p.Name), slog.Int("pid", pid),
			slog.String("signal", name), slog.String("by", why))
	} else {
		e.Exit = fmt.Sprintf("exited with status %d", st.Code)
		if st.Code != 0 {
			level = slog.LevelWarn
		}
		logEvent(level, "process exited", slog.String("name", p.Name), slog.Int("pid", pid), slog.Int("status", st.Code))
	}
	procLog.mu.Lock()
	e.Started = procLog.since[pid]
	delete(procLog.live, pid)
	delete(procLog.since, pid)
	procLog.ended = append(procLog.ended, e)
	if n := len(procLog.ended); n > keepEnded {
		procLog.ended = slices.Delete(procLog.ended, 0, n-keepEnded)
	}
	procLog.mu.Unlock()
}

var stateNames = map[byte]string{'R': "running", 'S': "sleeping", 'D': "disk wait", 'T': "stopped",
	't': "stopped", 'Z': "zombie", 'X': "dead", 'I': "idle"}

// readProcesses lists this process and its descendants, depth first.
func readProcesses() []ProcessStatus {
	procLog.mu.Lock()
	known := make(map[int]*Process, len(procLog.live))
	for pid, p := range procLog.live {
		known[pid] = p
	}
	procLog.mu.Unlock()
	var out []ProcessStatus
	var walk func(pid int, depth int)
	walk = func(pid int, depth int) {
		info, ok := proc.Read(pid)
		if !ok || depth > 64 {
			return
		}
		ps := ProcessStatus{Pid: pid, Parent: info.Parent, State: stateNames[info.State], Started: info.Started,
			CPU: info.CPU, RSS: info.RSS, Threads: info.Threads, Name: info.Comm}
		switch p := known[pid]; {
		case pid == self.info.Pid:
			ps.Name, ps.Daemon = self.info.Name, self.info.Daemon
		case p != nil:
			ps.Name, ps.Daemon = p.Name, p.Daemon
		case len(info.Cmdline) == 1 && len(os.Args) > 0:
			// A deeper descendant of the tree: its command line is the
			// program's name, then its own (see Process).
			if name, ok := strings.CutPrefix(info.Cmdline[0], os.Args[0]+" "); ok {
				ps.Name = name
			}
		}
		out = append(out, ps)
		kids := proc.Children(pid)
		slices.Sort(kids)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	walk(self.info.Pid, 0)
	return out
}

// Locks recovered from dead owners.

// noteOwnerDied counts and logs the recovery of the mutex whose word is at
// state from owner, a dead process. It is called on that rare path only.
func noteOwnerDied(state *uint64, owner uint64) {
	off, ok := arena.a.OffsetOf(unsafe.Pointer(state))
	if !ok || arena.refs == nil {
		return
	}
	// The primitive is the one whose block starts last at or before the
	// word: blocks do not overlap.
	var best refs.Object
	arena.refs.Each(func(o refs.Object) {
		if o.Block <= off && o.Block > best.Block {
			best = o
		}
	})
	if best.Block == 0 {
		return
	}
	arena.refs.CountEvent(best.ID)
	k := kind(best.Kind)
	logEvent(slog.LevelWarn, "lock recovered from a dead owner", slog.String("kind", k.String()),
		slog.String("name", cmp.Or(best.Name, fmt.Sprintf("%s-%d", strings.ToLower(k.String()), best.ID.Index))),
		slog.Int("dead_pid", int(uint32(owner)&^contended)))
}

// collectionLen reads a Dict's or List's length.
func collectionLen(a *shm.Arena, h handle) int {
	return shmap.OpenMap(a, h.off+dictMap).Len()
}

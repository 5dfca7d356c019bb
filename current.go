package mp

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// ProcessInfo describes a process of the tree: the current one, or its
// parent.
type ProcessInfo struct {
	Name   string // "MainProcess" for the root, "Process-1:2" style below it
	Pid    int
	Daemon bool
}

// self is this process's place in the tree. It is set once, by Init, before
// any goroutine of the library reads it.
var self = struct {
	info     ProcessInfo
	parent   *ProcessInfo
	identity []int // position in the tree: [] for the root, [1, 2] for Process-1:2

	mu       sync.Mutex
	counter  int                   // children and threads created so far, for default names
	children map[*Process]struct{} // started, not yet finished
	threads  map[*Thread]struct{}
}{
	info:     ProcessInfo{Name: "MainProcess", Pid: os.Getpid()},
	children: map[*Process]struct{}{},
	threads:  map[*Thread]struct{}{},
}

// CurrentProcess describes the calling process, like Python's
// multiprocessing.current_process().
func CurrentProcess() ProcessInfo { return self.info }

// ParentProcess describes the process that started this one; ok is false in
// the root process of the tree (Python returns None there).
func ParentProcess() (info ProcessInfo, ok bool) {
	if self.parent == nil {
		return ProcessInfo{}, false
	}
	return *self.parent, true
}

// ActiveChildren returns the child processes this process started that
// have not finished yet, in the order they were started. Like Python's
// active_children, it is a snapshot.
func ActiveChildren() []*Process {
	self.mu.Lock()
	ps := make([]*Process, 0, len(self.children))
	for p := range self.children {
		ps = append(ps, p)
	}
	self.mu.Unlock()
	slices.SortFunc(ps, func(a, b *Process) int { return a.seq - b.seq })
	return ps
}

// nextIdentity returns the identity and sequence number for a new child.
func nextIdentity() (identity []int, seq int) {
	self.mu.Lock()
	defer self.mu.Unlock()
	self.counter++
	return append(slices.Clone(self.identity), self.counter), self.counter
}

// defaultName follows Python: "Process-1", "Process-1:2" for nested ones,
// and the type's name for Run types.
func defaultName(kind string, identity []int) string {
	parts := make([]string, len(identity))
	for i, n := range identity {
		parts[i] = strconv.Itoa(n)
	}
	return kind + "-" + strings.Join(parts, ":")
}

// ThreadInfo describes a thread of execution of this process, as Python's
// threading.current_thread() does: a Thread, a goroutine of a thread pool,
// or the main thread.
type ThreadInfo struct {
	// Name is the Thread's Name, "ThreadPoolWorker-N" for the N-th
	// goroutine of a thread pool, or "MainThread".
	Name string
	// Ident identifies the goroutine that runs the thread (Python's
	// ident); the main goroutine's is 1.
	Ident uint64
	// Daemon is the Thread's Daemon field; true for a thread pool's
	// goroutines (as Python's are), false for MainThread.
	Daemon bool
}

// mainThread is what CurrentThread returns outside any Thread.
var mainThread = ThreadInfo{Name: "MainThread", Ident: 1}

// runningThreads maps the goroutines running Threads and thread pools' tasks to
// their descriptions.
var runningThreads struct {
	sync.RWMutex
	byGoroutine map[uint64]ThreadInfo
}

// CurrentThread describes the calling thread, like Python's
// threading.current_thread(): called from a Thread's function or a thread
// pool's task, that Thread or the pool's goroutine; called anywhere else
// (main, or a goroutine the program started itself), the main thread, as
// Python answers outside the threads it started. It is safe to call from
// any goroutine.
func CurrentThread() ThreadInfo {
	runningThreads.RLock()
	empty := len(runningThreads.byGoroutine) == 0
	runningThreads.RUnlock()
	if empty {
		return mainThread
	}
	id := goid()
	runningThreads.RLock()
	info, ok := runningThreads.byGoroutine[id]
	runningThreads.RUnlock()
	if !ok {
		return mainThread
	}
	return info
}

// enterThread records that the calling goroutine runs the thread info
// (whose Ident it fills in), until the returned function is called.
func enterThread(info ThreadInfo) (leave func()) {
	info.Ident = goid()
	runningThreads.Lock()
	if runningThreads.byGoroutine == nil {
		runningThreads.byGoroutine = make(map[uint64]ThreadInfo)
	}
	runningThreads.byGoroutine[info.Ident] = info
	runningThreads.Unlock()
	return func() {
		runningThreads.Lock()
		delete(runningThreads.byGoroutine, info.Ident)
		runningThreads.Unlock()
	}
}

package mp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/multiproc/mp/internal/spawn"
)

// Limits bound the resources of an isolated process (see
// Process.Isolated), or of each worker of a pool (see
// WithIsolatedWorkers). A zero field does not limit. Exceeding a limit ends
// the process, or fails the call that needed more, and Join then returns a
// *LimitError naming the limit.
type Limits struct {
	// Memory bounds, in bytes, the address space the child may map
	// beyond what the Go runtime has mapped when the child starts
	// (RLIMIT_AS): a Go program's heap, stacks and mappings. Where the
	// parent's cgroup lets the library enable it, the child's cgroup also
	// gets memory.max = Memory (resident memory of its whole subtree).
	// Exceeding it makes allocation fail, which the Go runtime treats as
	// fatal: the child dies with "out of memory" and Join reports
	// ErrMemoryLimit.
	Memory uint64
	// CPUTime bounds the CPU time (user and system) the child may use,
	// rounded up to whole seconds (RLIMIT_CPU); the kernel kills it with
	// SIGKILL when it is used up.
	CPUTime time.Duration
	// OpenFiles bounds the number of file descriptors the child may hold
	// (RLIMIT_NOFILE), the runtime's own included (a handful).
	OpenFiles int
	// Processes bounds the processes and threads of the child's user
	// (RLIMIT_NPROC), as the kernel counts them: per user, not per tree,
	// and not at all for a privileged user such as root, for whom this
	// limit has no effect. The Go runtime's threads count too.
	Processes int
}

// Errors that a *LimitError matches, one per limit.
var (
	ErrMemoryLimit    = errors.New("mp: memory limit exceeded")
	ErrCPULimit       = errors.New("mp: CPU time limit exceeded")
	ErrOpenFilesLimit = errors.New("mp: open files limit exceeded")
	ErrProcessLimit   = errors.New("mp: process limit exceeded")
	// ErrIsolated: a shared primitive (a lock, queue, pipe end, Value,
	// SharedMemory...) was passed to an isolated process, which does not
	// share memory with the tree.
	ErrIsolated = errors.New("mp: shared primitives cannot be passed to an isolated process")
)

// LimitError reports that an isolated process exceeded one of its Limits.
// It matches the limit's error (ErrMemoryLimit, ...) with errors.Is, and
// wraps the *ProcessError that describes how the process ended.
type LimitError struct {
	Limit   string // "memory", "CPU time", "open files" or "processes"
	Value   uint64 // the limit: bytes, seconds, descriptors or processes
	Process *ProcessError

	task error // a pool's task: its *TaskError
}

var limitErrs = map[string]error{
	"memory":     ErrMemoryLimit,
	"CPU time":   ErrCPULimit,
	"open files": ErrOpenFilesLimit,
	"processes":  ErrProcessLimit,
}

func (e *LimitError) Error() string {
	unit := map[string]string{"memory": " bytes", "CPU time": " s"}[e.Limit]
	return fmt.Sprintf("%s: exceeded its %s limit (%d%s)", e.Process.Error(), e.Limit, e.Value, unit)
}

// Unwrap returns the limit's error and the *ProcessError.
// For a pool's task (see WithIsolatedWorkers), the Process is its worker,
// and the task's *TaskError comes third.
func (e *LimitError) Unwrap() []error {
	if e.task != nil {
		return []error{limitErrs[e.Limit], e.Process, e.task}
	}
	return []error{limitErrs[e.Limit], e.Process}
}

func (l Limits) check() error {
	if l.Memory > 1<<62 || l.CPUTime < 0 || l.OpenFiles < 0 || l.Processes < 0 {
		return fmt.Errorf("%w: Limits %+v: limits must be positive, or 0 for none", ErrBadArguments, l)
	}
	if l.OpenFiles > 0 && l.OpenFiles < 16 {
		return fmt.Errorf("%w: Limits.OpenFiles %d: the Go runtime alone needs more than 16", ErrBadArguments, l.OpenFiles)
	}
	return nil
}

func (l Limits) spawn() spawn.Limits {
	return spawn.Limits{
		AddressSpace: l.Memory,
		Memory:       l.Memory,
		CPUSeconds:   uint64((l.CPUTime + time.Second - 1) / time.Second),
		OpenFiles:    uint64(l.OpenFiles),
		Processes:    uint64(l.Processes),
	}
}

// value returns the limit named name, or 0 if it is not set.
func (l Limits) value(name string) uint64 {
	s := l.spawn()
	switch name {
	case "memory":
		return s.AddressSpace
	case "CPU time":
		return s.CPUSeconds
	case "open files":
		return s.OpenFiles
	case "processes":
		return s.Processes
	}
	return 0
}

// limitOf is the child's side: the limit that err shows was hit, if any.
func limitOf(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.EMFILE):
		return "open files"
	case errors.Is(err, syscall.ENOMEM):
		return "memory"
	case errors.Is(err, syscall.EAGAIN) && strings.Contains(err.Error(), "fork"):
		return "processes"
	}
	return ""
}

// What the parent accepts from an isolated child's report: it is read as
// untrusted input, bounded before it is decoded and trimmed after.
const (
	isolatedMaxReport  = 1 << 20
	isolatedMaxMessage = 64 << 10
	isolatedMaxStack   = 256 << 10
)

func sanitize(s string, max int) string {
	if len(s) > max {
		s = s[:max] + "... (truncated)"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// limitHit decides, in the parent, whether an isolated child ended by
// exceeding a limit: from its status and CPU time (the kernel's word), its
// runtime's last words on stderr, and its own report, which is believed
// only for a limit the parent set.
func limitHit(l Limits, st spawn.Status, out *outcome, saidOOM, cgroupOOM bool) string {
	s := l.spawn()
	switch {
	// The kernel kills at the limit, by its own count of CPU time; the
	// child's rusage, sampled, can show a fifth less on a loaded machine.
	// Half the limit, and a SIGKILL this process did not send, tell the
	// kernel's kill from another.
	case s.CPUSeconds > 0 && (st.Signal() == syscall.SIGKILL || st.Signal() == syscall.SIGXCPU) &&
		!st.Killed && st.CPU >= int64(s.CPUSeconds)*1e6/2:
		return "CPU time"
	case s.AddressSpace > 0 && (cgroupOOM || (st.Code != 0 && saidOOM)):
		return "memory"
	case out != nil && l.value(out.Limit) > 0:
		return out.Limit
	}
	return ""
}

// outOfMemory reports whether a runtime's last words say that it could not
// get memory: the Go runtime's, or the race detector's.
func outOfMemory(tail []byte) bool {
	return bytes.Contains(tail, []byte("fatal error: out of memory")) ||
		bytes.Contains(tail, []byte("runtime: out of memory")) ||
		bytes.Contains(tail, []byte("ThreadSanitizer failed to allocate")) ||
		bytes.Contains(tail, []byte("too many address space collisions"))
}

// stderrTail copies an isolated child's stderr to this process's and
// watches it for the runtime's report of an allocation that failed (the
// goroutine dump that follows is longer than anything worth keeping).
type stderrTail struct {
	mu   sync.Mutex
	oom  bool
	done chan struct{}
}

func newStderrTail() (*stderrTail, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	t := &stderrTail{done: make(chan struct{})}
	go func() {
		defer close(t.done)
		defer r.Close()
		buf := make([]byte, 32<<10)
		var last []byte // the end of the previous read, for a message split across two
		for {
			n, err := r.Read(buf)
			if n > 0 {
				os.Stderr.Write(buf[:n])
				if outOfMemory(append(last, buf[:n]...)) {
					t.mu.Lock()
					t.oom = true
					t.mu.Unlock()
				}
				last = append(last[:0], buf[max(0, n-128):n]...)
			}
			if err != nil {
				return
			}
		}
	}()
	return t, w, nil
}

// wait reports whether the child's runtime said it ran out of memory, once
// its stderr is closed: at once after a kill of the child's subtree, or
// after a second if something that escaped the kill still holds it.
func (t *stderrTail) wait() bool {
	select {
	case <-t.done:
	case <-time.After(time.Second):
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.oom
}

// sharedIn returns the kind of a primitive found among vs (see
// primitivesIn), or "" if there is none.
func sharedIn(vs ...any) string {
	for _, v := range vs {
		if hs := primitivesIn(v); len(hs) > 0 {
			return hs[0].kind.String()
		}
	}
	return ""
}

func describeIsolated(name, kind string) error {
	return fmt.Errorf("%w: %s is given a %s", ErrIsolated, strconv.Quote(name), kind)
}

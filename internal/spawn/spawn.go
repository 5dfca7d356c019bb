// Package spawn starts child processes by re-executing the running binary
// and gives the parent a handle that waits and signals without pinning OS
// threads.
//
// A child is started with a fixed file layout so that both sides agree on it
// without negotiation:
//
//	fd 0      /dev/null (as Python's spawn does: children do not share stdin)
//	fd 1, 2   the parent's fd 1 and 2
//	fd 3      the child's end of the control socket (see Frame)
//	fd 4...   extra files (the shared-memory arena)
//
// and an environment variable (EnvMarker) that tells Init in the child that it
// is one. The child is put in its own process group so that signalling the
// group reaches anything the child started outside this library, and it gets
// SIGKILL if its parent dies (PR_SET_PDEATHSIG). Go ties that death signal to
// the OS thread that forked (golang/go#27505), so all forks happen on one
// locked thread that lives as long as the process; the control socket's EOF is
// the second, independent notice of the parent's death.
package spawn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// EnvMarker is the environment variable that marks a process as a child
// started by this package. Its value is "v1:<ctlfd>:<extra fds...>".
const EnvMarker = "MULTIPROC_CHILD"

// CtlFd is the child's file descriptor for its end of the control socket.
const CtlFd = 3

// Request describes a child to start.
type Request struct {
	// Extra are file descriptors passed to the child from fd 4 on, in order.
	Extra []int
	// Env is the child's environment without the marker; nil means the
	// parent's environment.
	Env []string
}

// Status is how a child ended.
type Status struct {
	// Code is the exit status for a normal exit, or the negated signal
	// number if a signal ended the child (Python's convention).
	Code int
}

// Signaled reports whether the child was ended by a signal.
func (s Status) Signaled() bool { return s.Code < 0 }

// Signal returns the signal that ended the child, or 0.
func (s Status) Signal() syscall.Signal {
	if s.Code < 0 {
		return syscall.Signal(-s.Code)
	}
	return 0
}

// String reads like os.ProcessState's: "exit status 3", "killed by SIGKILL".
func (s Status) String() string {
	if s.Code < 0 {
		return "killed by " + unix.SignalName(s.Signal())
	}
	return "exit status " + strconv.Itoa(s.Code)
}

// Child is the parent's handle on a started child.
type Child struct {
	// Pid is the child's process id; it is also its process group id.
	Pid int
	// Ctl is the parent's end of the control socket.
	Ctl net.Conn

	pidfd *os.File // non-blocking, registered with the runtime's poller

	mu     sync.Mutex
	reaped bool
	status Status
}

// forks carries fork requests to the one locked thread that performs them.
var (
	forkOnce sync.Once
	forks    chan func()
)

func onForkThread(f func()) {
	forkOnce.Do(func() {
		forks = make(chan func())
		go func() {
			// Never unlocked: the thread must outlive every child it forked,
			// or PR_SET_PDEATHSIG would kill them when it exits.
			runtime.LockOSThread()
			for f := range forks {
				f()
			}
		}()
	})
	done := make(chan struct{})
	forks <- func() { f(); close(done) }
	<-done
}

var devNull struct {
	once sync.Once
	fd   int
	err  error
}

func nullFd() (int, error) {
	devNull.once.Do(func() {
		devNull.fd, devNull.err = unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	})
	return devNull.fd, devNull.err
}

// Start starts a child running this binary. The returned child has been
// forked; it has not necessarily reached Init yet.
func Start(req Request) (*Child, error) {
	null, err := nullFd()
	if err != nil {
		return nil, fmt.Errorf("spawn: open /dev/null: %w", err)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("spawn: socketpair: %w", err)
	}
	parentEnd := os.NewFile(uintptr(pair[0]), "multiproc-ctl")
	defer parentEnd.Close() // net.FileConn dups it
	childEnd := pair[1]

	files := []uintptr{uintptr(null), 1, 2, uintptr(childEnd)}
	marker := []string{"v1", strconv.Itoa(CtlFd)}
	for i, fd := range req.Extra {
		files = append(files, uintptr(fd))
		marker = append(marker, strconv.Itoa(CtlFd+1+i))
	}
	env := req.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(raceExitNow(withoutMarker(env)), EnvMarker+"="+strings.Join(marker, ":"))

	pidfd := -1
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
			PidFD:     &pidfd,
		},
	}
	var pid int
	onForkThread(func() {
		pid, err = syscall.ForkExec("/proc/self/exe", []string{os.Args[0]}, attr)
	})
	unix.Close(childEnd)
	if err != nil {
		return nil, fmt.Errorf("spawn: re-exec /proc/self/exe: %w", err)
	}
	c := &Child{Pid: pid}
	if pidfd < 0 {
		// Kernels without CLONE_PIDFD (before 5.3) are not supported:
		// without a pidfd there is no race-free wait and signal.
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, nil, 0, nil)
		return nil, errors.New("spawn: kernel did not return a pidfd (Linux 5.3 or later is required)")
	}
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return nil, fmt.Errorf("spawn: pidfd: %w", err)
	}
	c.pidfd = os.NewFile(uintptr(pidfd), "pidfd")
	c.Ctl, err = net.FileConn(parentEnd)
	if err != nil {
		c.Kill()
		c.Wait()
		return nil, fmt.Errorf("spawn: control socket: %w", err)
	}
	return c, nil
}

func withoutMarker(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, EnvMarker+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// cldExited is si_code for a normal exit (CLD_EXITED); x/sys/unix does not
// define the CLD_* codes.
const cldExited = 1

// raceExitNow stops the race detector's runtime from sleeping a second at
// exit (its atexit_sleep_ms default), which would add a second to every
// child's life in a -race build. A GORACE that sets it explicitly is kept.
func raceExitNow(env []string) []string {
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GORACE="); ok {
			if !strings.Contains(v, "atexit_sleep_ms") {
				env[i] = strings.TrimSpace(kv + " atexit_sleep_ms=0")
			}
			return env
		}
	}
	return append(env, "GORACE=atexit_sleep_ms=0")
}

// sigchld is the SIGCHLD member of the kernel's siginfo_t union.
type sigchld struct {
	Signo, Errno, Code, _ int32
	Pid                   int32
	UID                   uint32
	Status                int32
}

// Wait blocks until the child has exited and reaps it. The wait parks the
// calling goroutine in the runtime's poller on the pidfd: it does not hold an
// OS thread. Wait may be called from several goroutines and more than once;
// every call returns the same status.
func (c *Child) Wait() (Status, error) {
	c.mu.Lock()
	if c.reaped {
		defer c.mu.Unlock()
		return c.status, nil
	}
	c.mu.Unlock()
	rc, err := c.pidfd.SyscallConn()
	if err != nil {
		return Status{}, err
	}
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		// Reaping happens under mu so that Signal never targets a reaped
		// pid (whose process group id could then be reused).
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.reaped {
			return true
		}
		var info unix.Siginfo
		e := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG, nil)
		if e == unix.EINTR || e == unix.EAGAIN {
			return false
		}
		if e != nil {
			werr = e
			return true
		}
		sc := (*sigchld)(unsafe.Pointer(&info))
		if sc.Pid == 0 {
			return false // still running: wait for the pidfd to become readable
		}
		if sc.Code == cldExited {
			c.status.Code = int(sc.Status)
		} else { // CLD_KILLED, CLD_DUMPED
			c.status.Code = -int(sc.Status)
		}
		c.reaped = true
		return true
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
		if c.pidfd != nil {
			c.pidfd.Close()
			c.pidfd = nil
		}
		return c.status, nil
	}
	if err == nil {
		err = werr
	}
	return Status{}, fmt.Errorf("spawn: wait for pid %d: %w", c.Pid, err)
}

// Exited reports whether Wait has reaped the child.
func (c *Child) Exited() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reaped
}

// Signal sends sig to the child and to every process in its process group,
// that is, to what the child started outside this library too. Children this
// library started in the child have groups of their own; they follow through
// the death signal and the control socket. Signalling a child that has
// already been reaped does nothing and returns nil: the pidfd makes that
// check free of pid-reuse races.
func (c *Child) Signal(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
		return nil
	}
	rc, err := c.pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	})
	if serr == unix.ESRCH {
		serr = nil // exited, not yet reaped
	}
	// The group may hold processes even when the leader is gone; while the
	// leader is unreaped its pid (and so the group id) cannot be reused.
	if err := unix.Kill(-c.Pid, sig); err != nil && err != unix.ESRCH && serr == nil {
		serr = err
	}
	return serr
}

// Kill sends SIGKILL to the child and its process group.
func (c *Child) Kill() error { return c.Signal(syscall.SIGKILL) }

// Inherited describes the files a child received, as read from EnvMarker.
type Inherited struct {
	Ctl   *os.File
	Extra []int
}

// ChildFiles reports whether this process was started by Start, and if so returns
// its inherited files. It removes the marker from the environment so that
// programs this child starts by other means do not mistake themselves for
// children, and marks the inherited descriptors close-on-exec so that they
// are not leaked into grandchildren.
func ChildFiles() (Inherited, bool, error) {
	v, ok := os.LookupEnv(EnvMarker)
	if !ok {
		return Inherited{}, false, nil
	}
	os.Unsetenv(EnvMarker)
	parts := strings.Split(v, ":")
	if len(parts) < 2 || parts[0] != "v1" {
		return Inherited{}, true, fmt.Errorf("spawn: bad %s=%q", EnvMarker, v)
	}
	fds := make([]int, 0, len(parts)-1)
	for _, p := range parts[1:] {
		fd, err := strconv.Atoi(p)
		if err != nil || fd < 3 {
			return Inherited{}, true, fmt.Errorf("spawn: bad %s=%q", EnvMarker, v)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return Inherited{}, true, fmt.Errorf("spawn: inherited fd %d: %w", fd, err)
		}
		fds = append(fds, fd)
	}
	return Inherited{Ctl: os.NewFile(uintptr(fds[0]), "multiproc-ctl"), Extra: fds[1:]}, true, nil
}

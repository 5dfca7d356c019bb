// Package spawn starts child processes by re-executing the running binary
// and gives the parent a handle that waits and signals without pinning OS
// threads.
//
// A child is started with a fixed file layout so that both sides agree on it
// without negotiation:
//
//	fd 0      /dev/null (as Python's spawn does: children do not share stdin)
//	fd 1, 2   the parent's fd 1 and 2, or /dev/null where the parent has
//	          them closed (a library descriptor is never handed out as 0-2)
//	fd 3      the child's end of the control socket (see Frame)
//	fd 4...   extra files (the shared-memory arena)
//
// and nothing else: descriptors the parent left open without close-on-exec
// are closed in the child before any code but the Go runtime's and this
// package's dependencies' runs. An environment variable (EnvMarker) names the
// parent; the child believes it only if its control socket was made by that
// very parent (SO_PEERCRED), so a stray or crafted variable makes nobody a
// child.
//
// Containment. Every process that starts children becomes a child
// subreaper, so that orphaned descendants of a child stay in its subtree.
// A child is put in its own process group and, where the machine lets the
// library create cgroup v2 directories, in a cgroup of its own below its
// parent's. When a child dies, in any way, its parent kills its process
// group and its cgroup (cgroup.kill), which reaches every process it left
// behind, even ones that left its group with setsid. The child gets
// DeathSignal if its parent dies (PR_SET_PDEATHSIG); Go ties that to the OS
// thread that forked (golang/go#27505), so all forks happen on locked threads
// that live as long as the process. On that signal, or on EOF on the control
// socket, the child prints why on stderr, kills its own subtree (its cgroup,
// or else its children's groups and every descendant it can find in /proc),
// then itself. mp.Process's documentation says what stays out of reach.
package spawn

import (
	"encoding/hex"
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

	"github.com/multiproc/mp/internal/fdutil"
)

// EnvMarker is the environment variable that marks a process as a child
// started by this package. Its value is "v2;ppid=<pid>;fds=<ctl>,<extra...>"
// followed by optional ";as=<bytes>" and ";cg=1".
const EnvMarker = "MULTIPROC_CHILD"

// CtlFd is the child's file descriptor for its end of the control socket.
const CtlFd = 3

// DeathSignal is what a child receives when its parent dies. It is a
// real-time signal that the Go runtime ignores unless asked for, so that
// this package, not the default action, decides what happens: the child
// kills its subtree before it dies. Before the runtime has started, its
// default action ends the child.
const DeathSignal = syscall.Signal(40)

// Request describes a child to start.
type Request struct {
	// Extra are file descriptors passed to the child from fd 4 on, in order.
	Extra []int
	// Env is the child's environment without the marker; nil means the
	// parent's environment.
	Env []string
	// Stderr, if positive, is the child's fd 2 instead of the parent's.
	Stderr int
	// Isolated forks the child from a thread with PR_SET_NO_NEW_PRIVS set,
	// so that neither it nor anything it executes can gain privileges.
	Isolated bool
	// Limits are applied to the child before it runs any code of the
	// program's own packages.
	Limits Limits
	// Title, if not empty, is what ps and top show for the child, after
	// the program's name: its command line reads "<os.Args[0]> <Title>"
	// (the child's os.Args is the parent's os.Args[0] alone, as without a
	// title), and its comm (ps -o comm, top) is the parent's, not the
	// "exe" of the re-executed /proc/self/exe.
	Title string
}

// Limits bound a child's resources; zero fields do not limit.
type Limits struct {
	// AddressSpace is how many bytes of address space the child may map
	// beyond what its runtime had mapped at start (RLIMIT_AS, set by the
	// child itself once the runtime is up, since a race-enabled runtime
	// alone reserves terabytes).
	AddressSpace uint64
	// CPUSeconds is RLIMIT_CPU: the kernel kills the child with SIGKILL
	// once it has used this much CPU time.
	CPUSeconds uint64
	// OpenFiles is RLIMIT_NOFILE.
	OpenFiles uint64
	// Processes is RLIMIT_NPROC. The kernel counts it per user, and does
	// not apply it to privileged users (root).
	Processes uint64
	// Memory is the cgroup v2 memory.max of the child's cgroup, applied
	// only where the memory controller is available to the parent's
	// cgroup (MemoryLimited reports whether it was).
	Memory uint64
}

func (l Limits) any() bool { return l != Limits{} }

// Status is how a child ended.
type Status struct {
	// Code is the exit status for a normal exit, or the negated signal
	// number if a signal ended the child (Python's convention).
	Code int
	// CPU is the CPU time (user and system) the child used, in
	// microseconds.
	CPU int64
	// OOMKilled reports that the child's cgroup memory limit made the
	// kernel kill a process of the child's subtree.
	OOMKilled bool
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

	pidfd  *os.File // non-blocking, registered with the runtime's poller
	cg     *cgroup  // the child's own cgroup, or nil
	limits Limits

	mu     sync.Mutex
	reaped bool
	status Status
}

// MemoryLimited reports whether the child's Limits.Memory is enforced by a
// cgroup.
func (c *Child) MemoryLimited() bool { return c.cg != nil && c.cg.memoryMax }

// forks carries fork requests to the locked threads that perform them: one
// for ordinary children, one with no_new_privs for isolated ones.
var forkThreads [2]struct {
	once  sync.Once
	forks chan func()
}

func onForkThread(isolated bool, f func()) {
	t := &forkThreads[0]
	if isolated {
		t = &forkThreads[1]
	}
	t.once.Do(func() {
		t.forks = make(chan func())
		ready := make(chan struct{})
		go forkLoop(isolated, t.forks, ready)
		<-ready
	})
	done := make(chan struct{})
	t.forks <- func() { f(); close(done) }
	<-done
}

// forkLoop runs fork requests on its own OS thread, which it never unlocks:
// the thread must outlive every child it forked, or PR_SET_PDEATHSIG would
// kill them when it exits. The ordinary fork thread also reaps orphans
// adopted by this subreaper (see reapAdopted).
func forkLoop(isolated bool, forks chan func(), ready chan struct{}) {
	runtime.LockOSThread()
	if isolated {
		// no_new_privs is per thread and inherited by what the thread forks.
		unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	var sigchld chan os.Signal
	if !isolated {
		sigchld = watchSIGCHLD()
	}
	close(ready)
	for {
		select {
		case f := <-forks:
			f()
		case <-sigchld:
			reapAdopted()
		}
	}
}

var devNull struct {
	once sync.Once
	fd   int
	err  error
}

func nullFd() (int, error) {
	devNull.once.Do(func() {
		devNull.fd, devNull.err = unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if devNull.err == nil {
			devNull.fd, devNull.err = fdutil.Above2(devNull.fd)
		}
	})
	return devNull.fd, devNull.err
}

// occupyStdio puts /dev/null on whichever of fds 0-2 the program has
// closed, as the C library does for set-user-ID programs: otherwise the
// next descriptor anyone opens (a dup that net.FileConn makes, the pipe
// ForkExec makes, the arena) lands there, and is then written to as standard
// output by the runtime or handed to a child as its stdout.
func occupyStdio(null int) {
	for i := 0; i <= 2; i++ {
		if _, err := unix.FcntlInt(uintptr(i), unix.F_GETFD, 0); err == unix.EBADF {
			unix.Dup3(null, i, 0)
		}
	}
}

// stdio returns what the child gets as fd i (1 or 2): the parent's fd i
// unless it is closed or is one of the library's descriptors, and then
// /dev/null.
func stdio(i, null int) uintptr {
	if _, err := unix.FcntlInt(uintptr(i), unix.F_GETFD, 0); err != nil {
		return uintptr(null)
	}
	if target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(i)); err == nil &&
		(strings.HasPrefix(target, "/memfd:multiproc") || target == "anon_inode:[pidfd]") {
		return uintptr(null)
	}
	return uintptr(i)
}

var live struct {
	sync.Mutex
	children map[*Child]struct{}
}

// Start starts a child running this binary. The returned child has been
// forked; it has not necessarily reached Init yet.
func Start(req Request) (*Child, error) {
	null, err := nullFd()
	if err != nil {
		return nil, fmt.Errorf("spawn: open /dev/null: %w", err)
	}
	occupyStdio(null)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("spawn: socketpair: %w", err)
	}
	// The ends must not sit on 0-2: the child's stdio is chosen by number.
	if pair[0], err = fdutil.Above2(pair[0]); err != nil {
		unix.Close(pair[1])
		return nil, fmt.Errorf("spawn: socketpair: %w", err)
	}
	if pair[1], err = fdutil.Above2(pair[1]); err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("spawn: socketpair: %w", err)
	}
	parentEnd := os.NewFile(uintptr(pair[0]), "multiproc-ctl")
	defer parentEnd.Close() // net.FileConn dups it
	childEnd := pair[1]

	stderr := stdio(2, null)
	if req.Stderr > 0 {
		stderr = uintptr(req.Stderr)
	}
	files := []uintptr{uintptr(null), stdio(1, null), stderr, uintptr(childEnd)}
	fds := []string{strconv.Itoa(CtlFd)}
	for i, fd := range req.Extra {
		files = append(files, uintptr(fd))
		fds = append(fds, strconv.Itoa(CtlFd+1+i))
	}
	marker := "v2;ppid=" + strconv.Itoa(os.Getpid()) + ";fds=" + strings.Join(fds, ",")
	if req.Limits.AddressSpace > 0 {
		marker += ";as=" + strconv.FormatUint(req.Limits.AddressSpace, 10)
	}
	argv0 := os.Args[0]
	if req.Title != "" {
		// One argument still: a program that counts or parses its
		// arguments before the child restores os.Args sees none.
		argv0 += " " + req.Title
		marker += ";t=" + hex.EncodeToString([]byte(req.Title)) + ";c=" + hex.EncodeToString([]byte(ownComm()))
	}
	cg := newCgroup(req.Limits.Memory)
	if cg != nil {
		marker += ";cg=1"
	}
	env := req.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(raceExitNow(withoutMarker(env)), EnvMarker+"="+marker)

	pidfd := -1
	sys := &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: DeathSignal,
		PidFD:     &pidfd,
	}
	if cg != nil {
		sys.UseCgroupFD, sys.CgroupFD = true, cg.fd
	}
	attr := &syscall.ProcAttr{Env: env, Files: files, Sys: sys}
	var pid int
	fork := func() {
		pid, err = syscall.ForkExec("/proc/self/exe", []string{argv0}, attr)
	}
	onForkThread(req.Isolated, fork)
	if err != nil && cg != nil {
		// A cgroup the kernel will not put a process in (a threaded or
		// invalid domain, say): start without one.
		cg.remove()
		cg = nil
		sys.UseCgroupFD = false
		attr.Env = append(env[:len(env)-1:len(env)-1], EnvMarker+"="+strings.TrimSuffix(marker, ";cg=1"))
		onForkThread(req.Isolated, fork)
	}
	unix.Close(childEnd)
	if cg != nil {
		cg.closeFd()
	}
	if err != nil {
		return nil, fmt.Errorf("spawn: re-exec /proc/self/exe: %w", err)
	}
	c := &Child{Pid: pid, cg: cg, limits: req.Limits}
	if pidfd < 0 {
		// Kernels without CLONE_PIDFD (before 5.3) are not supported:
		// without a pidfd there is no race-free wait and signal.
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, nil, 0, nil)
		return nil, errors.New("spawn: kernel did not return a pidfd (Linux 5.3 or later is required)")
	}
	if pidfd, err = fdutil.Above2(pidfd); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, nil, 0, nil)
		return nil, fmt.Errorf("spawn: pidfd: %w", err)
	}
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, nil, 0, nil)
		unix.Close(pidfd)
		return nil, fmt.Errorf("spawn: pidfd: %w", err)
	}
	c.pidfd = os.NewFile(uintptr(pidfd), "pidfd")
	// Only now: the reaping of adopted orphans tells the os package's
	// children by their pidfds, which this kernel has just shown it gives.
	becomeSubreaper()
	// Limits the kernel keeps per process are set from here at once, so
	// that they hold before the child's own packages initialise.
	if err := c.setRlimits(); err != nil {
		c.Kill()
		c.Wait()
		return nil, fmt.Errorf("spawn: limits: %w", err)
	}
	live.Lock()
	if live.children == nil {
		live.children = map[*Child]struct{}{}
	}
	live.children[c] = struct{}{}
	live.Unlock()
	c.Ctl, err = net.FileConn(parentEnd)
	if err != nil {
		c.Kill()
		c.Wait()
		return nil, fmt.Errorf("spawn: control socket: %w", err)
	}
	return c, nil
}

func (c *Child) setRlimits() error {
	set := func(res int, v uint64, name string) error {
		if v == 0 {
			return nil
		}
		lim := unix.Rlimit{Cur: v, Max: v}
		if err := unix.Prlimit(c.Pid, res, &lim, nil); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	if err := set(unix.RLIMIT_CPU, c.limits.CPUSeconds, "RLIMIT_CPU"); err != nil {
		return err
	}
	if err := set(unix.RLIMIT_NOFILE, c.limits.OpenFiles, "RLIMIT_NOFILE"); err != nil {
		return err
	}
	return set(unix.RLIMIT_NPROC, c.limits.Processes, "RLIMIT_NPROC")
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

// Wait blocks until the child has exited and reaps it. Before reaping, it
// kills what the child left behind: its process group and its cgroup. The
// wait parks the calling goroutine in the runtime's poller on the pidfd: it
// does not hold an OS thread. Wait may be called from several goroutines and
// more than once; every call returns the same status.
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
		e := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if e == unix.EINTR || e == unix.EAGAIN {
			return false
		}
		if e != nil {
			werr = e
			return true
		}
		if (*sigchld)(unsafe.Pointer(&info)).Pid == 0 {
			return false // still running: wait for the pidfd to become readable
		}
		// Dead, not yet reaped: its pid, and so its group id, cannot be
		// reused yet. Kill what it leaves behind, then reap.
		unix.Kill(-c.Pid, unix.SIGKILL)
		if c.cg != nil {
			c.cg.kill()
		}
		var ru unix.Rusage
		if e := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG, &ru); e != nil {
			werr = e
			return true
		}
		sc := (*sigchld)(unsafe.Pointer(&info))
		if sc.Code == cldExited {
			c.status.Code = int(sc.Status)
		} else { // CLD_KILLED, CLD_DUMPED
			c.status.Code = -int(sc.Status)
		}
		c.status.CPU = ru.Utime.Sec*1e6 + ru.Utime.Usec + ru.Stime.Sec*1e6 + ru.Stime.Usec
		c.reaped = true
		return true
	})
	c.mu.Lock()
	reapedNow := c.reaped && c.pidfd != nil
	if reapedNow {
		c.pidfd.Close()
		c.pidfd = nil
	}
	c.mu.Unlock()
	if reapedNow {
		live.Lock()
		delete(live.children, c)
		live.Unlock()
		if c.cg != nil {
			// Orphans the kill reached were adopted by this process: reap
			// them so that the cgroup empties and can be removed.
			reapAdopted()
			oom := c.cg.cleanup()
			c.mu.Lock()
			c.status.OOMKilled = oom
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reaped {
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
// that is, to what the child started outside this library too. SIGKILL goes
// further: it kills the child's whole subtree, through its cgroup where it
// has one, else by finding every descendant in /proc (stopping each as it is
// found, so that none forks away while the rest are being found). Signalling
// a child that has already been reaped does nothing and returns nil: the
// pidfd makes that check free of pid-reuse races.
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
	if sig == syscall.SIGKILL {
		if c.cg != nil {
			c.cg.kill()
		} else {
			killDescendants(c.Pid)
		}
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

// Kill sends SIGKILL to the child and its whole subtree.
func (c *Child) Kill() error { return c.Signal(syscall.SIGKILL) }

// KillAll kills every live child of this process and their subtrees.
func KillAll() {
	live.Lock()
	cs := make([]*Child, 0, len(live.children))
	for c := range live.children {
		cs = append(cs, c)
	}
	live.Unlock()
	for _, c := range cs {
		c.Kill()
	}
}

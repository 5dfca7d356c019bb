package spawn

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Inherited describes the files a child received, as read from EnvMarker.
type Inherited struct {
	Ctl   *os.File
	Extra []int
}

// child is what setupChild found, before any package that depends on this
// one was initialised.
var child struct {
	inh      Inherited
	is       bool
	err      error
	ppid     int
	cgroup   string // this process's own cgroup, made for it by its parent
	notice   atomic.Pointer[string]
	dying    sync.Once
	asLimit  uint64
	asErr    error
	deathSig chan os.Signal
}

// Package initialisation is the earliest point Go code can run: only the
// runtime and this package's dependencies come first, not the program's own
// packages. That is where a child closes what it should not have inherited
// and starts to watch for its parent's death.
func init() { setupChild() }

func setupChild() {
	v, ok := os.LookupEnv(EnvMarker)
	if !ok {
		return
	}
	// Whatever it says, programs this process starts must not see it.
	os.Unsetenv(EnvMarker)
	m, ok := parseMarker(v)
	if !ok {
		return // stray or crafted: this is not a child of this package
	}
	// The control socket must have been made by the parent the marker
	// names, and that must be our parent: then the marker is genuine.
	cred, err := unix.GetsockoptUcred(CtlFd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || int(cred.Pid) != m.ppid {
		return
	}
	if os.Getppid() != m.ppid {
		os.Exit(1) // a genuine child whose parent has died: nobody to serve
	}
	keep := map[int]bool{}
	for _, fd := range m.fds {
		keep[fd] = true
	}
	closeInherited(keep)
	for _, fd := range m.fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			child.is, child.err = true, fmt.Errorf("spawn: inherited fd %d: %w", fd, err)
			return
		}
	}
	if m.title != "" {
		// The command line reads "<program> <title>" for ps; the program
		// sees the parent's os.Args[0], as it would without a title.
		if len(os.Args) > 0 {
			os.Args[0] = strings.TrimSuffix(os.Args[0], " "+m.title)
		}
		setComm(m.comm)
	}
	child.is, child.ppid = true, m.ppid
	child.inh = Inherited{Ctl: os.NewFile(uintptr(m.fds[0]), "multiproc-ctl"), Extra: m.fds[1:]}
	if m.cgroup {
		child.cgroup = ownCgroup()
	}
	becomeSubreaper()
	child.deathSig = make(chan os.Signal, 1)
	signal.Notify(child.deathSig, DeathSignal)
	go func() {
		<-child.deathSig
		ParentGone()
	}()
	// The parent may have died before the handler was in place, while the
	// runtime ignored the signal.
	if os.Getppid() != m.ppid {
		ParentGone()
	}
	if m.as > 0 {
		child.asLimit = m.as
		child.asErr = limitAddressSpace(m.as)
	}
}

type marker struct {
	ppid   int
	fds    []int
	as     uint64
	cgroup bool
	title  string // what follows the program's name in the command line
	comm   string // the parent's comm
}

func parseMarker(v string) (marker, bool) {
	var m marker
	parts := strings.Split(v, ";")
	if len(parts) < 3 || parts[0] != "v2" {
		return m, false
	}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			return m, false
		}
		switch k {
		case "ppid":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 1 {
				return m, false
			}
			m.ppid = n
		case "fds":
			for i, f := range strings.Split(val, ",") {
				fd, err := strconv.Atoi(f)
				if err != nil || fd != CtlFd+i || i > 64 {
					return m, false
				}
				m.fds = append(m.fds, fd)
			}
		case "as":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return m, false
			}
			m.as = n
		case "cg":
			m.cgroup = val == "1"
		case "t", "c":
			b, err := hex.DecodeString(val)
			if err != nil {
				return m, false
			}
			if k == "t" {
				m.title = string(b)
			} else {
				m.comm = string(b)
			}
		default:
			return m, false
		}
	}
	return m, m.ppid != 0 && len(m.fds) > 0
}

// closeInherited closes every descriptor above 2 that is not in keep and is
// not close-on-exec: what the parent had open without close-on-exec leaked
// through exec, while everything the runtime opened since is close-on-exec.
func closeInherited(keep map[int]bool) {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return
	}
	names, _ := dir.Readdirnames(-1)
	dirFd := int(dir.Fd())
	var stray []int
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd <= 2 || keep[fd] || fd == dirFd {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			stray = append(stray, fd)
		}
	}
	dir.Close()
	for _, fd := range stray {
		unix.Close(fd)
	}
}

// limitAddressSpace sets RLIMIT_AS to what is mapped now plus extra bytes.
func limitAddressSpace(extra uint64) error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	var vm uint64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmSize:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			vm = kb << 10
		}
	}
	lim := vm + extra
	if lim < vm {
		lim = unix.RLIM_INFINITY
	}
	return unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: lim, Max: lim})
}

// AddressSpaceLimit returns the Limits.AddressSpace this child was started
// with and whether applying it failed.
func AddressSpaceLimit() (extra uint64, err error) { return child.asLimit, child.asErr }

// ChildFiles reports whether this process was started by Start, and if so
// returns its inherited files. The marker has already been removed from the
// environment, so that programs this child starts by other means do not
// mistake themselves for children, and the inherited descriptors are
// close-on-exec, so that they do not leak into grandchildren. A marker that
// does not come from this process's parent, with a control socket that
// parent made, is ignored: the process is then not a child.
func ChildFiles() (Inherited, bool, error) {
	return child.inh, child.is, child.err
}

// SetDeathNotice sets the line a child prints on stderr when its parent's
// death makes it kill itself.
func SetDeathNotice(s string) { child.notice.Store(&s) }

// ParentGone is what a child does when its parent has died: it says so on
// stderr, kills its subtree and then itself. It does not return.
func ParentGone() {
	child.dying.Do(func() {
		if n := child.notice.Load(); n != nil {
			os.Stderr.WriteString(*n + "\n")
		}
		killTree()
	})
	select {}
}

// KillTree kills this child's whole subtree and then the child itself with
// SIGKILL, saying nothing: what a child does when its grace period after
// SIGTERM is over. It does not return.
func KillTree() {
	child.dying.Do(killTree)
	select {}
}

func killTree() {
	KillAll()
	if cg := child.cgroup; cg != "" {
		// Step out into the parent's cgroup, so that the one made for
		// this process can be killed whole and removed; failing that,
		// kill it with this process inside.
		pid := []byte(strconv.Itoa(os.Getpid()))
		if os.WriteFile(filepath.Join(filepath.Dir(cg), "cgroup.procs"), pid, 0) == nil {
			(&cgroup{dir: cg, fd: -1}).kill()
			(&cgroup{dir: cg, fd: -1}).cleanup()
		} else {
			killCgroup(cg)
		}
	}
	killDescendants(os.Getpid())
	unix.Kill(os.Getpid(), unix.SIGKILL)
}

// DieBySignal ends the process by sig's default action, whatever handlers
// were installed for it, so that its parent sees it killed by sig (a child
// that had its function return after SIGTERM exits as one that did not
// catch it). It does not return.
func DieBySignal(sig syscall.Signal) {
	signal.Reset(sig)
	unix.Kill(os.Getpid(), sig)
	// The signal is delivered to some thread of the process; should it
	// somehow not end it, exit as a shell reports a death by signal.
	time.Sleep(time.Second)
	os.Exit(128 + int(sig))
}

// ownComm returns this process's comm, which its children take for
// theirs.
func ownComm() string {
	ownCommOnce.Do(func() {
		b, _ := os.ReadFile("/proc/self/comm")
		ownCommName = strings.TrimSuffix(string(b), "\n")
	})
	return ownCommName
}

var (
	ownCommOnce sync.Once
	ownCommName string
)

// setComm gives every thread of this process the comm name (at most 15
// bytes, as the kernel keeps), the one ps and top show: re-executing
// /proc/self/exe made it "exe". Threads started later inherit it from the
// thread that starts them.
func setComm(name string) {
	if name == "" {
		return
	}
	if len(name) > 15 {
		name = name[:15]
	}
	ownCommOnce.Do(func() { ownCommName = name })
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, t := range tasks {
		os.WriteFile("/proc/self/task/"+t.Name()+"/comm", []byte(name), 0)
	}
}

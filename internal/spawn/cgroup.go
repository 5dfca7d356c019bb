package spawn

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/fdutil"
	"github.com/multiproc/mp/internal/proc"
)

// cgroup is a child's own cgroup v2 directory, created by its parent below
// the parent's cgroup and removed by it once the child is reaped. Its name
// says who made it, mp-<pid>-<start time>-<n>, so that directories left by
// a process that was killed can be recognised and removed by the next one.
type cgroup struct {
	dir       string
	fd        int // open until the child is forked into it
	memoryMax bool
}

var cgBase struct {
	once   sync.Once
	dir    string // this process's own cgroup directory, "" if unusable
	memory bool   // the memory controller is enabled for its children
	seq    atomic.Uint64
}

// ownCgroup returns the directory of this process's cgroup v2, or "".
func ownCgroup() string {
	mnt := cgroup2Mount()
	if mnt == "" {
		return ""
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mnt, p)
		}
	}
	return ""
}

func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// ... mount-point ... - fstype source options
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4]
			}
		}
	}
	return ""
}

func initCgroupBase() {
	dir := ownCgroup()
	if dir == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		return // no cgroup v2 here
	}
	// Remove what killed processes of an earlier run left behind.
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			var pid int
			var start uint64
			if e.IsDir() && strings.HasPrefix(e.Name(), "mp-") {
				parts := strings.Split(e.Name(), "-")
				if len(parts) == 4 {
					pid, _ = strconv.Atoi(parts[1])
					start, _ = strconv.ParseUint(parts[2], 10, 64)
					if pid > 0 && !proc.Alive(proc.ID{Pid: pid, Start: start}) {
						removeTree(filepath.Join(dir, e.Name()))
					}
				}
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control")); err == nil {
		cgBase.memory = strings.Contains(" "+strings.TrimSpace(string(b))+" ", " memory ")
	}
	cgBase.dir = dir
}

// newCgroup makes a cgroup for a child about to be forked, or returns nil
// where this process may not make one.
func newCgroup(memoryMax uint64) *cgroup {
	cgBase.once.Do(initCgroupBase)
	if cgBase.dir == "" {
		return nil
	}
	me := proc.Self()
	name := "mp-" + strconv.Itoa(me.Pid) + "-" + strconv.FormatUint(me.Start, 10) + "-" + strconv.FormatUint(cgBase.seq.Add(1), 10)
	dir := filepath.Join(cgBase.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EROFS) {
			cgBase.dir = "" // not ours to write: do without from now on
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		unix.Rmdir(dir)
		cgBase.dir = "" // before Linux 5.14: no way to kill a cgroup at once
		return nil
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		fd, err = fdutil.Above2(fd)
	}
	if err != nil {
		unix.Rmdir(dir)
		return nil
	}
	cg := &cgroup{dir: dir, fd: fd}
	if memoryMax > 0 && cgBase.memory {
		if os.WriteFile(filepath.Join(dir, "memory.max"), []byte(strconv.FormatUint(memoryMax, 10)), 0) == nil {
			os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0)
			cg.memoryMax = true
		}
	}
	return cg
}

func (cg *cgroup) closeFd() {
	if cg.fd >= 0 {
		unix.Close(cg.fd)
		cg.fd = -1
	}
}

// kill kills every process in the cgroup and below it.
func (cg *cgroup) kill() { killCgroup(cg.dir) }

func killCgroup(dir string) {
	os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
}

// cleanup waits (briefly: a killed process is gone within milliseconds)
// for the cgroup to empty, removes it, and reports whether the memory
// limit killed anything in it.
func (cg *cgroup) cleanup() (oomKilled bool) {
	cg.closeFd()
	if b, err := os.ReadFile(filepath.Join(cg.dir, "memory.events")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok && v != "0" {
				oomKilled = true
			}
		}
	}
	for delay := 100 * time.Microsecond; ; delay *= 2 {
		if removeTree(cg.dir) || delay > time.Second {
			return oomKilled
		}
		// Adopted orphans that the kill reached must be reaped before
		// the cgroup counts as empty.
		reapAdopted()
		time.Sleep(delay)
	}
}

func (cg *cgroup) remove() {
	cg.closeFd()
	unix.Rmdir(cg.dir)
}

// removeTree removes dir and the cgroups below it, deepest first; it
// reports whether dir is gone.
func removeTree(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	err := unix.Rmdir(dir)
	return err == nil || err == unix.ENOENT
}

// Cgroups reports whether this process puts its children in cgroups of
// their own (cgroup v2 with cgroup.kill, in a cgroup this process may
// create directories in).
func Cgroups() bool {
	if cg := newCgroup(0); cg != nil {
		cg.remove()
	}
	return cgBase.dir != ""
}

// DisableCgroups makes this process start its children without cgroups,
// as on a machine that does not allow them. It is for tests of that case.
func DisableCgroups() {
	cgBase.once.Do(func() {})
	cgBase.dir = ""
}

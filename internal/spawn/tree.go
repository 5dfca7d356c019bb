package spawn

import (
	"bytes"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/proc"
)

var subreaper sync.Once

// becomeSubreaper makes this process the reaper of its descendants'
// orphans, so that a child that dies leaves its descendants inside this
// process's subtree, where a kill can still find them, rather than under
// init.
func becomeSubreaper() {
	subreaper.Do(func() {
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
		onForkThread(false, func() {}) // starts the reaping of adopted orphans
	})
}

func watchSIGCHLD() chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	return ch
}

// state returns the state letter of pid from /proc/<pid>/stat, or 0.
func state(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// heldPids returns the pids this process holds a pidfd for: its spawn
// children and the os/exec children the os package waits for (it uses
// pidfds since Go 1.23).
func heldPids() map[int]bool {
	held := map[int]bool{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if t, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || t != "anon_inode:[pidfd]" {
			continue
		}
		b, _ := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Pid:"); ok {
				if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					held[pid] = true
				}
			}
		}
	}
	return held
}

// ReapAdopted reaps the zombies among this process's children that nobody
// in the process will wait for (see reapAdopted). It happens by itself when
// a child exits; call it where a process that held a pidfd on such a
// zombie has since closed it.
func ReapAdopted() { reapAdopted() }

// reapAdopted reaps the zombies among this process's children that nobody
// in the process will wait for: orphans adopted as a subreaper. A child
// that someone holds a pidfd for (a spawn child, an os/exec one) is left to
// its owner.
func reapAdopted() {
	var zombies []int
	for _, pid := range proc.Children(os.Getpid()) {
		if state(pid) == 'Z' {
			zombies = append(zombies, pid)
		}
	}
	if len(zombies) == 0 {
		return
	}
	held := heldPids()
	for _, pid := range zombies {
		if !held[pid] {
			var info unix.Siginfo
			unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG, nil)
		}
	}
}

// killDescendants kills pid and every process below it. Each process is
// stopped as it is found, so that the set stops growing, and all are then
// killed; pidfds make the signals immune to pid reuse once found.
func killDescendants(pid int) {
	found := map[int]int{}
	stop := func(p int) bool {
		if _, ok := found[p]; ok {
			return false
		}
		fd, err := unix.PidfdOpen(p, 0)
		if err != nil {
			return false
		}
		if p != os.Getpid() {
			unix.PidfdSendSignal(fd, unix.SIGSTOP, nil, 0)
		}
		found[p] = fd
		return true
	}
	stop(pid)
	for round := 0; round < 1000; round++ {
		grew := false
		var walk func(p int, depth int)
		walk = func(p int, depth int) {
			if depth > 64 {
				return
			}
			for _, k := range proc.Children(p) {
				if stop(k) {
					grew = true
				}
				walk(k, depth+1)
			}
		}
		walk(pid, 0)
		if !grew {
			break
		}
	}
	self := -1
	for p, fd := range found {
		if p == os.Getpid() {
			self = fd
			continue
		}
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	}
	if self >= 0 {
		unix.Close(self)
	}
}

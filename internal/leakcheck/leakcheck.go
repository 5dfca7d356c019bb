// Package leakcheck is for tests: it lists what a process has open, so
// that a TestMain can fail a run that leaves file descriptors or child
// processes behind, and count the OS threads a test is holding.
package leakcheck

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FDs maps this process's open file descriptors to what they refer to.
func FDs() map[string]string {
	ents, _ := os.ReadDir("/proc/self/fd")
	fds := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		fds[e.Name()] = target
	}
	return fds
}

// NewFDs describes the descriptors open now that were not open (or were
// something else) in before, except those whose target allow accepts.
func NewFDs(before map[string]string, allow func(target string) bool) []string {
	var leaks []string
	for fd, target := range FDs() {
		if before[fd] == target || (allow != nil && allow(target)) {
			continue
		}
		leaks = append(leaks, fd+" -> "+target)
	}
	slices.Sort(leaks)
	return leaks
}

// Children returns the pids of this process's children.
func Children() []int {
	var kids []int
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				kids = append(kids, pid)
			}
		}
	}
	return kids
}

// Threads returns the number of OS threads of this process.
func Threads() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// Check reports, on stderr, descriptors opened since before (other than
// those allow accepts) and children still running, and returns 1 if there
// were any, else 0: the exit code to add to a test run's.
func Check(before map[string]string, allow func(target string) bool) int {
	code := 0
	if leaks := NewFDs(before, allow); len(leaks) > 0 {
		fmt.Fprintf(os.Stderr, "leak: file descriptors left open: %v\n", leaks)
		code = 1
	}
	if kids := Children(); len(kids) > 0 {
		fmt.Fprintf(os.Stderr, "leak: child processes still running: %v\n", kids)
		code = 1
	}
	return code
}

// Run runs m's tests and, if they pass, fails the run for descriptors or
// children they left behind; it returns the exit code. It starts the
// runtime's poller first: its descriptors stay open for good once anything
// (os/exec's pipes) needs it, so they must be in both counts.
func Run(m *testing.M) int {
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	r.Close()
	w.Close()
	before := FDs()
	code := m.Run()
	if code == 0 {
		code = Check(before, nil)
	}
	return code
}

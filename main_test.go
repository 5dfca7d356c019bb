package mp_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/multiproc/mp"
)

// TestMain is also the entry point of every child process the tests start:
// mp.Init runs the child's target and exits there.
func TestMain(m *testing.M) {
	mp.Init()
	if os.Getenv("MP_TEST_BARE_EXIT") == "1" {
		os.Exit(0) // BenchmarkBareReexec's child: start the binary, do nothing
	}
	before := openFds()
	code := m.Run()
	mp.Shutdown()
	if code == 0 {
		code = checkNoLeaks(before)
	}
	os.Exit(code)
}

// checkNoLeaks fails the run if a test left a child process, a file
// descriptor or a goroutine behind.
func checkNoLeaks(before map[string]string) int {
	failed := false
	if kids := childPids(os.Getpid()); len(kids) > 0 {
		fmt.Fprintf(os.Stderr, "leak: child processes still running: %v\n", kids)
		failed = true
	}
	for fd, target := range openFds() {
		if _, ok := before[fd]; ok {
			continue
		}
		// The tree's arena (a memfd), /dev/null for children's stdin and
		// the runtime's poller live as long as the process by design.
		if strings.HasPrefix(target, "/memfd:multiproc-arena") || target == "/dev/null" ||
			target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]" {
			continue
		}
		fmt.Fprintf(os.Stderr, "leak: file descriptor %s -> %s\n", fd, target)
		failed = true
	}
	// The fork thread and the waiter threads live as long as the process.
	if err := goleak.Find(
		goleak.IgnoreTopFunction("github.com/multiproc/mp/internal/spawn.onForkThread.func1.1"),
		goleak.IgnoreAnyFunction("github.com/multiproc/mp/internal/wait.(*shard).run"),
	); err != nil {
		fmt.Fprintf(os.Stderr, "leak: %v\n", err)
		failed = true
	}
	if failed {
		return 1
	}
	return 0
}

func openFds() map[string]string {
	ents, _ := os.ReadDir("/proc/self/fd")
	fds := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own fd, closed by now
		}
		fds[e.Name()] = target
	}
	return fds
}

// childPids lists the processes whose parent is pid.
func childPids(pid int) []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(n); ok && ppid == pid {
			kids = append(kids, n)
		}
	}
	return kids
}

func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name may hold spaces and parentheses: skip past the last ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(fields[1])
	return ppid, err == nil
}

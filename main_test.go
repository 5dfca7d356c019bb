package mp_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/multiproc/mp"
	"github.com/multiproc/mp/internal/leakcheck"
)

// TestMain is also the entry point of every child process the tests start:
// mp.Init runs the child's target and exits there.
func TestMain(m *testing.M) {
	mp.Init()
	if os.Getenv("MP_TEST_BARE_EXIT") == "1" {
		os.Exit(0) // BenchmarkBareReexec's child: start the binary, do nothing
	}
	before := leakcheck.FDs()
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
	// The tree's arena (a memfd), /dev/null for children's stdin and the
	// runtime's poller live as long as the process by design.
	code := leakcheck.Check(before, func(target string) bool {
		return strings.HasPrefix(target, "/memfd:multiproc-arena") || target == "/dev/null" ||
			target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]"
	})
	// The fork thread and the waiter threads live as long as the process.
	if err := goleak.Find(
		goleak.IgnoreAnyFunction("github.com/multiproc/mp/internal/spawn.forkLoop"),
		goleak.IgnoreAnyFunction("github.com/multiproc/mp/internal/wait.(*shard).run"),
	); err != nil {
		fmt.Fprintf(os.Stderr, "leak: %v\n", err)
		code = 1
	}
	return code
}

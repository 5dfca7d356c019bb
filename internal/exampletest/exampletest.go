// Package exampletest builds and runs the programs under examples/ from
// their tests, so that each test checks what a user of the example sees.
package exampletest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/leakcheck"
)

// Run builds the main package in dir and runs it with args, failing the
// test if it does not exit with status 0 within five minutes. It returns
// what the program wrote to stdout; stderr is logged.
func Run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := RunStatus(t, dir, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s", dir, args, err, out)
	}
	return out
}

// RunStatus is Run for programs that may exit with a non-zero status: it
// returns the exit error instead of failing.
func RunStatus(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	bin := Build(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	checkLeftBehind(t)
	if stderr.Len() > 0 {
		t.Logf("stderr:\n%s", stderr.String())
	}
	return stdout.String(), err
}

// Build builds the main package in dir and returns the program's path,
// for tests that run it themselves (to signal it, say); they call
// CheckLeftBehind once it has exited.
func Build(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "example")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// CheckLeftBehind fails t if the example left processes behind (see Main).
func CheckLeftBehind(t *testing.T) {
	t.Helper()
	checkLeftBehind(t)
}

// Main runs an example's tests with the test process as the reaper of the
// example's orphans: a process the example left behind when it exited,
// alive or killed with it, becomes a child of the test process instead of
// init's, where Run finds it and fails the test. It returns the exit code
// for os.Exit, failing also if something was left at the end.
func Main(m *testing.M) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		return 1
	}
	reaper = true
	code := m.Run()
	if pids := LeftBehind(); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "processes left behind: %v\n", pids)
		code = 1
	}
	return code
}

// reaper is set by Main: only then do orphans come back to the test.
var reaper bool

// LeftBehind returns the example's processes that are still children of
// the test process: the example's binary and the copies it re-executes
// (/proc/self/exe, so named "exe"). Other children are not the example's:
// the go command that builds it may leave a helper of its own (telemetry)
// to the reaper.
func LeftBehind() []int {
	var pids []int
	for _, pid := range leakcheck.Children() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if comm := strings.TrimSpace(string(b)); err == nil && (comm == "exe" || comm == "example") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// checkLeftBehind fails t if the example left processes behind, and kills
// and reaps them so that the next test starts clean.
func checkLeftBehind(t *testing.T) {
	t.Helper()
	if !reaper {
		return
	}
	if pids := LeftBehind(); len(pids) > 0 {
		t.Errorf("the example left processes behind: %v", pids)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
		}
	}
}

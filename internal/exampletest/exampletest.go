// Package exampletest builds and runs the programs under examples/ from
// their tests, so that each test checks what a user of the example sees.
package exampletest

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
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
	bin := filepath.Join(t.TempDir(), "example")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if stderr.Len() > 0 {
		t.Logf("stderr:\n%s", stderr.String())
	}
	return stdout.String(), err
}

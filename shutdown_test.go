package mp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// heartbeat appends a line to path every few milliseconds, forever: the
// seeds' daemon that reports "I am OK".
func heartbeat(path string) {
	for {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.WriteString("ok\n")
			f.Close()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitForFile blocks until path exists, then writes done.
func waitForFile(path, done string) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return writeFile(done, "done")
		}
		time.Sleep(time.Millisecond)
	}
}

// shutdownScenario is a whole program's main: it starts a daemon and a
// normal child, and calls Shutdown as a deferred call would at the end of
// main. It records how each child ended.
func shutdownScenario(dir string) error {
	d := mp.NewProcess(heartbeat, filepath.Join(dir, "beats"))
	d.Daemon = true
	w := mp.NewProcess(waitForFile, filepath.Join(dir, "release"), filepath.Join(dir, "worker"))
	for _, p := range []*mp.Process{d, w} {
		if err := p.Start(); err != nil {
			return err
		}
	}
	// Let the worker finish only once the daemon has beaten, so the daemon
	// is certainly running when Shutdown comes.
	for {
		if _, err := os.Stat(filepath.Join(dir, "beats")); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	writeFile(filepath.Join(dir, "release"), "")
	mp.Shutdown()
	dc, dok := d.ExitCode()
	wc, wok := w.ExitCode()
	return writeFile(filepath.Join(dir, "codes"), fmt.Sprintf("%d %v %d %v %d", dc, dok, wc, wok, len(mp.ActiveChildren())))
}

func init() { mp.Register(heartbeat, waitForFile, shutdownScenario) }

func TestShutdownTerminatesDaemonsAndJoinsOthers(t *testing.T) {
	dir := t.TempDir()
	p := mp.NewProcess(shutdownScenario, dir)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "worker")); got != "done" {
		t.Fatalf("non-daemonic child did not finish: %q", got)
	}
	want := fmt.Sprintf("%d true 0 true 0", -int(syscall.SIGTERM))
	if got := readFile(t, filepath.Join(dir, "codes")); got != want {
		t.Fatalf("exit codes (daemon, worker, active left) = %q, want %q", got, want)
	}
}

func TestThread(t *testing.T) {
	var got []int
	th := mp.NewThread(func(xs ...int) { got = append(got, xs...) }, 1, 2, 3)
	if !strings.HasPrefix(th.Name, "Thread-") {
		t.Fatalf("default name %q", th.Name)
	}
	if err := th.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, th); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[2] != 3 {
		t.Fatalf("thread saw %v", got)
	}
	if code, exited := th.ExitCode(); code != 0 || !exited || th.IsAlive() || th.Pid() != os.Getpid() {
		t.Fatalf("after Join: code %d exited %v alive %v pid %d", code, exited, th.IsAlive(), th.Pid())
	}
	if err := th.Start(); !errors.Is(err, mp.ErrAlreadyStarted) {
		t.Fatalf("second Start = %v", err)
	}
}

func TestThreadFailureAndPanic(t *testing.T) {
	th := mp.NewThread(fail, "no")
	th.Start()
	var pe *mp.ProcessError
	if err := join(t, th); !errors.As(err, &pe) || pe.Message != "no" || pe.ExitCode != 1 {
		t.Fatalf("Join = %v", err)
	}
	th = mp.NewThread(panicky, "oops")
	th.Start()
	if err := join(t, th); !errors.As(err, &pe) || !pe.Panicked || !strings.Contains(pe.Stack, "panicky") {
		t.Fatalf("Join = %v", err)
	}
	if code, _ := th.ExitCode(); code != 1 {
		t.Fatalf("ExitCode = %d", code)
	}
	if err := mp.NewThread(fail).Start(); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("Start with missing argument = %v", err)
	}
}

func TestThreadTerminate(t *testing.T) {
	th := mp.NewThread(func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if err := th.Join(context.Background()); !errors.Is(err, mp.ErrNotStarted) {
		t.Fatalf("Join before Start = %v", err)
	}
	if err := th.Start(); err != nil {
		t.Fatal(err)
	}
	if err := th.Terminate(); err != nil {
		t.Fatal(err)
	}
	var pe *mp.ProcessError
	if err := join(t, th); !errors.As(err, &pe) || pe.Message != context.Canceled.Error() {
		t.Fatalf("Join = %v", err)
	}

	release := make(chan struct{})
	th = mp.NewThread(func() { <-release })
	th.Start()
	if err := th.Terminate(); !errors.Is(err, mp.ErrNotSupported) {
		t.Fatalf("Terminate of a context-less thread = %v", err)
	}
	close(release)
	join(t, th)
	if err := th.Terminate(); err != nil {
		t.Fatalf("Terminate of a finished thread = %v", err)
	}
}

type counterThread struct{ N *int }

func (c counterThread) Run() { *c.N++ }

func TestThreadRunType(t *testing.T) {
	n := 0
	th := mp.NewThread(counterThread{N: &n})
	th.Start()
	if err := join(t, th); err != nil || n != 1 {
		t.Fatalf("Join = %v, n = %d", err, n)
	}
}

package spawn_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/spawn"
	"github.com/multiproc/mp/internal/supervise"
)

// TestMain doubles as the child: it echoes one frame back on the control
// socket, then exits with the status the frame names, or blocks if it says
// "block".
func TestMain(m *testing.M) {
	inh, isChild, err := spawn.ChildFiles()
	if err != nil {
		os.Exit(100)
	}
	if isChild {
		if _, set := os.LookupEnv(spawn.EnvMarker); set {
			os.Exit(101) // the marker must not leak to grandchildren
		}
		frame, err := spawn.ReadFrame(inh.Ctl)
		if err != nil {
			os.Exit(102)
		}
		if string(frame) == "helper" || string(frame) == "helper-setsid" {
			// A program the library did not start, in a session of its
			// own or not: its pid is the reply.
			cmd := exec.Command("sleep", "1000")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: string(frame) == "helper-setsid"}
			if cmd.Start() != nil {
				os.Exit(103)
			}
			spawn.WriteFrame(inh.Ctl, []byte(strconv.Itoa(cmd.Process.Pid)))
			select {}
		}
		spawn.WriteFrame(inh.Ctl, frame)
		if string(frame) == "block" {
			select {}
		}
		os.Exit(len(frame))
	}
	os.Exit(m.Run())
}

func start(t *testing.T, msg string) *spawn.Child {
	t.Helper()
	c, err := spawn.Start(spawn.Request{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill(); c.Wait(); c.Ctl.Close() })
	if err := spawn.WriteFrame(c.Ctl, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	echo, err := spawn.ReadFrame(c.Ctl)
	if err != nil || string(echo) != msg {
		t.Fatalf("echo = %q, %v", echo, err)
	}
	return c
}

func TestStartWaitStatus(t *testing.T) {
	c := start(t, "seven")
	st, err := c.Wait()
	if err != nil || st.Code != 5 || st.Signaled() {
		t.Fatalf("Wait = %v, %v; want exit status 5", st, err)
	}
	// Wait again, and concurrently: same answer.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := c.Wait(); err != nil || st.Code != 5 {
				t.Errorf("repeated Wait = %v, %v", st, err)
			}
		}()
	}
	wg.Wait()
	if !c.Exited() {
		t.Fatal("Exited() false after Wait")
	}
	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("signal after reaping: %v", err)
	}
}

func TestSignal(t *testing.T) {
	c := start(t, "block")
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := c.Wait()
	if err != nil || st.Signal() != syscall.SIGTERM || st.String() != "killed by SIGTERM" {
		t.Fatalf("Wait = %v, %v", st, err)
	}
}

func TestExitHooks(t *testing.T) {
	type exit struct{ pid, code int }
	got := make(chan exit, 1)
	remove := supervise.OnExit(func(pid int, st spawn.Status) { got <- exit{pid, st.Code} })
	defer remove()
	c := start(t, "abc")
	done := make(chan spawn.Status, 1)
	supervise.Watch(c, func(st spawn.Status, err error) {
		if err != nil {
			t.Error(err)
		}
		done <- st
	})
	// The hook has run by the time the watcher's callback runs.
	st := <-done
	select {
	case e := <-got:
		if e.pid != c.Pid || e.code != 3 || st.Code != 3 {
			t.Fatalf("hook saw %+v, callback %v; want pid %d status 3", e, st, c.Pid)
		}
	default:
		t.Fatal("exit hook did not run before the callback")
	}
	if n := supervise.Live(); n != 0 {
		t.Fatalf("Live() = %d after the only child exited", n)
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	for _, msg := range []string{"", "x", strings.Repeat("y", 3<<20)} {
		if err := spawn.WriteFrame(&buf, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"", "x", strings.Repeat("y", 3<<20)} {
		got, err := spawn.ReadFrame(&buf)
		if err != nil || string(got) != want {
			t.Fatalf("ReadFrame = %d bytes, %v; want %d bytes", len(got), err, len(want))
		}
	}
	if _, err := spawn.ReadFrame(&buf); err != io.EOF {
		t.Fatalf("ReadFrame at the end = %v, want io.EOF", err)
	}
	// A length over the limit is refused before anything is allocated.
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], spawn.MaxFrame+1)
	if _, err := spawn.ReadFrame(bytes.NewReader(hdr[:])); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized frame: %v", err)
	}
	// A frame that claims more than arrives is truncated, not a hang.
	binary.LittleEndian.PutUint32(hdr[:], 1<<29)
	if _, err := spawn.ReadFrame(io.MultiReader(bytes.NewReader(hdr[:]), strings.NewReader("short"))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: %v", err)
	}
	if _, err := spawn.ReadFrame(strings.NewReader("ab")); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated header: %v", err)
	}
}

// helper starts a child that runs sleep and returns the child and a pidfd
// on the sleep.
func helper(t *testing.T, setsid bool) (*spawn.Child, int) {
	t.Helper()
	c, err := spawn.Start(spawn.Request{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Kill(); c.Wait(); c.Ctl.Close() })
	msg := "helper"
	if setsid {
		msg = "helper-setsid"
	}
	if err := spawn.WriteFrame(c.Ctl, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	reply, err := spawn.ReadFrame(c.Ctl)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(reply))
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return c, fd
}

func awaitGone(t *testing.T, pidfd int) {
	t.Helper()
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 60000)
		if err == unix.EINTR {
			continue
		}
		if n == 0 {
			t.Fatal("helper still alive a minute after its parent was killed")
		}
		return
	}
}

// Without cgroups: the group kill on death reaches a helper in the child's
// group, and Kill finds one that left it through /proc.
func TestHelpersDieWithoutCgroups(t *testing.T) {
	spawn.DisableCgroups()
	c, fd := helper(t, false)
	unix.Kill(c.Pid, unix.SIGKILL) // from outside
	c.Wait()
	awaitGone(t, fd)

	c, fd = helper(t, true)
	c.Kill()
	c.Wait()
	awaitGone(t, fd)
}

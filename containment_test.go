package mp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp"
	"github.com/multiproc/mp/internal/spawn"
)

// A scenario is a whole program: the test binary re-executed by os/exec (not
// by this library), so that it is the root of a tree of its own, with the
// file descriptors, environment and ending the test gives it.
// TestScenarioHelper runs it; it does nothing in a normal test run.

const scenarioEnv = "MP_TEST_SCENARIO"

var scenarios = map[string]func(dir string) error{}

func TestScenarioHelper(t *testing.T) {
	name := os.Getenv(scenarioEnv)
	if name == "" {
		t.Skip("run by other tests as a program of its own")
	}
	dir := os.Getenv("MP_TEST_DIR")
	err := scenarios[name](dir)
	res := "ok"
	if err != nil {
		res = err.Error()
	}
	os.WriteFile(filepath.Join(dir, "result"), []byte(res), 0o644)
	// Exit here: the scenario decides whether Shutdown was called.
	os.Exit(0)
}

// runScenario runs the named scenario as a program of its own and returns
// what it wrote as its result and its stderr.
func runScenario(t *testing.T, name, dir string, setup func(*exec.Cmd)) (result, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScenarioHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), scenarioEnv+"="+name, "MP_TEST_DIR="+dir)
	errFile, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	if setup != nil {
		setup(cmd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatalf("scenario %s did not end within a minute", name)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "result"))
	e, _ := os.ReadFile(filepath.Join(dir, "stderr"))
	return string(b), string(e)
}

// awaitContent waits up to a minute for path to have content and returns it.
func awaitContent(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s did not appear within a minute", path)
	return ""
}

// printALot writes to stdout and stderr as a careless child would, and
// records what its descriptors 0-2 are.
func printALot(out string) error {
	for i := 0; i < 200; i++ {
		fmt.Println("child output line", i, strings.Repeat("x", 100))
		fmt.Fprintln(os.Stderr, "child error line", i)
	}
	var targets []string
	for fd := 0; fd <= 2; fd++ {
		l, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		if err != nil {
			l = "closed"
		}
		targets = append(targets, l)
	}
	return writeFile(out, strings.Join(targets, " "))
}

func init() {
	mp.Register(printALot)
	scenarios["closed stdio"] = func(dir string) error {
		for _, fd := range strings.Split(os.Getenv("MP_TEST_CLOSE"), ",") {
			[]*os.File{os.Stdin, os.Stdout, os.Stderr}[fd[0]-'0'].Close()
		}
		defer mp.Shutdown()
		v, err := mp.NewValue[int64](0) // creates the arena
		if err != nil {
			return err
		}
		// Not even in this process may a library descriptor sit where the
		// runtime writes a panic.
		for fd := 0; fd <= 2; fd++ {
			if l, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); strings.Contains(l, "multiproc") {
				return fmt.Errorf("fd %d is %s", fd, l)
			}
		}
		for i := 0; i < 3; i++ {
			p := mp.NewProcess(printALot, filepath.Join(dir, "fds"))
			if err := p.Start(); err != nil {
				return err
			}
			if err := p.Join(context.Background()); err != nil {
				return err
			}
		}
		// The arena must be intact: allocate, and use what was made before.
		for i := 0; i < 100; i++ {
			l, err := mp.NewLock()
			if err != nil {
				return err
			}
			_ = l
		}
		v.Store(7)
		if got := v.Load(); got != 7 {
			return fmt.Errorf("value = %d", got)
		}
		return nil
	}
}

func TestClosedStdioReachesChildrenAsDevNull(t *testing.T) {
	// Closing stdout and stderr (as daemons do) put the arena on fd 1;
	// closing all three, on fd 0.
	for _, closed := range []string{"1,2", "0,1,2", "1"} {
		t.Run(closed, func(t *testing.T) {
			dir := t.TempDir()
			res, stderr := runScenario(t, "closed stdio", dir, func(c *exec.Cmd) {
				c.Env = append(c.Env, "MP_TEST_CLOSE="+closed)
			})
			if res != "ok" {
				t.Fatalf("scenario: %q\nstderr:\n%s", res, stderr)
			}
			want := "/dev/null /dev/null /dev/null"
			if closed == "1" {
				want = "/dev/null /dev/null " + filepath.Join(dir, "stderr")
			}
			if got := readFile(t, filepath.Join(dir, "fds")); got != want {
				t.Fatalf("child's fds 0-2 are %q, want %q", got, want)
			}
		})
	}
}

// listFds records what the child has open.
func listFds(out string) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	var lines []string
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			lines = append(lines, e.Name()+" "+l)
		}
	}
	return writeFile(out, strings.Join(lines, "\n"))
}

func init() { mp.Register(listFds) }

func TestChildInheritsOnlyItsOwnDescriptors(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := writeFile(secret, "hunter2"); err != nil {
		t.Fatal(err)
	}
	// As a careless program or a service manager would: no close-on-exec.
	fd, err := syscall.Open(secret, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	dup, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(dup)
	out := filepath.Join(dir, "fds")
	p := mp.NewProcess(listFds, out)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, out)
	if strings.Contains(got, secret) {
		t.Fatalf("the child inherited the parent's secret file (fds %d, %d):\n%s", fd, dup, got)
	}
	if !strings.Contains(got, "memfd:multiproc-arena") {
		t.Fatalf("the child does not have the arena:\n%s", got)
	}
}

// cmdline records the child's /proc/self/cmdline.
func cmdline(out string) error {
	b, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		return err
	}
	return writeFile(out, string(b))
}

func init() { mp.Register(cmdline) }

func TestChildCommandLineHoldsNoParentArguments(t *testing.T) {
	out := filepath.Join(t.TempDir(), "cmdline")
	p := mp.NewProcess(cmdline, out)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	// The test binary runs with -test.* flags (a program's secrets, in
	// general): none of them may reach the child's command line.
	if got, want := readFile(t, out), os.Args[0]+" "+p.Name+"\x00"; got != want {
		t.Fatalf("child's cmdline = %q, want %q", got, want)
	}
}

// addOne adds 1 to a shared value.
func addOne(v *mp.Value[int64]) { v.Add(1) }

func init() {
	mp.Register(addOne)
	scenarios["stray marker"] = func(dir string) error {
		if _, set := os.LookupEnv("MULTIPROC_CHILD"); set {
			return errors.New("MULTIPROC_CHILD is still set in the program")
		}
		defer mp.Shutdown()
		v, err := mp.NewValue[int64](0)
		if err != nil {
			return err
		}
		for i := 0; i < 2; i++ {
			p := mp.NewProcess(addOne, v)
			if err := p.Start(); err != nil {
				return err
			}
			if err := p.Join(context.Background()); err != nil {
				return err
			}
		}
		if got := v.Load(); got != 2 {
			return fmt.Errorf("children attached elsewhere: shared value is %d, want 2", got)
		}
		return nil
	}
}

func TestStrayChildMarkerIsIgnored(t *testing.T) {
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sock := os.NewFile(uintptr(pair[0]), "sock")
	defer sock.Close()
	defer unix.Close(pair[1])
	for _, tc := range []struct {
		name   string
		marker string
		files  []*os.File
	}{
		{"old format", "v1:3:4", nil},
		{"garbage", "yes", nil},
		{"empty", "", nil},
		{"old format over files", "v1:3:4", []*os.File{other, other}},
		{"current format naming init", "v2;ppid=1;fds=3,4", []*os.File{other, other}},
		// A socket the program's own parent made, but the parent is not
		// this library: it names another process.
		{"current format over a socket", "v2;ppid=2;fds=3,4", []*os.File{sock, other}},
		{"overlong", "v2;ppid=" + strings.Repeat("9", 40) + ";fds=3", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			res, stderr := runScenario(t, "stray marker", dir, func(c *exec.Cmd) {
				c.Env = append(c.Env, "MULTIPROC_CHILD="+tc.marker)
				c.ExtraFiles = tc.files
			})
			if res != "ok" {
				t.Fatalf("program with MULTIPROC_CHILD=%q: result %q\nstderr:\n%s", tc.marker, res, stderr)
			}
		})
	}
}

// startHelper starts `sleep` as a program the library did not start, in a
// session of its own if setsid, records its pid in dir/helper-<n>, and
// blocks: a worker that shells out.
func startHelper(dir string, setsid bool) error {
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid}
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "helper-"+strconv.Itoa(cmd.Process.Pid)), ""); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "pid-"+strconv.Itoa(os.Getpid())), "")
}

func runHelper(dir string, setsid bool) error {
	if err := startHelper(dir, setsid); err != nil {
		return err
	}
	select {}
}

// nestedHelper starts a child that runs a helper, and blocks.
func nestedHelper(dir string) error {
	if err := mp.NewProcess(runHelper, dir, false).Start(); err != nil {
		return err
	}
	if err := mp.NewProcess(runHelper, dir, true).Start(); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "pid-"+strconv.Itoa(os.Getpid())), ""); err != nil {
		return err
	}
	select {}
}

func init() {
	mp.Register(runHelper, nestedHelper)
	scenarios["root with nested helpers"] = func(dir string) error {
		if err := mp.NewProcess(nestedHelper, dir).Start(); err != nil {
			return err
		}
		select {} // until the test kills this root
	}
}

// pidfdsIn opens a pidfd on each process named by a file "<prefix><pid>"
// in dir, once there are want of them.
func pidfdsIn(t *testing.T, dir, prefix string, want int) map[int]int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ents, _ := os.ReadDir(dir)
		var pids []int
		for _, e := range ents {
			if s, ok := strings.CutPrefix(e.Name(), prefix); ok {
				pid, _ := strconv.Atoi(s)
				pids = append(pids, pid)
			}
		}
		if len(pids) == want {
			fds := map[int]int{}
			for _, pid := range pids {
				fd, err := unix.PidfdOpen(pid, 0)
				if err != nil {
					t.Fatalf("pidfd_open(%d): %v (gone before it was killed?)", pid, err)
				}
				fds[pid] = fd
			}
			return fds
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d %s files in a minute", len(pids), want, prefix)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func needCgroups(t *testing.T) {
	if !spawn.Cgroups() {
		t.Skip("this machine does not let the library create cgroup v2 directories: " +
			"a descendant that left its process group escapes an outside SIGKILL of its mp ancestor (see doc.go)")
	}
}

func TestOutsideKillOfChildTakesItsHelpers(t *testing.T) {
	for _, setsid := range []bool{false, true} {
		t.Run(fmt.Sprintf("setsid=%v", setsid), func(t *testing.T) {
			if setsid {
				needCgroups(t)
			}
			dir := t.TempDir()
			p := mp.NewProcess(runHelper, dir, setsid)
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			helpers := pidfdsIn(t, dir, "helper-", 1)
			for _, fd := range pidfdsIn(t, dir, "pid-", 1) {
				unix.Close(fd)
			}
			// As the OOM killer would: not through the library.
			if err := unix.Kill(p.Pid(), unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			var pe *mp.ProcessError
			if err := join(t, p); !errors.As(err, &pe) || pe.ExitCode != -int(syscall.SIGKILL) {
				t.Fatalf("Join = %v", err)
			}
			awaitGone(t, helpers)
		})
	}
}

func TestKillTakesHelpersThatLeftTheGroup(t *testing.T) {
	dir := t.TempDir()
	p := mp.NewProcess(runHelper, dir, true)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	helpers := pidfdsIn(t, dir, "helper-", 1)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	join(t, p)
	awaitGone(t, helpers)
}

func TestRootKilledTakesNestedHelpers(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScenarioHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), scenarioEnv+"=root with nested helpers", "MP_TEST_DIR="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child and its two children, and a helper of each grandchild (one
	// in a session of its own).
	procs := pidfdsIn(t, dir, "pid-", 3)
	helpers := pidfdsIn(t, dir, "helper-", 2)
	cmd.Process.Kill()
	cmd.Wait()
	awaitGone(t, procs)
	awaitGone(t, helpers)
	if !strings.Contains(stderr.String(), "ended while it was running") {
		t.Errorf("no child said why it died; stderr:\n%s", stderr.String())
	}
}

// ignoreTerm ignores SIGTERM, says it is ready, and runs forever.
func ignoreTerm(ready string) error {
	signal.Ignore(syscall.SIGTERM)
	if err := writeFile(ready, ""); err != nil {
		return err
	}
	select {}
}

// shutdownStubbornDaemon starts a daemon that ignores SIGTERM and shuts
// down; it records how the daemon ended.
func shutdownStubbornDaemon(dir string) error {
	mp.SetShutdownGrace(50 * time.Millisecond)
	d := mp.NewProcess(ignoreTerm, filepath.Join(dir, "ready"))
	d.Daemon = true
	if err := d.Start(); err != nil {
		return err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mp.Shutdown()
	code, exited := d.ExitCode()
	return writeFile(filepath.Join(dir, "code"), fmt.Sprint(code, exited))
}

func init() { mp.Register(ignoreTerm, shutdownStubbornDaemon) }

func TestShutdownKillsDaemonThatIgnoresTerm(t *testing.T) {
	dir := t.TempDir()
	p := mp.NewProcess(shutdownStubbornDaemon, dir)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, filepath.Join(dir, "code")), fmt.Sprint(-int(syscall.SIGKILL), true); got != want {
		t.Fatalf("daemon's exit code, exited = %s, want %s", got, want)
	}
}

func TestShutdownContextBoundsTheWait(t *testing.T) {
	p := mp.NewProcess(blockForever)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := mp.ShutdownContext(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ShutdownContext = %v", err)
	}
	if p.IsAlive() {
		t.Fatal("a child is still running after ShutdownContext gave up")
	}
	if code, _ := p.ExitCode(); code != -int(syscall.SIGTERM) {
		t.Fatalf("exit code %d, want SIGTERM's", code)
	}
}

func init() {
	scenarios["forgot Shutdown"] = func(dir string) error {
		running := filepath.Join(dir, "running")
		p := mp.NewProcess(markThenBlock, running)
		if err := p.Start(); err != nil {
			return err
		}
		// The child is running its function (not still starting up, when
		// it could not yet say anything) before main returns.
		for {
			if _, err := os.Stat(running); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := writeFile(filepath.Join(dir, "pid-"+strconv.Itoa(p.Pid())), ""); err != nil {
			return err
		}
		for { // until the test has a handle on the child
			if _, err := os.Stat(filepath.Join(dir, "go")); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		return nil // main returns, without mp.Shutdown
	}
}

// markThenBlock creates the file path, then blocks forever.
func markThenBlock(path string) error {
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		return err
	}
	select {}
}

func init() { mp.Register(markThenBlock) }

func TestForgettingShutdownIsLoud(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScenarioHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), scenarioEnv+"=forgot Shutdown", "MP_TEST_DIR="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := pidfdsIn(t, dir, "pid-", 1)
	writeFile(filepath.Join(dir, "go"), "")
	awaitGone(t, child) // no orphan
	cmd.Wait()
	if got := stderr.String(); !strings.Contains(got, "ended while it was running") || !strings.Contains(got, "mp.Shutdown") {
		t.Fatalf("the killed child did not say why; stderr:\n%s", got)
	}
}

// poolShellOut starts a helper from a pool task and returns the worker's
// pid.
func poolShellOut(dir string, setsid bool) (int, error) {
	return os.Getpid(), startHelper(dir, setsid)
}

func init() { mp.Register(poolShellOut) }

func TestPoolWorkerKilledFromOutsideTakesItsHelpers(t *testing.T) {
	for _, setsid := range []bool{false, true} {
		t.Run(fmt.Sprintf("setsid=%v", setsid), func(t *testing.T) {
			if setsid {
				needCgroups(t)
			}
			dir := t.TempDir()
			p, err := mp.NewPool(1)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			pid, err := mp.Apply[int](ctx, p, poolShellOut, dir, setsid)
			if err != nil {
				t.Fatal(err)
			}
			helpers := pidfdsIn(t, dir, "helper-", 1)
			unix.Kill(pid, unix.SIGKILL) // the OOM killer's way
			// Once the pool has reaped the worker, nothing of it is left
			// to signal: what it started must be gone by other means.
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
				if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the killed worker was not reaped within a minute")
				}
			}
			p.Terminate()
			awaitGone(t, helpers)
		})
	}
}

package mp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp"
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
	if got, want := readFile(t, out), os.Args[0]+"\x00"; got != want {
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

package mp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp"
)

// Targets run by the tests' child processes.

func noop() {}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }

func sum(path string, xs ...int) error {
	total := 0
	for _, x := range xs {
		total += x
	}
	return writeFile(path, strconv.Itoa(total))
}

func fail(msg string) error { return errors.New(msg) }

func panicky(msg string) { panic(msg) }

func exitWith(code int) { os.Exit(code) }

func blockForever() { select {} }

// n is the seeds' global: the child's change must not reach the parent.
var n = 100

func zeroGlobal(path string) error {
	n = 0
	return writeFile(path, strconv.Itoa(n))
}

// whoAmI records the child's view of itself and its parent.
func whoAmI(path string) error {
	me := mp.CurrentProcess()
	parent, ok := mp.ParentProcess()
	return writeFile(path, fmt.Sprintf("%s %d %v %s %d %v", me.Name, me.Pid, me.Daemon, parent.Name, parent.Pid, ok))
}

// nested starts a grandchild running whoAmI and waits for it.
func nested(path string) error {
	p := mp.NewProcess(whoAmI, path)
	if err := p.Start(); err != nil {
		return err
	}
	return p.Join(context.Background())
}

// tryChild attempts to start a child and returns what Start said.
func tryChild() error {
	return mp.NewProcess(noop).Start()
}

// treeRoot starts depth more generations below itself; every process of the
// tree writes its pid into dir and then blocks.
func treeRoot(dir string, width, depth int) error {
	if err := writeFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), ""); err != nil {
		return err
	}
	if depth > 0 {
		for i := 0; i < width; i++ {
			if err := mp.NewProcess(treeRoot, dir, width, depth-1).Start(); err != nil {
				return err
			}
		}
	}
	select {}
}

type greeter struct {
	Greeting string
	Path     string
	secret   string // unexported: does not travel
}

func (g *greeter) Run() error {
	return writeFile(g.Path, g.Greeting+"|"+g.secret+"|"+mp.CurrentProcess().Name)
}

func init() {
	mp.Register(noop, sum, fail, panicky, exitWith, blockForever, zeroGlobal, whoAmI, nested, tryChild, treeRoot, greeter{})
}

func unregistered() {}

func join(t *testing.T, r mp.Runner) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := r.Join(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Join did not return within a minute")
	}
	return err
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestProcessRunsFunctionWithArguments(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sum")
	p := mp.NewProcess(sum, out, 1, 2, 3, 4)
	if p.Pid() != 0 || p.IsAlive() {
		t.Fatalf("before Start: pid %d alive %v", p.Pid(), p.IsAlive())
	}
	if _, exited := p.ExitCode(); exited {
		t.Fatal("ExitCode reports exited before Start")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if p.Pid() <= 0 || p.Pid() == os.Getpid() {
		t.Fatalf("Pid() = %d", p.Pid())
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, out); got != "10" {
		t.Fatalf("child computed %q, want 10", got)
	}
	if code, exited := p.ExitCode(); code != 0 || !exited {
		t.Fatalf("ExitCode() = %d, %v", code, exited)
	}
	if p.IsAlive() {
		t.Fatal("alive after Join")
	}
}

func TestMemoryIsolation(t *testing.T) {
	out := filepath.Join(t.TempDir(), "n")
	p := mp.NewProcess(zeroGlobal, out)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, out); got != "0" {
		t.Fatalf("child saw n = %s, want 0", got)
	}
	if n != 100 {
		t.Fatalf("parent's n = %d, want 100", n)
	}
}

func TestRunType(t *testing.T) {
	out := filepath.Join(t.TempDir(), "greeting")
	p := mp.NewProcess(&greeter{Greeting: "hello", Path: out, secret: "x"})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	want := "hello||" + p.Name
	if got := readFile(t, out); got != want {
		t.Fatalf("child wrote %q, want %q", got, want)
	}
	if !strings.HasPrefix(p.Name, "greeter-") {
		t.Fatalf("default name %q, want greeter-N as Python names subclasses", p.Name)
	}
}

func TestChildErrorComesBack(t *testing.T) {
	p := mp.NewProcess(fail, "out of tickets")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := join(t, p)
	var pe *mp.ProcessError
	if !errors.As(err, &pe) {
		t.Fatalf("Join = %v, want *ProcessError", err)
	}
	if pe.Message != "out of tickets" || pe.ExitCode != 1 || pe.Panicked || pe.Pid != p.Pid() || pe.Name != p.Name {
		t.Fatalf("ProcessError = %+v", pe)
	}
	if code, _ := p.ExitCode(); code != 1 {
		t.Fatalf("ExitCode = %d, want 1", code)
	}
}

func TestChildPanicComesBackWithStack(t *testing.T) {
	p := mp.NewProcess(panicky, "kaboom")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	var pe *mp.ProcessError
	if err := join(t, p); !errors.As(err, &pe) {
		t.Fatalf("Join = %v, want *ProcessError", err)
	}
	if !pe.Panicked || pe.Message != "kaboom" || pe.ExitCode != 1 {
		t.Fatalf("ProcessError = %+v", pe)
	}
	if !strings.Contains(pe.Stack, "mp_test.panicky") {
		t.Fatalf("stack does not name the panicking function:\n%s", pe.Stack)
	}
	if !strings.Contains(pe.Error(), "panicked: kaboom") {
		t.Fatalf("Error() = %q", pe.Error())
	}
}

func TestChildOsExit(t *testing.T) {
	p := mp.NewProcess(exitWith, 3)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	var pe *mp.ProcessError
	if err := join(t, p); !errors.As(err, &pe) || pe.ExitCode != 3 || pe.Message != "" {
		t.Fatalf("Join = %#v", err)
	}
	if code, _ := p.ExitCode(); code != 3 {
		t.Fatalf("ExitCode = %d, want 3", code)
	}
}

func TestKillAndTerminate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		signal func(*mp.Process) error
		want   int
	}{
		{"Kill", (*mp.Process).Kill, -int(syscall.SIGKILL)},
		{"Terminate", (*mp.Process).Terminate, -int(syscall.SIGTERM)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mp.NewProcess(blockForever)
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			if !p.IsAlive() {
				t.Fatal("not alive after Start")
			}
			if err := tc.signal(p); err != nil {
				t.Fatal(err)
			}
			var pe *mp.ProcessError
			if err := join(t, p); !errors.As(err, &pe) || pe.ExitCode != tc.want {
				t.Fatalf("Join = %v, want exit code %d", err, tc.want)
			}
			// Signalling a finished process does nothing, and says nothing.
			if err := p.Terminate(); err != nil {
				t.Fatalf("Terminate after exit: %v", err)
			}
			if err := p.Kill(); err != nil {
				t.Fatalf("Kill after exit: %v", err)
			}
			if code, _ := p.ExitCode(); code != tc.want {
				t.Fatalf("ExitCode changed to %d", code)
			}
		})
	}
}

func TestBadInputIsAnErrorAtStart(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		p    *mp.Process
		want error
		text string
	}{
		{"unregistered", mp.NewProcess(unregistered), mp.ErrNotRegistered, "mp.Register(unregistered)"},
		{"closure", mp.NewProcess(func() {}), nil, "function literal"},
		{"not a function", mp.NewProcess(42), nil, "neither a function"},
		{"nil", mp.NewProcess(nil), mp.ErrBadArguments, ""},
		{"too few arguments", mp.NewProcess(fail), mp.ErrBadArguments, "takes 1 arguments, got 0"},
		{"too many arguments", mp.NewProcess(fail, "a", "b"), mp.ErrBadArguments, "got 2"},
		{"wrong type", mp.NewProcess(exitWith, "3"), mp.ErrBadArguments, "string is not assignable to parameter of type int"},
		{"wrong variadic type", mp.NewProcess(sum, "p", 1, 2.5), mp.ErrBadArguments, "argument 3"},
		{"arguments to Run type", mp.NewProcess(greeter{}, 1), mp.ErrBadArguments, "takes no arguments"},
		{"control: valid call", mp.NewProcess(sum, filepath.Join(dir, "sum"), 1), nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Start()
			if tc.want == nil && tc.text == "" {
				if err != nil {
					t.Fatal(err)
				}
				join(t, tc.p)
				return
			}
			if err == nil {
				join(t, tc.p)
				t.Fatal("Start succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Start = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Start = %q, want it to mention %q", err, tc.text)
			}
			if tc.p.Pid() != 0 || tc.p.IsAlive() {
				t.Fatal("a failed Start left a process")
			}
		})
	}
}

func takesAny(v any) {}

func init() { mp.Register(takesAny) }

func TestUnencodableArgument(t *testing.T) {
	for _, v := range []any{make(chan int), func() {}, struct{ F func() }{}} {
		err := mp.NewProcess(takesAny, v).Start()
		if !errors.Is(err, mp.ErrUnencodable) {
			t.Errorf("Start with %T = %v, want ErrUnencodable", v, err)
		}
	}
}

func TestStartTwiceAndJoinBeforeStart(t *testing.T) {
	p := mp.NewProcess(noop)
	if err := p.Join(context.Background()); !errors.Is(err, mp.ErrNotStarted) {
		t.Fatalf("Join before Start = %v", err)
	}
	if err := p.Terminate(); !errors.Is(err, mp.ErrNotStarted) {
		t.Fatalf("Terminate before Start = %v", err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); !errors.Is(err, mp.ErrAlreadyStarted) {
		t.Fatalf("second Start = %v", err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); !errors.Is(err, mp.ErrAlreadyStarted) {
		t.Fatalf("Start after Join = %v", err)
	}
}

func TestJoinHonoursContext(t *testing.T) {
	p := mp.NewProcess(blockForever)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { p.Kill(); join(t, p) }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Join(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Join = %v, want DeadlineExceeded", err)
	}
	if !p.IsAlive() {
		t.Fatal("a timed-out Join must leave the process running")
	}
}

func TestNamesAndParent(t *testing.T) {
	dir := t.TempDir()
	p := mp.NewProcess(nested, filepath.Join(dir, "who"))
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	var name, pname string
	var pid, ppid int
	var daemon, ok bool
	if _, err := fmt.Sscan(readFile(t, filepath.Join(dir, "who")), &name, &pid, &daemon, &pname, &ppid, &ok); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Name, "Process-") || name != p.Name+":1" {
		t.Fatalf("grandchild is %q, child %q: want the child's name + \":1\"", name, p.Name)
	}
	if pname != p.Name || ppid != p.Pid() || !ok || daemon {
		t.Fatalf("grandchild's parent is %q (%d, %v), want %q (%d)", pname, ppid, ok, p.Name, p.Pid())
	}
	if me := mp.CurrentProcess(); me.Name != "MainProcess" || me.Pid != os.Getpid() {
		t.Fatalf("CurrentProcess() = %+v", me)
	}
	if _, ok := mp.ParentProcess(); ok {
		t.Fatal("the root has a parent")
	}
}

func TestDaemonCannotHaveChildren(t *testing.T) {
	p := mp.NewProcess(tryChild)
	p.Daemon = true
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	var pe *mp.ProcessError
	if err := join(t, p); !errors.As(err, &pe) || !strings.Contains(pe.Message, mp.ErrDaemonic.Error()) {
		t.Fatalf("Join = %v, want the child's ErrDaemonic", err)
	}
}

func TestActiveChildren(t *testing.T) {
	a, b := mp.NewProcess(blockForever), mp.NewProcess(blockForever)
	for _, p := range []*mp.Process{a, b} {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	kids := mp.ActiveChildren()
	if len(kids) != 2 || kids[0] != a || kids[1] != b {
		t.Fatalf("ActiveChildren = %v, want [a b]", kids)
	}
	a.Kill()
	join(t, a)
	if kids := mp.ActiveChildren(); len(kids) != 1 || kids[0] != b {
		t.Fatalf("after a exits, ActiveChildren = %v", kids)
	}
	b.Kill()
	join(t, b)
	if kids := mp.ActiveChildren(); len(kids) != 0 {
		t.Fatalf("ActiveChildren = %v, want none", kids)
	}
}

func TestManyShortLivedChildren(t *testing.T) {
	for i := 0; i < 100; i++ {
		p := mp.NewProcess(noop)
		if err := p.Start(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		if err := join(t, p); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		if code, _ := p.ExitCode(); code != 0 {
			t.Fatalf("child %d exit code %d", i, code)
		}
	}
}

func TestManyChildrenTerminatedRightAfterStart(t *testing.T) {
	ps := make([]*mp.Process, 100)
	for i := range ps {
		ps[i] = mp.NewProcess(blockForever)
		if err := ps[i].Start(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		if err := ps[i].Terminate(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
	}
	for i, p := range ps {
		join(t, p)
		if code, _ := p.ExitCode(); code != -int(syscall.SIGTERM) {
			t.Errorf("child %d exit code %d, want %d", i, code, -int(syscall.SIGTERM))
		}
	}
}

// pidfdsOf opens a pidfd on every process listed in dir (their names are
// pids), once there are want of them.
func pidfdsOf(t *testing.T, dir string, want int) map[int]int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ents, _ := os.ReadDir(dir)
		if len(ents) == want {
			fds := map[int]int{}
			for _, e := range ents {
				pid, _ := strconv.Atoi(e.Name())
				fd, err := unix.PidfdOpen(pid, 0)
				if err != nil {
					t.Fatalf("pidfd_open(%d): %v (exited before it was killed?)", pid, err)
				}
				fds[pid] = fd
			}
			return fds
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d processes of the tree reported in a minute", len(ents), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// awaitGone waits until every process is gone and returns how long that took.
func awaitGone(t *testing.T, fds map[int]int) time.Duration {
	t.Helper()
	start := time.Now()
	for pid, fd := range fds {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(pfd, int(time.Minute/time.Millisecond))
			if err == unix.EINTR {
				continue
			}
			if n == 0 {
				t.Fatalf("process %d still alive a minute after its ancestor died", pid)
			}
			break
		}
		unix.Close(fd)
	}
	return time.Since(start)
}

func TestKillTakesTheWholeTree(t *testing.T) {
	dir := t.TempDir()
	p := mp.NewProcess(treeRoot, dir, 2, 2) // 1 + 2 + 4 processes
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	fds := pidfdsOf(t, dir, 7)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	join(t, p)
	t.Logf("whole tree gone %v after Kill", awaitGone(t, fds))
}

// killSelfWithTree starts a tree of six processes below itself, waits until
// the test has a handle on each of them (the go file exists), then SIGKILLs
// itself: the parent dies without any chance to clean up.
func killSelfWithTree(dir, goFile string) error {
	for i := 0; i < 2; i++ {
		if err := mp.NewProcess(treeRoot, dir, 2, 1).Start(); err != nil {
			return err
		}
	}
	for {
		if _, err := os.Stat(goFile); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

func init() { mp.Register(killSelfWithTree) }

func TestParentKilledTakesDescendants(t *testing.T) {
	dir, goFile := t.TempDir(), filepath.Join(t.TempDir(), "go")
	p := mp.NewProcess(killSelfWithTree, dir, goFile)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	fds := pidfdsOf(t, dir, 6)
	if err := writeFile(goFile, ""); err != nil {
		t.Fatal(err)
	}
	var pe *mp.ProcessError
	if err := join(t, p); !errors.As(err, &pe) || pe.ExitCode != -int(syscall.SIGKILL) {
		t.Fatalf("Join = %v, want killed by SIGKILL", err)
	}
	t.Logf("%d descendants gone %v after their ancestor was SIGKILLed", len(fds), awaitGone(t, fds))
}

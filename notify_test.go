package mp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// The stop of a tree is tested on real programs: the test binary run as a
// scenario (see containment_test.go), sent SIGINT or SIGTERM by the test
// while its work is under way, as a terminal or a service manager would.

func init() {
	mp.Register(stopTask, stopLevel, stubborn, waitCancel)
	scenarios["stop pool map"] = stopPoolMap
	scenarios["stop tree"] = stopTree
	scenarios["stop stubborn child"] = stopStubborn
}

// stopTask is a Map item: items below 4 return at once; the others say
// they run, wait for their context, and return a value that shows they
// saw it.
func stopTask(ctx context.Context, dir string, i int) (int, error) {
	if i < 4 {
		return i * i, writeFile(filepath.Join(dir, "pid-"+strconv.Itoa(i)), strconv.Itoa(os.Getpid()))
	}
	if err := writeFile(filepath.Join(dir, "running-"+strconv.Itoa(i)), strconv.Itoa(os.Getpid())); err != nil {
		return 0, err
	}
	<-ctx.Done()
	return 1000 + i, nil
}

// stopPoolMap maps stopTask over 20 items with two workers, one item a
// task, and writes what Map returned before it lets Shutdown end it.
func stopPoolMap(dir string) error {
	ctx, stop := mp.NotifyContext(context.Background())
	defer stop()
	mp.SetShutdownGrace(time.Minute) // the running tasks return when cancelled
	pool, err := mp.NewPool(2)
	if err != nil {
		return err
	}
	items := make([]int, 20)
	args := make([][]any, 20)
	for i := range items {
		items[i] = i
		args[i] = []any{dir, i}
	}
	res, err := mp.Starmap[int](ctx, pool, stopTask, args, mp.WithChunkSize(1))
	var me *mp.MapError
	if !errors.As(err, &me) {
		return fmt.Errorf("Map returned %v, want a *MapError", err)
	}
	pool.Close()
	pool.Join(context.Background())
	writeFile(filepath.Join(dir, "result"), fmt.Sprintf("%v;%v;%v", res, me.NotRun(), errors.Is(err, mp.ErrStopped)))
	mp.Shutdown()
	return errors.New("Shutdown returned after a signal")
}

// stopLevel is one level of a tree three deep: it says it runs, starts
// the next level, waits for its context, records that, and waits for its
// child.
func stopLevel(ctx context.Context, dir string, level int) error {
	if err := writeFile(filepath.Join(dir, "pid-"+strconv.Itoa(level)), strconv.Itoa(os.Getpid())); err != nil {
		return err
	}
	var child *mp.Process
	if level < 3 {
		child = mp.NewProcess(stopLevel, dir, level+1)
		if err := child.Start(); err != nil {
			return err
		}
	}
	<-ctx.Done()
	writeFile(filepath.Join(dir, "cleaned-"+strconv.Itoa(level)), context.Cause(ctx).Error())
	if child != nil {
		child.Join(context.Background())
		code, _ := child.ExitCode()
		writeFile(filepath.Join(dir, "child-of-"+strconv.Itoa(level)), strconv.Itoa(code))
	}
	return nil
}

func stopTree(dir string) error {
	ctx, stop := mp.NotifyContext(context.Background())
	defer stop()
	mp.SetShutdownGrace(time.Minute)
	p := mp.NewProcess(stopLevel, dir, 1)
	if err := p.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	p.Join(context.Background())
	code, _ := p.ExitCode()
	writeFile(filepath.Join(dir, "result"), strconv.Itoa(code))
	mp.Shutdown()
	return errors.New("Shutdown returned after a signal")
}

// stubborn sees its context cancelled and carries on regardless.
func stubborn(ctx context.Context, dir string) error {
	if err := writeFile(filepath.Join(dir, "pid-stubborn"), strconv.Itoa(os.Getpid())); err != nil {
		return err
	}
	<-ctx.Done()
	writeFile(filepath.Join(dir, "cancelled"), "yes")
	time.Sleep(time.Hour)
	return nil
}

// stopStubborn runs stubborn with the grace period MP_TEST_GRACE.
func stopStubborn(dir string) error {
	grace, err := time.ParseDuration(os.Getenv("MP_TEST_GRACE"))
	if err != nil {
		return err
	}
	mp.SetShutdownGrace(grace)
	_, stop := mp.NotifyContext(context.Background())
	defer stop()
	p := mp.NewProcess(stubborn, dir)
	if err := p.Start(); err != nil {
		return err
	}
	p.Join(context.Background())
	code, _ := p.ExitCode()
	writeFile(filepath.Join(dir, "result"), strconv.Itoa(code))
	mp.Shutdown()
	return errors.New("Shutdown returned after a signal")
}

// program is a scenario running as a program of its own.
type program struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	err  error
}

func startProgram(t *testing.T, name string, env ...string) *program {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScenarioHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), append(env, scenarioEnv+"="+name, "MP_TEST_DIR="+dir, "GORACE=atexit_sleep_ms=0")...)
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr := &program{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() {
		pr.err = cmd.Wait()
		close(pr.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-pr.done
	})
	return pr
}

// wait waits for the program to exit, up to a minute, and returns its
// exit status.
func (pr *program) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-pr.done:
	case <-time.After(time.Minute):
		t.Fatal("the program did not exit within a minute of the signal")
	}
	var ee *exec.ExitError
	if pr.err != nil && !errors.As(pr.err, &ee) {
		t.Fatal(pr.err)
	}
	return pr.cmd.ProcessState.ExitCode()
}

// quiet fails t if the program wrote anything on stderr: no process of the
// tree complains of being stopped.
func (pr *program) quiet(t *testing.T) {
	t.Helper()
	if b, _ := os.ReadFile(filepath.Join(pr.dir, "stderr")); len(b) > 0 {
		t.Errorf("the program wrote on stderr:\n%s", b)
	}
}

func (pr *program) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := pr.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// pidsIn reads the pids the files named prefix* in dir hold.
func pidsIn(t *testing.T, dir, prefix string) []int {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, prefix+"*"))
	var pids []int
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if !slices.Contains(pids, pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// running reports whether pid is a live process (not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func checkGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("process %d is still running", pid)
		}
	}
}

var stopSignals = []struct {
	sig  syscall.Signal
	code int
}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}}

// TestStopPoolMap: a signal in the middle of a Map. The items that had
// finished keep their results, the running ones see their contexts
// cancelled and their results are delivered too, the queued ones never
// run (MapError.NotRun), no worker is left, and the program exits with
// the conventional status.
func TestStopPoolMap(t *testing.T) {
	for _, s := range stopSignals {
		t.Run(s.sig.String(), func(t *testing.T) {
			pr := startProgram(t, "stop pool map")
			// Both workers are then in a task that waits for its
			// context: nothing else can start.
			running := awaitRunning(t, pr.dir, 2)
			pr.signal(t, s.sig)
			if code := pr.wait(t); code != s.code {
				t.Errorf("exit status %d, want %d", code, s.code)
			}
			pr.quiet(t)
			res := make([]int, 20)
			var notRun []int
			for i := range res {
				switch {
				case i < 4:
					res[i] = i * i
				case slices.Contains(running, i):
					res[i] = 1000 + i
				default:
					notRun = append(notRun, i)
				}
			}
			want := fmt.Sprintf("%v;%v;true", res, notRun)
			if got := readFile(t, filepath.Join(pr.dir, "result")); got != want {
				t.Errorf("Map returned %s, want %s", got, want)
			}
			pids := append(pidsIn(t, pr.dir, "pid-"), pidsIn(t, pr.dir, "running-")...)
			if len(pids) == 0 {
				t.Fatal("no worker pids")
			}
			checkGone(t, pids)
		})
	}
}

// awaitRunning waits up to a minute for n files running-<i> in dir, and
// returns the items i.
func awaitRunning(t *testing.T, dir string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		names, _ := filepath.Glob(filepath.Join(dir, "running-*"))
		if len(names) >= n {
			var items []int
			for _, name := range names {
				awaitContent(t, name) // written, not only created
				i, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(name), "running-"))
				items = append(items, i)
			}
			slices.Sort(items)
			return items
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tasks running after a minute, want %d", len(names), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestStopTree: a signal to a tree three levels deep reaches every level's
// context; each level cleans up, waits for its child, and exits as
// terminated; nothing is left.
func TestStopTree(t *testing.T) {
	for _, s := range stopSignals {
		t.Run(s.sig.String(), func(t *testing.T) {
			pr := startProgram(t, "stop tree")
			awaitContent(t, filepath.Join(pr.dir, "pid-3"))
			pr.signal(t, s.sig)
			if code := pr.wait(t); code != s.code {
				t.Errorf("exit status %d, want %d", code, s.code)
			}
			pr.quiet(t)
			if got := readFile(t, filepath.Join(pr.dir, "result")); got != "-15" {
				t.Errorf("the first level's exit code is %s, want -15", got)
			}
			for level := 1; level <= 3; level++ {
				// The stop passes SIGTERM down, whatever the root got.
				cause := "mp: terminated signal received"
				if got := readFile(t, filepath.Join(pr.dir, "cleaned-"+strconv.Itoa(level))); got != cause {
					t.Errorf("level %d's context ended with %q, want %q", level, got, cause)
				}
			}
			for level := 1; level <= 2; level++ {
				if got := readFile(t, filepath.Join(pr.dir, "child-of-"+strconv.Itoa(level))); got != "-15" {
					t.Errorf("level %d's child exited with %s, want -15", level, got)
				}
			}
			checkGone(t, pidsIn(t, pr.dir, "pid-"))
			if t.Failed() {
				names, _ := filepath.Glob(filepath.Join(pr.dir, "*"))
				for _, n := range names {
					b, _ := os.ReadFile(n)
					t.Logf("%s: %s", filepath.Base(n), b)
				}
			}
		})
	}
}

// TestStopKillsStubbornChild: a child that ignores its cancelled context
// is killed with SIGKILL once the grace period is over.
func TestStopKillsStubbornChild(t *testing.T) {
	pr := startProgram(t, "stop stubborn child", "MP_TEST_GRACE=500ms")
	awaitContent(t, filepath.Join(pr.dir, "pid-stubborn"))
	start := time.Now()
	pr.signal(t, syscall.SIGTERM)
	if code := pr.wait(t); code != 143 {
		t.Errorf("exit status %d, want 143", code)
	}
	// The child would sleep an hour: a minute is the generous bound.
	t.Logf("the program ended %v after the signal (grace 500ms)", time.Since(start))
	if got := readFile(t, filepath.Join(pr.dir, "cancelled")); got != "yes" {
		t.Error("the child did not see its context cancelled")
	}
	if got := readFile(t, filepath.Join(pr.dir, "result")); got != "-9" {
		t.Errorf("the stubborn child's exit code is %s, want -9", got)
	}
	checkGone(t, pidsIn(t, pr.dir, "pid-"))
}

// TestStopSecondSignal: a second signal during the grace period kills the
// tree at once, without waiting for the grace (an hour here).
func TestStopSecondSignal(t *testing.T) {
	pr := startProgram(t, "stop stubborn child", "MP_TEST_GRACE=1h")
	awaitContent(t, filepath.Join(pr.dir, "pid-stubborn"))
	pr.signal(t, syscall.SIGINT)
	awaitContent(t, filepath.Join(pr.dir, "cancelled"))
	pr.signal(t, syscall.SIGINT)
	if code := pr.wait(t); code != 130 {
		t.Errorf("exit status %d, want 130", code)
	}
	pids := pidsIn(t, pr.dir, "pid-")
	deadline := time.Now().Add(time.Minute)
	for _, pid := range pids {
		for running(pid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	checkGone(t, pids)
}

// waitCancel waits for its context and records its cause.
func waitCancel(ctx context.Context, dir string) error {
	if err := writeFile(filepath.Join(dir, "ready"), "yes"); err != nil {
		return err
	}
	<-ctx.Done()
	return writeFile(filepath.Join(dir, "cancelled"), context.Cause(ctx).Error())
}

// TestTerminateCancelsContext: Terminate reaches a function that takes a
// context as cancellation; the child ends as terminated.
func TestTerminateCancelsContext(t *testing.T) {
	dir := t.TempDir()
	p := mp.NewProcess(waitCancel, dir)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	awaitContent(t, filepath.Join(dir, "ready"))
	if err := p.Terminate(); err != nil {
		t.Fatal(err)
	}
	err := p.Join(context.Background())
	var pe *mp.ProcessError
	if !errors.As(err, &pe) || pe.ExitCode != -15 {
		t.Fatalf("Join: %v, want a *ProcessError with exit code -15", err)
	}
	if got := readFile(t, filepath.Join(dir, "cancelled")); got != "mp: terminated signal received" {
		t.Errorf("the context ended with %q", got)
	}
}

// TestTerminateStubbornKilledAfterGrace: a function that ignores its
// cancelled context is killed once the grace period it was started with
// is over.
func TestTerminateStubbornKilledAfterGrace(t *testing.T) {
	defer mp.SetShutdownGrace(mp.SetShutdownGrace(200 * time.Millisecond))
	dir := t.TempDir()
	p := mp.NewProcess(stubborn, dir)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	awaitContent(t, filepath.Join(dir, "pid-stubborn"))
	p.Terminate()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Join(ctx); errors.Is(err, context.DeadlineExceeded) {
		p.Kill()
		t.Fatal("the child was not killed within a minute of the end of its grace period")
	}
	if code, _ := p.ExitCode(); code != -9 {
		t.Errorf("exit code %d, want -9", code)
	}
	if got := readFile(t, filepath.Join(dir, "cancelled")); got != "yes" {
		t.Error("the child did not see its context cancelled")
	}
}

// TestBadValueMessages: a value out of range is named, with what is wrong
// with it, not reported as arguments that do not match a function; the
// error still matches ErrBadArguments.
func TestBadValueMessages(t *testing.T) {
	_, semErr := mp.NewSemaphore(-1)
	_, barErr := mp.NewBarrier(0, nil)
	_, poolErr := mp.NewPool(1, mp.WithTaskTimeout(-time.Second))
	_, nErr := mp.NewThreadPool(-2)
	for _, c := range []struct {
		err  error
		want string
	}{
		{semErr, "mp: NewSemaphore(-1): a semaphore's value must be from 0 to"},
		{barErr, "mp: NewBarrier(0, ...): a barrier has from 1 to"},
		{poolErr, "mp: WithTaskTimeout(-1s): a task timeout must be 0 (none) or more"},
		{nErr, "mp: a pool of -2 workers: the number must be 0 (CPUCount) or more"},
	} {
		if !errors.Is(c.err, mp.ErrBadArguments) {
			t.Errorf("%v does not match ErrBadArguments", c.err)
		}
		if c.err == nil || !strings.HasPrefix(c.err.Error(), c.want) || strings.Contains(c.err.Error(), "do not match") {
			t.Errorf("error %q, want one starting %q", c.err, c.want)
		}
	}
}

func init() { mp.Register(waitCancelValue) }

// waitCancelValue records its worker's pid, waits for its context, and
// returns a value that shows it saw it end.
func waitCancelValue(ctx context.Context, dir string) (string, error) {
	if err := writeFile(filepath.Join(dir, "worker"), strconv.Itoa(os.Getpid())); err != nil {
		return "", err
	}
	<-ctx.Done()
	return "saw " + context.Cause(ctx).Error(), nil
}

// TestWorkerSIGTERM: an operator's SIGTERM to one pool worker reaches the
// task it runs as cancellation; the task's result is delivered, and the
// pool replaces the worker and goes on.
func TestWorkerSIGTERM(t *testing.T) {
	pool, err := mp.NewPool(1)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Terminate()
	dir := t.TempDir()
	a := mp.ApplyAsync[string](pool, waitCancelValue, []any{dir})
	pid, err := strconv.Atoi(awaitContent(t, filepath.Join(dir, "worker")))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	got, err := a.Get(context.Background())
	if err != nil || got != "saw mp: terminated signal received" {
		t.Fatalf("Get: %q, %v", got, err)
	}
	if n, err := mp.Apply[int](context.Background(), pool, square, 7); err != nil || n != 49 {
		t.Fatalf("the pool after its worker's SIGTERM: %d, %v", n, err)
	}
}

func init() { mp.Register(childMap) }

// childMap is stopPoolMap's Map in a child process, stopped by its own
// SIGTERM rather than by a signal to the root.
func childMap(ctx context.Context, dir string) error {
	pool, err := mp.NewPool(2)
	if err != nil {
		return err
	}
	defer pool.Terminate()
	args := make([][]any, 20)
	for i := range args {
		args[i] = []any{dir, i}
	}
	res, err := mp.Starmap[int](ctx, pool, stopTask, args, mp.WithChunkSize(1))
	var me *mp.MapError
	if !errors.As(err, &me) {
		return fmt.Errorf("Map returned %v, want a *MapError", err)
	}
	return writeFile(filepath.Join(dir, "result"), fmt.Sprintf("%v;%v", res, me.NotRun()))
}

// TestTerminateStopsChildsPool: Terminate of a child in the middle of a Map
// over its own pool stops that pool as NotifyContext stops the root's: the
// results computed are delivered, the queued items never run, and the
// child exits as terminated.
func TestTerminateStopsChildsPool(t *testing.T) {
	dir := t.TempDir()
	p := mp.NewProcess(childMap, dir)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	running := awaitRunning(t, dir, 2)
	p.Terminate()
	err := p.Join(context.Background())
	var pe *mp.ProcessError
	if !errors.As(err, &pe) || pe.ExitCode != -15 || pe.Message != "" {
		t.Fatalf("Join: %v, want a *ProcessError with exit code -15 and no message", err)
	}
	res := make([]int, 20)
	var notRun []int
	for i := range res {
		switch {
		case i < 4:
			res[i] = i * i
		case slices.Contains(running, i):
			res[i] = 1000 + i
		default:
			notRun = append(notRun, i)
		}
	}
	if got, want := readFile(t, filepath.Join(dir, "result")), fmt.Sprintf("%v;%v", res, notRun); got != want {
		t.Errorf("Map in the child returned %s, want %s", got, want)
	}
	checkGone(t, append(pidsIn(t, dir, "pid-"), pidsIn(t, dir, "running-")...))
}

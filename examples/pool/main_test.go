package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

var (
	mainLine    = regexp.MustCompile(`^main process (\d+), pool of (\d+) workers, (\d+) tasks of \S+ each$`)
	workingLine = regexp.MustCompile(`^worker (\d+) working on (\d+)$`)
	resultLine  = regexp.MustCompile(`^(\d+) squared is (\d+) \(worker (\d+)\)$`)
)

// TestPool checks what can be known for sure: every result, in the order
// of the tasks, from a worker that says it worked on that task, and the
// asynchronous run spread over several workers of the one pool. The times
// are printed but not checked: on a loaded machine they mean little.
func TestPool(t *testing.T) {
	const workers, n = 4, 8
	out := exampletest.Run(t, ".", fmt.Sprint("-workers=", workers), fmt.Sprint("-n=", n), "-work=50ms")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	m := mainLine.FindStringSubmatch(lines[0])
	if m == nil || m[2] != fmt.Sprint(workers) || m[3] != fmt.Sprint(n) {
		t.Fatalf("first line %q, want the main process's line:\n%s", lines[0], out)
	}
	mainPid := atoi(m[1])

	syncPart, rest, ok1 := strings.Cut(strings.Join(lines[1:], "\n")+"\n", "== apply_async: all tasks at once, then Get in order ==\n")
	syncPart, ok2 := strings.CutPrefix(syncPart, "== apply: one task at a time ==\n")
	asyncPart, summary, ok3 := strings.Cut(rest, "apply took ")
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("output lacks its sections:\n%s", out)
	}

	allPids := map[int]bool{}
	syncPids := checkRun(t, "apply", syncPart, n, mainPid, true)
	asyncPids := checkRun(t, "apply_async", asyncPart, n, mainPid, false)
	for pid := range syncPids {
		allPids[pid] = true
	}
	for pid := range asyncPids {
		allPids[pid] = true
	}
	if len(asyncPids) < 2 {
		t.Errorf("apply_async ran every task in one worker %v, want several:\n%s", asyncPids, out)
	}
	// The pool's processes are made once and reused for every task.
	if len(allPids) > workers {
		t.Errorf("%d different workers ran the tasks, the pool has %d:\n%s", len(allPids), workers, out)
	}

	summaryRe := regexp.MustCompile(`^\S+\napply_async took \S+\napply_async was \d+\.\dx as fast with ` + strconv.Itoa(workers) + ` workers\n$`)
	if !summaryRe.MatchString(summary) {
		t.Errorf("summary is %q:\n%s", "apply took "+summary, out)
	}
	t.Logf("timings (not checked):\napply took %s", summary)
}

// checkRun checks one run's lines: results for 0..n-1 in order and
// correct, each from a worker process that said it was working on that
// task. For the synchronous run the order of the workers' lines is fixed
// too: each task starts after the previous result. It returns the pids
// that did the work.
func checkRun(t *testing.T, name, out string, n, mainPid int, serial bool) map[int]bool {
	t.Helper()
	workedOn := map[int]int{} // task -> pid of the worker that said it worked on it
	pids := map[int]bool{}
	next := 0
	for l := range strings.Lines(out) {
		l = strings.TrimSuffix(l, "\n")
		if m := workingLine.FindStringSubmatch(l); m != nil {
			pid, task := atoi(m[1]), atoi(m[2])
			if _, dup := workedOn[task]; dup {
				t.Errorf("%s: task %d started twice", name, task)
			}
			if serial && task != next {
				t.Errorf("%s: task %d started before the result of task %d", name, task, next)
			}
			workedOn[task] = pid
			continue
		}
		m := resultLine.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("%s: unexpected line %q", name, l)
			continue
		}
		task, sq, pid := atoi(m[1]), atoi(m[2]), atoi(m[3])
		switch {
		case task != next:
			t.Errorf("%s: result of task %d where task %d's was due", name, task, next)
		case sq != task*task:
			t.Errorf("%s: %d squared is %d?", name, task, sq)
		case pid == mainPid:
			t.Errorf("%s: task %d ran in the main process", name, task)
		case workedOn[task] != pid:
			t.Errorf("%s: task %d's result names worker %d, the worker that worked on it was %d", name, task, pid, workedOn[task])
		}
		pids[pid] = true
		next++
	}
	if next != n {
		t.Errorf("%s: %d results, want %d:\n%s", name, next, n, out)
	}
	return pids
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

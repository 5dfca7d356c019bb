package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

// run runs the example (exampletest.Run fails the test if it leaves a
// process behind).
func run(t *testing.T, args ...string) []line {
	t.Helper()
	out := exampletest.Run(t, ".", args...)
	t.Logf("output:\n%s", out)
	return parse(t, out)
}

// The kinds of line the example prints, each with its numbers.
var kinds = []struct {
	kind string
	re   *regexp.Regexp
}{
	{"header", regexp.MustCompile(`^host 1 beats every \S+; the monitor declares it dead after (\d+) missed beats(?:; its reporter is killed after (\d+) beats)?$`)},
	{"beat", regexp.MustCompile(`^beat (\d+): host 1 \(pid (\d+)\) \.\.\. I am OK$`)},
	{"work", regexp.MustCompile(`^work: packing the server logs into a file \(\S+\)$`)},
	{"packed", regexp.MustCompile(`^work: logs packed$`)},
	{"kill", regexp.MustCompile(`^killing host 1's reporter \(pid (\d+)\) with SIGKILL after (\d+) beats$`)},
	{"missed", regexp.MustCompile(`^missed beat (\d+) of (\d+) from host 1 \(last heard: beat (\d+)\)$`)},
	{"back", regexp.MustCompile(`^host 1 is back after (\d+) missed beats$`)},
	{"dead", regexp.MustCompile(`^host 1 declared dead: (\d+) beats missed in a row, last heard \S+ ago$`)},
	{"done", regexp.MustCompile(`^main work done: (\d+) beats heard, host 1 (alive|declared dead)$`)},
	{"exit", regexp.MustCompile(`^reporter Process-1 exit code (-?\d+) \((killed|terminated by Shutdown: a daemon ends with the main work)\)$`)},
}

type line struct {
	kind string
	nums []int
	word string // the last group when it is not a number
}

// parse classifies every line of out, failing on any it does not know.
func parse(t *testing.T, out string) []line {
	t.Helper()
	var lines []line
	for _, s := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		l, ok := classify(s)
		if !ok {
			t.Fatalf("unexpected line %q", s)
		}
		lines = append(lines, l)
	}
	return lines
}

func classify(s string) (line, bool) {
	for _, k := range kinds {
		m := k.re.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		l := line{kind: k.kind}
		for _, g := range m[1:] {
			if n, err := strconv.Atoi(g); err == nil {
				l.nums = append(l.nums, n)
			} else if g != "" {
				l.word = g
			}
		}
		return l, true
	}
	return line{}, false
}

// index returns the position of the first line of kind, or -1.
func index(lines []line, kind string) int {
	for i, l := range lines {
		if l.kind == kind {
			return i
		}
	}
	return -1
}

// checkCommon checks what every run shows: the header first, beats
// numbered 1, 2, ... from one pid, the work started after the first beat
// and finished, and the summary and the reporter's end last. It returns
// the number of beats.
func checkCommon(t *testing.T, lines []line, misses int) int {
	t.Helper()
	if len(lines) < 4 || lines[0].kind != "header" || lines[0].nums[0] != misses {
		t.Fatalf("no header for %d misses first", misses)
	}
	beats, pid := 0, 0
	for _, l := range lines {
		if l.kind != "beat" {
			continue
		}
		beats++
		if l.nums[0] != beats {
			t.Errorf("beat %d heard as beat number %d", beats, l.nums[0])
		}
		if pid == 0 {
			pid = l.nums[1]
		} else if l.nums[1] != pid {
			t.Errorf("beats from pids %d and %d", pid, l.nums[1])
		}
	}
	if beats == 0 {
		t.Fatal("no beat heard")
	}
	// The main work starts once the host is up.
	if w, b := index(lines, "work"), index(lines, "beat"); w < b {
		t.Errorf("work started (line %d) before the first beat (line %d)", w+1, b+1)
	}
	if index(lines, "packed") < index(lines, "work") {
		t.Error("the work did not finish after it started")
	}
	n := len(lines)
	if lines[n-2].kind != "done" || lines[n-2].nums[0] != beats {
		t.Errorf("the summary is not second to last, or does not count the %d beats", beats)
	}
	if lines[n-1].kind != "exit" {
		t.Error("the reporter's end is not last")
	}
	return beats
}

// TestBeats: without a kill, the host beats while the main work runs, is
// alive at the end, and is terminated as a daemon. -misses is large so that
// a machine too loaded to run the reporter for a while does not get it
// declared dead; such pauses show as "missed" and "back" lines, allowed
// here.
func TestBeats(t *testing.T) {
	lines := run(t, "-interval=20ms", "-work=300ms", "-misses=50")
	checkCommon(t, lines, 50)
	for _, kind := range []string{"kill", "dead"} {
		if i := index(lines, kind); i >= 0 {
			t.Errorf("line %d: a %s line without a kill", i+1, kind)
		}
	}
	done, exit := lines[len(lines)-2], lines[len(lines)-1]
	if done.word != "alive" {
		t.Errorf("the host is %q at the end, want alive", done.word)
	}
	if exit.nums[0] != -int(syscall.SIGTERM) || exit.word == "killed" {
		t.Errorf("reporter exit code %d (%s), want %d: terminated by Shutdown", exit.nums[0], exit.word, -int(syscall.SIGTERM))
	}
}

// TestKill kills the reporter after a number of beats and checks that the
// monitor then counts exactly -misses missed beats, one line each, before
// it declares the host dead. Beats are counted, not timed: the kill comes
// after the k-th beat heard, whenever that is, and the reporter is reaped
// before the monitor listens again, so the only beats that may follow the
// kill line were sent before it.
func TestKill(t *testing.T) {
	for _, c := range []struct{ misses, killAfter int }{{2, 1}, {4, 3}} {
		t.Run(fmt.Sprintf("misses=%d,kill-after=%d", c.misses, c.killAfter), func(t *testing.T) {
			lines := run(t, "-interval=100ms", "-work=50ms", fmt.Sprint("-misses=", c.misses), fmt.Sprint("-kill-after=", c.killAfter))
			if h := lines[0]; len(h.nums) != 2 || h.nums[1] != c.killAfter {
				t.Fatalf("header %+v does not announce the kill after %d beats", h, c.killAfter)
			}
			beats := checkCommon(t, lines, c.misses)
			k := index(lines, "kill")
			if k < 0 {
				t.Fatal("no kill")
			}
			if lines[k].nums[1] != c.killAfter {
				t.Errorf("killed after %d beats, want %d", lines[k].nums[1], c.killAfter)
			}
			before := 0 // beats before the kill line
			for _, l := range lines[:k] {
				switch l.kind {
				case "beat":
					before++
				case "dead":
					t.Fatal("declared dead before the kill: the reporter was not run for a long time")
				case "missed", "back":
					t.Logf("before the kill, a pause of the reporter: %+v", l)
				}
			}
			if before != c.killAfter {
				t.Errorf("%d beats before the kill line, want %d", before, c.killAfter)
			}

			// After the kill: beats sent before it, if any, then exactly
			// the configured number of misses, counting up, then the
			// verdict.
			after := lines[k+1:]
			first := index(after, "missed")
			if first < 0 {
				t.Fatal("no missed beat after the kill")
			}
			for _, l := range after[:first] {
				if l.kind != "beat" && l.kind != "work" && l.kind != "packed" {
					t.Errorf("between the kill and the first miss: %+v", l)
				}
			}
			lastSeq := beats
			m := 0
			rest := after[first:]
			for len(rest) > 0 && rest[0].kind != "dead" {
				switch l := rest[0]; l.kind {
				case "missed":
					m++
					if l.nums[0] != m || l.nums[1] != c.misses || l.nums[2] != lastSeq {
						t.Errorf("miss line %+v; want miss %d of %d, last heard beat %d", l, m, c.misses, lastSeq)
					}
				case "work", "packed": // the main work runs on its own
				default:
					t.Errorf("after the first miss, before the verdict: %+v", l)
				}
				rest = rest[1:]
			}
			if len(rest) == 0 {
				t.Fatal("no verdict")
			}
			if m != c.misses || rest[0].nums[0] != c.misses {
				t.Errorf("declared dead after %d miss lines, saying %d; want %d", m, rest[0].nums[0], c.misses)
			}
			done, exit := lines[len(lines)-2], lines[len(lines)-1]
			if done.word != "declared dead" {
				t.Errorf("the host is %q at the end, want declared dead", done.word)
			}
			if exit.nums[0] != -int(syscall.SIGKILL) || exit.word != "killed" {
				t.Errorf("reporter exit code %d (%s), want %d (killed)", exit.nums[0], exit.word, -int(syscall.SIGKILL))
			}
		})
	}
}

// TestBadFlags: a mistake on the command line is an error, not a run.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-misses=0"}, {"-interval=0s"}, {"-kill-after=-1"}} {
		out, err := exampletest.RunStatus(t, ".", args...)
		if err == nil || out != "" {
			t.Errorf("%v: exit %v, stdout %q; want a failure and no output", args, err, out)
		}
	}
}

package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

func TestDeadlock(t *testing.T) {
	out := exampletest.Run(t, ".", "-timeout=100ms")
	want := "111\n222\n333\n" +
		"second Acquire without a Release: gave up at its 100ms deadline: context deadline exceeded (a Lock is not reentrant; without a deadline this is the seed's deadlock)\n" +
		"RLock: first Acquire: ok, second Acquire: ok\n" +
		"RLock: first Release: ok, second Release: ok\n" +
		"RLock: third Release: mp: released more times than acquired: RLock released by a goroutine that does not hold it (ErrNotAcquired: true)\n" +
		"Lock: Release of an unlocked Lock: mp: released more times than acquired (ErrNotAcquired: true)\n"
	rest, ok := strings.CutPrefix(out, want)
	if !ok {
		t.Fatalf("output does not begin with\n%s\ngot:\n%s", want, out)
	}

	// Sync vs async: the processes hold the lock in any order, but each
	// one's two lines are adjacent.
	lines := strings.Split(strings.TrimSuffix(rest, "\n"), "\n")
	if len(lines) != 21 || lines[20] != "all 10 processes done" {
		t.Fatalf("want 10 pairs of lines and a last line, got:\n%s", rest)
	}
	seen := map[string]bool{}
	for i := 0; i < 20; i += 2 {
		var num int
		if _, err := fmt.Sscanf(lines[i], "process %d holds the lock: one process at a time from here", &num); err != nil {
			t.Fatalf("line %q: %v\n%s", lines[i], err, rest)
		}
		if lines[i+1] != fmt.Sprint(num) {
			t.Errorf("process %d's lines are split: %q is followed by %q\n%s", num, lines[i], lines[i+1], rest)
		}
		if seen[lines[i+1]] {
			t.Errorf("process %d printed twice\n%s", num, rest)
		}
		seen[lines[i+1]] = true
	}
}

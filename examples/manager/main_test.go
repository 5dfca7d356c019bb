package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

// TestManager: the atomic Update and the explicit lock end at exactly 90;
// without a lock the count ends between 90 and 99, and the program says
// how many updates were lost.
func TestManager(t *testing.T) {
	out := exampletest.Run(t, ".")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || lines[0] != "start: count = 100, 10 processes each take one" ||
		lines[1] != "with Dict.Update: count = 90" || lines[2] != "with an mp.Lock:  count = 90" {
		t.Fatalf("output:\n%s", out)
	}
	m := regexp.MustCompile(`^without a lock:   count = (\d+)(?: \((\d+) updates lost\))?$`).FindStringSubmatch(lines[3])
	if m == nil {
		t.Fatalf("last line %q", lines[3])
	}
	count, _ := strconv.Atoi(m[1])
	lost, _ := strconv.Atoi(m[2])
	if count < 90 || count > 99 || lost != count-90 {
		t.Fatalf("without a lock: count %d, %d lost", count, lost)
	}
}

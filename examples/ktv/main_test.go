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

var line = regexp.MustCompile(`^(person\d) (enters|leaves) the KTV room \(inside: (\d+)\)$`)

// TestKTV checks the limit from the records, not from timing: the lines
// are printed under the lock that guards the head count, so their order is
// the order of the updates, and replaying them must give the count each
// line reports, never above four.
func TestKTV(t *testing.T) {
	out := exampletest.Run(t, ".", "-min=10ms", "-max=40ms")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	state := map[string]string{} // person -> "enters" or "leaves", its last move
	inside, most := 0, 0
	var tail []string
	for i, l := range lines {
		m := line.FindStringSubmatch(l)
		if m == nil {
			tail = lines[i:]
			break
		}
		who, move := m[1], m[2]
		switch {
		case move == "enters" && state[who] == "":
			inside++
		case move == "leaves" && state[who] == "enters":
			inside--
		default:
			t.Fatalf("line %d: %s after %q:\n%s", i+1, l, state[who], out)
		}
		state[who] = move
		if got, _ := strconv.Atoi(m[3]); got != inside {
			t.Errorf("line %d: %q reports %d inside, the lines before it make %d", i+1, l, got, inside)
		}
		most = max(most, inside)
	}
	if most > 4 {
		t.Errorf("%d people were in the room at once, the limit is 4:\n%s", most, out)
	}
	for i := range 10 {
		if who := fmt.Sprintf("person%d", i); state[who] != "leaves" {
			t.Errorf("%s did not enter and leave (last move %q):\n%s", who, state[who], out)
		}
	}
	want := []string{fmt.Sprintf("max inside at once: %d (limit 4)", most), "inside at the end: 0"}
	if strings.Join(tail, "\n") != strings.Join(want, "\n") {
		t.Errorf("last lines are %q, want %q:\n%s", tail, want, out)
	}
}

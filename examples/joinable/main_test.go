package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

var (
	cookedLine = regexp.MustCompile(`^(cook[123]) cooked ((?:bun|dumpling|noodles)#\d+)$`)
	ateLine    = regexp.MustCompile(`^(eater[12]) ate ((?:bun|dumpling|noodles)#\d+) from (cook[123])$`)
)

// TestJoinable checks that every dish was eaten exactly once, after it was
// cooked (a cook prints before it puts, an eater after it gets) and before
// main's Join returned (an eater prints before TaskDone), and that
// Shutdown then terminated the two daemonic eaters.
func TestJoinable(t *testing.T) {
	for _, c := range []struct{ items, size int }{{6, 4}, {80, 2}, {0, 4}} {
		t.Run(fmt.Sprintf("items=%d,size=%d", c.items, c.size), func(t *testing.T) {
			out := exampletest.Run(t, ".", fmt.Sprint("-items=", c.items), fmt.Sprint("-size=", c.size), "-work=1ms")
			total := 3 * c.items
			want := fmt.Sprintf("main: all %d dishes done\n"+
				"main: eater1 exit code -15 (a daemon, terminated by Shutdown)\n"+
				"main: eater2 exit code -15 (a daemon, terminated by Shutdown)\n", total)
			meal, ok := strings.CutSuffix(out, want)
			if !ok {
				t.Fatalf("output does not end with\n%s\nit is:\n%s", want, out)
			}
			cookOf := map[string]string{} // dish -> cook
			eaten := map[string]string{}  // dish -> eater
			for i, l := range strings.Split(strings.TrimSuffix(meal, "\n"), "\n") {
				if l == "" && total == 0 {
					continue
				}
				if m := cookedLine.FindStringSubmatch(l); m != nil {
					if cookOf[m[2]] != "" {
						t.Errorf("line %d: %s cooked twice", i+1, m[2])
					}
					cookOf[m[2]] = m[1]
				} else if m := ateLine.FindStringSubmatch(l); m != nil {
					who, dish, from := m[1], m[2], m[3]
					switch {
					case eaten[dish] != "":
						t.Errorf("line %d: %s ate %s, which %s ate before", i+1, who, dish, eaten[dish])
					case cookOf[dish] == "":
						t.Errorf("line %d: %s ate %s before it was cooked", i+1, who, dish)
					case cookOf[dish] != from:
						t.Errorf("line %d: %s says %s came from %s, but %s cooked it", i+1, who, dish, from, cookOf[dish])
					}
					eaten[dish] = who
				} else {
					t.Errorf("line %d: unexpected %q", i+1, l)
				}
			}
			for i, food := range []string{"bun", "dumpling", "noodles"} {
				for n := 1; n <= c.items; n++ {
					dish := fmt.Sprintf("%s#%d", food, n)
					if cookOf[dish] != fmt.Sprintf("cook%d", i+1) || eaten[dish] == "" {
						t.Errorf("%s: cooked by %q, eaten by %q", dish, cookOf[dish], eaten[dish])
					}
				}
			}
			if len(cookOf) != total || len(eaten) != total {
				t.Errorf("%d dishes cooked and %d eaten, want %d", len(cookOf), len(eaten), total)
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

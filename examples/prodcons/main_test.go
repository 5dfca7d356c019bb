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
	bakedLine = regexp.MustCompile(`^(baker\d+) baked (baker\d+-bun\d+)$`)
	ateLine   = regexp.MustCompile(`^(customer\d+) ate (baker\d+-bun\d+)$`)
	stopLine  = regexp.MustCompile(`^(customer\d+) stops after (\d+) buns: (took a sentinel|the counter is closed)$`)
)

func TestProdcons(t *testing.T) {
	for _, c := range []struct{ producers, consumers, items, size int }{
		{2, 3, 8, 4},   // the defaults
		{3, 4, 60, 2},  // a small counter: bakers wait for customers
		{1, 5, 3, 10},  // more customers than buns: some eat none
		{4, 1, 20, 64}, // one customer for all
	} {
		name := fmt.Sprintf("p%d-c%d-i%d-s%d", c.producers, c.consumers, c.items, c.size)
		t.Run(name, func(t *testing.T) {
			out := exampletest.Run(t, ".",
				fmt.Sprint("-producers=", c.producers), fmt.Sprint("-consumers=", c.consumers),
				fmt.Sprint("-items=", c.items), fmt.Sprint("-size=", c.size), "-work=1ms")
			rest, ok := strings.CutPrefix(out, "== run 1: a sentinel for each customer ==\n")
			run1, rest, ok2 := strings.Cut(rest, "== run 2: the counter is closed ==\n")
			last := fmt.Sprintf("== done: two runs of %d buns each ==\n", c.producers*c.items)
			run2, ok3 := strings.CutSuffix(rest, last)
			if !ok || !ok2 || !ok3 {
				t.Fatalf("output does not have the two runs and the last line %q:\n%s", last, out)
			}
			checkRun(t, "run 1", run1, "took a sentinel", c.producers, c.consumers, c.items)
			checkRun(t, "run 2", run2, "the counter is closed", c.producers, c.consumers, c.items)
		})
	}
}

// checkRun checks one run's lines: every bun baked once and eaten once,
// after it was baked (a baker prints before it puts, a customer after it
// gets), and every customer stopping once, for the run's reason, after its
// last bun, with the count of the buns it ate.
func checkRun(t *testing.T, run, out, reason string, producers, consumers, items int) {
	t.Helper()
	baked := map[string]bool{}
	eaten := map[string]string{} // bun -> customer
	ate := map[string]int{}      // customer -> buns
	stopped := map[string]bool{}
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if m := bakedLine.FindStringSubmatch(l); m != nil {
			if !strings.HasPrefix(m[2], m[1]+"-") || baked[m[2]] {
				t.Errorf("%s, line %d: %q: baked twice or by the wrong baker", run, i+1, l)
			}
			baked[m[2]] = true
		} else if m := ateLine.FindStringSubmatch(l); m != nil {
			who, bun := m[1], m[2]
			switch {
			case eaten[bun] != "":
				t.Errorf("%s, line %d: %s ate %s, which %s ate before", run, i+1, who, bun, eaten[bun])
			case !baked[bun]:
				t.Errorf("%s, line %d: %s ate %s before it was baked", run, i+1, who, bun)
			case stopped[who]:
				t.Errorf("%s, line %d: %s ate after it stopped", run, i+1, who)
			}
			eaten[bun] = who
			ate[who]++
		} else if m := stopLine.FindStringSubmatch(l); m != nil {
			who := m[1]
			if stopped[who] {
				t.Errorf("%s, line %d: %s stopped twice", run, i+1, who)
			}
			stopped[who] = true
			if n, _ := strconv.Atoi(m[2]); n != ate[who] {
				t.Errorf("%s, line %d: %s says it ate %d buns, its lines say %d", run, i+1, who, n, ate[who])
			}
			if m[3] != reason {
				t.Errorf("%s, line %d: %s stopped because %s, want %q", run, i+1, who, m[3], reason)
			}
		} else {
			t.Errorf("%s, line %d: unexpected %q", run, i+1, l)
		}
	}
	for b := 1; b <= producers; b++ {
		for n := 1; n <= items; n++ {
			bun := fmt.Sprintf("baker%d-bun%d", b, n)
			if !baked[bun] || eaten[bun] == "" {
				t.Errorf("%s: %s baked %v, eaten by %q", run, bun, baked[bun], eaten[bun])
			}
		}
	}
	if len(baked) != producers*items || len(eaten) != producers*items {
		t.Errorf("%s: %d buns baked and %d eaten, want %d", run, len(baked), len(eaten), producers*items)
	}
	for c := 1; c <= consumers; c++ {
		if who := fmt.Sprintf("customer%d", c); !stopped[who] {
			t.Errorf("%s: %s never stopped", run, who)
		}
	}
	if len(stopped) != consumers {
		t.Errorf("%s: %d customers stopped, want %d", run, len(stopped), consumers)
	}
	if t.Failed() {
		t.Logf("%s:\n%s", run, out)
	}
}

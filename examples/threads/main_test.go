package main

import (
	"os"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

func TestThreads(t *testing.T) {
	out := exampletest.Run(t, ".")
	for _, w := range []string{
		"Thread-1 alive before Start: false\n",
		"Thread-1 alive after Start: true\n",
		"Thread-1: thread start\n",
		"Thread-1: thread end\nThread-1 alive after Join: false\n",
		"second: thread start (Run)\nsecond: thread end (Run)\n",
		"n after 100 locked decrements: 0\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

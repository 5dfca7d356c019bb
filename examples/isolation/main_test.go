package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

func TestIsolation(t *testing.T) {
	out := exampletest.Run(t, ".")
	for _, want := range []string{
		"child: n = 0\nparent: n = 100\n",
		"Process-3 alive after Start: true\n",
		"Process-3 alive after Terminate and Join: false, exit code -15\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	child := regexp.MustCompile(`child: I am (Process-2), pid (\d+); my parent is MainProcess, pid (\d+) \(os.Getppid\(\) = (\d+)\)`).FindStringSubmatch(out)
	parent := regexp.MustCompile(`parent: I am MainProcess, pid (\d+); I started (Process-2), pid (\d+)`).FindStringSubmatch(out)
	if child == nil || parent == nil {
		t.Fatalf("pid lines missing:\n%s", out)
	}
	if child[2] != parent[3] || child[3] != parent[1] || child[4] != parent[1] {
		t.Errorf("pids disagree: child says %v, parent says %v", child[1:], parent[1:])
	}
}

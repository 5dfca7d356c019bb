package main

import (
	"os"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

func TestDaemon(t *testing.T) {
	out := exampletest.Run(t, ".", "-every=20ms", "-work=300ms")
	for _, want := range []string{"main code done", "work start", "work end", "daemon Process-1 exit code -15 (terminated)", "worker Process-2 exit code 0 (waited for)"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The daemon ran (printed) while main's code ran; its exit code shows
	// that Shutdown terminated it rather than waiting for it, which it
	// could not have done: it never ends by itself.
	if !strings.HasPrefix(out, "*\n") && !strings.Contains(out, "\n*\n") {
		t.Errorf("the daemon never printed:\n%s", out)
	}
}

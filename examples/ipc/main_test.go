package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

func TestIPC(t *testing.T) {
	for _, n := range []int{12, 0} {
		t.Run(fmt.Sprint("n=", n), func(t *testing.T) {
			out := exampletest.Run(t, ".", fmt.Sprint("-n=", n), "-work=1ms")
			queue, pipe, ok := strings.Cut(out, "== over a Pipe ==\n")
			if !ok || !strings.HasPrefix(queue, "== over a Queue ==\n") {
				t.Fatalf("output lacks the two sections:\n%s", out)
			}
			checkQueue(t, n, strings.TrimPrefix(queue, "== over a Queue ==\n"))
			checkPipe(t, n, pipe)
		})
	}
}

// checkQueue checks each process's own lines, in the order it printed
// them: the writer's and the reader's lines interleave as they please, but
// the reader must get every message once, in the order it was put, and
// learn of the end from the closed queue.
func checkQueue(t *testing.T, n int, out string) {
	t.Helper()
	var wantW, wantR []string
	for i := 1; i <= n; i++ {
		wantW = append(wantW, fmt.Sprintf("writer: put %d \"hello number %d\"", i, i))
		wantR = append(wantR, fmt.Sprintf("reader: got %d \"hello number %d\"", i, i))
	}
	wantW = append(wantW, "writer: closing the queue")
	wantR = append(wantR, "reader: queue closed and empty, done")

	var gotW, gotR, rest []string
	for l := range strings.Lines(out) {
		l = strings.TrimSuffix(l, "\n")
		switch {
		case strings.HasPrefix(l, "writer: "):
			gotW = append(gotW, l)
		case strings.HasPrefix(l, "reader: "):
			gotR = append(gotR, l)
		default:
			rest = append(rest, l)
		}
	}
	same := func(who string, got, want []string) {
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("the %s printed\n%s\nwant\n%s", who, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	same("writer", gotW, wantW)
	same("reader", gotR, wantR)
	same("main", rest, []string{"main: writer and reader done"})
	if !strings.HasSuffix(out, "main: writer and reader done\n") {
		t.Errorf("main finished before its children:\n%s", out)
	}
}

// checkPipe compares the pipe's conversation line for line: each side
// prints before it sends and after it receives, so the order is fixed.
func checkPipe(t *testing.T, n int, out string) {
	t.Helper()
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "child: received %d, sending back %d\n", i, i*i)
		fmt.Fprintf(&want, "parent: sent %d, received %d\n", i, i*i)
	}
	want.WriteString("child: io.EOF, the parent closed its end\n")
	want.WriteString("main: child done\n")
	if out != want.String() {
		t.Errorf("the pipe conversation is\n%s\nwant\n%s", out, want.String())
	}
}

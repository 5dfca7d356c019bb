package main

import (
	"os"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

func TestQueueAPI(t *testing.T) {
	out := exampletest.Run(t, ".")
	want := `put 1
put 2
put 3
put 4
put 5
full: true len: 5
TryPut(6): mp: full
got 1
got 2
got 3
got 4
got 5
TryGet: mp: empty
empty: true
Get with a 100ms deadline: context deadline exceeded
put 6
Put after Close: mp: closed
got 6
drained, then: mp: closed
`
	if out != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out, want)
	}
}

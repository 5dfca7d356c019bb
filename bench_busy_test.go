package mp_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/multiproc/mp"
)

func init() { mp.Register(benchBurn) }

// benchBurn keeps GOMAXPROCS goroutines busy on the CPU until it is
// killed: the load of another program on a shared machine.
func benchBurn(ready *mp.Event) {
	n := runtime.GOMAXPROCS(0)
	for range n - 1 {
		go burn()
	}
	ready.Set()
	burn()
}

var burnSink uint64

func burn() {
	x := uint64(1)
	for {
		for range 1 << 20 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		burnSink = x
	}
}

// busyMachine runs the rest of the benchmark with both cores busy: two
// burner processes, each GOMAXPROCS goroutines wide, as a shared machine
// at load average 4 or more. They are killed when the benchmark ends.
func busyMachine(b *testing.B) {
	b.Helper()
	for range 2 {
		ready := mp.Must(mp.NewEvent())
		p := startChild(b, ready, benchBurn, ready)
		b.Cleanup(func() {
			p.Kill()
			p.Join(context.Background())
		})
	}
}

package mp_test

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/multiproc/mp"
)

// BenchmarkProcessStartJoin starts and joins one child running a registered
// no-op: a re-exec of the test binary plus the bootstrap and the report.
func BenchmarkProcessStartJoin(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		p := mp.NewProcess(noop)
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
		if err := p.Join(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareReexec is the floor for BenchmarkProcessStartJoin: the same
// test binary started with os/exec and exiting right after mp.Init.
func BenchmarkBareReexec(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	env := append(os.Environ(), "MP_TEST_BARE_EXIT=1")
	for b.Loop() {
		cmd := exec.Command(self)
		cmd.Env = env
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
}

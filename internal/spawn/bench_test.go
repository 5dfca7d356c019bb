package spawn_test

import (
	"testing"

	"github.com/multiproc/mp/internal/spawn"
)

func benchStart(b *testing.B) {
	for i := 0; i < b.N; i++ {
		c, err := spawn.Start(spawn.Request{})
		if err != nil {
			b.Fatal(err)
		}
		spawn.WriteFrame(c.Ctl, []byte("x"))
		c.Wait()
		c.Ctl.Close()
	}
}

// BenchmarkStartWait starts and reaps a child that exits at once, in a
// cgroup of its own where the machine allows it.
func BenchmarkStartWait(b *testing.B) { benchStart(b) }

// BenchmarkStartWaitNoCgroup is BenchmarkStartWait without cgroups (last:
// the switch cannot be undone).
func BenchmarkStartWaitZNoCgroup(b *testing.B) {
	spawn.DisableCgroups()
	benchStart(b)
}

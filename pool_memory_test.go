package mp_test

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/multiproc/mp"
)

var leaked [][]byte

// leakMiB keeps n MiB, touched, for as long as its process lives, and
// returns its pid.
func leakMiB(n int) int {
	b := make([]byte, n<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	leaked = append(leaked, b)
	return os.Getpid()
}

// rssBytes returns the current resident memory of its process.
func rssBytes(int) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func init() { mp.Register(leakMiB, rssBytes) }

// TestPoolMaxMemoryPerChild: a worker whose memory a task took past the
// limit is replaced after that task; every task is done.
func TestPoolMaxMemoryPerChild(t *testing.T) {
	ctx := within(t)
	if _, err := mp.NewPool(1, mp.WithMaxMemoryPerChild(-1)); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("WithMaxMemoryPerChild(-1): %v", err)
	}
	// A fresh worker's memory, to set the limit from.
	probe := newPool(t, 1)
	base, err := mp.Apply[int64](ctx, probe, rssBytes, 0)
	if err != nil || base <= 0 {
		t.Fatalf("rss: %d, %v", base, err)
	}
	closeAndJoin(t, probe)

	// 16 MiB a task, and a limit 40 MiB above a fresh worker's: the
	// third task of a worker at the latest takes it over.
	p := newPool(t, 1, mp.WithMaxMemoryPerChild(base+40<<20))
	pids, err := mp.Map[int](ctx, p, leakMiB, []int{16, 16, 16, 16, 16, 16, 16, 16, 16}, mp.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	per := map[int]int{}
	for _, id := range pids {
		per[id]++
	}
	for id, n := range per {
		if n > 3 {
			t.Errorf("worker %d ran %d tasks, past its memory limit", id, n)
		}
	}
	if len(per) < 3 {
		t.Errorf("9 tasks ran in %d workers, want at least 3", len(per))
	}
	closeAndJoin(t, p)
}

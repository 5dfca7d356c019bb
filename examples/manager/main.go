// Manager is the seeds' Manager dict: {"count": 100} in a dict shared by
// ten processes, each of which takes one. It runs three ways:
//
//   - with Dict.Update, which makes the read-modify-write atomic: 90;
//   - with the seed's explicit mp.Lock around Get and Set: 90;
//   - with plain Get and Set and no lock: processes read the same count
//     and write back the same result, and updates are lost.
//
// The processes wait at a barrier and then all go at once, and each one
// spends -work between reading the count and writing it (the seeds' sleep
// standing for real work), so that the race the lock prevents shows.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/multiproc/mp"
)

func init() { mp.Register(takeOne) }

// takeOne is one process: wait for the others, then take one from
// d["count"] the way mode says.
func takeOne(d *mp.Dict[string, int], lock *mp.Lock, start *mp.Barrier, mode string, work time.Duration) error {
	if _, err := start.Wait(context.Background()); err != nil {
		return err
	}
	switch mode {
	case "update":
		return d.Update("count", func(old int, _ bool) (int, bool) { return old - 1, true })
	case "lock":
		lock.Lock()
		defer lock.Unlock()
	}
	count, _, err := d.Get("count")
	if err != nil {
		return err
	}
	time.Sleep(work)
	return d.Set("count", count-1)
}

func run(mode string, procs, start int, work time.Duration) (int, error) {
	d, err := mp.NewDict[string, int]()
	if err != nil {
		return 0, err
	}
	if err := d.Set("count", start); err != nil {
		return 0, err
	}
	lock, err := mp.NewLock()
	if err != nil {
		return 0, err
	}
	barrier, err := mp.NewBarrier(procs, nil)
	if err != nil {
		return 0, err
	}
	var ps []*mp.Process
	for range procs {
		p := mp.NewProcess(takeOne, d, lock, barrier, mode, work)
		if err := p.Start(); err != nil {
			return 0, err
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if err := p.Join(context.Background()); err != nil {
			return 0, err
		}
	}
	count, _, err := d.Get("count")
	return count, err
}

func main() {
	mp.Init()
	procs := flag.Int("procs", 10, "processes, each taking one")
	start := flag.Int("start", 100, "starting count")
	work := flag.Duration("work", 10*time.Millisecond, "time between reading the count and writing it back")
	flag.Parse()

	fmt.Printf("start: count = %d, %d processes each take one\n", *start, *procs)
	for _, m := range []struct{ mode, label string }{
		{"update", "with Dict.Update"},
		{"lock", "with an mp.Lock"},
		{"none", "without a lock"},
	} {
		count, err := run(m.mode, *procs, *start, *work)
		if err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
			os.Exit(1)
		}
		lost := count - (*start - *procs)
		if lost == 0 {
			fmt.Printf("%-17s count = %d\n", m.label+":", count)
		} else {
			fmt.Printf("%-17s count = %d (%d updates lost)\n", m.label+":", count, lost)
		}
	}
}

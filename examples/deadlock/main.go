// Deadlock is the seeds' Lock material. A Lock acquired twice without a
// Release in between is the seed's deadlock: the second acquire waits for
// a release that can never come, and the program hangs. With a context
// deadline the second Acquire gives up and says so instead. An RLock may
// be acquired again by the goroutine that holds it; releasing a lock more
// times than it was acquired is an error, ErrNotAcquired.
//
// Last, the seeds' "sync vs async": ten processes run at once
// (asynchronously), but the part of each that holds the lock runs one
// process at a time (synchronously), so the two lines each prints there
// are never separated by another process's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/multiproc/mp"
)

// report prints the two lines of the seed's func(num, lock), holding lock.
func report(num int, lock *mp.Lock) error {
	// ErrOwnerDied (a previous holder was killed, say by SIGPIPE) still
	// gives this process the lock, and there is nothing to repair.
	if err := lock.Acquire(context.Background()); err != nil && !errors.Is(err, mp.ErrOwnerDied) {
		return err
	}
	defer lock.Release()
	fmt.Printf("process %d holds the lock: one process at a time from here\n", num)
	time.Sleep(time.Millisecond) // room for another process to cut in, if it could
	fmt.Println(num)
	return nil
}

func init() { mp.Register(report) }

func outcome(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

func main() {
	mp.Init()
	defer mp.Shutdown()
	patience := flag.Duration("timeout", 200*time.Millisecond, "how long the second Acquire waits")
	flag.Parse()
	bg := context.Background()

	// The seed: acquire, release, acquire, acquire.
	lock := mp.Must(mp.NewLock())
	lock.Acquire(bg)
	fmt.Println(111)
	lock.Release()
	fmt.Println(222)
	lock.Acquire(bg)
	fmt.Println(333)
	ctx, cancel := context.WithTimeout(bg, *patience)
	start := time.Now()
	err := lock.Acquire(ctx) // the seed hangs here forever
	cancel()
	if errors.Is(err, context.DeadlineExceeded) {
		fmt.Printf("second Acquire without a Release: gave up at its %v deadline: %v (a Lock is not reentrant; without a deadline this is the seed's deadlock)\n",
			*patience, err)
		if waited := time.Since(start); waited < *patience {
			fmt.Printf("but it waited only %v\n", waited)
		}
	} else {
		fmt.Printf("second Acquire without a Release returned %v, want context.DeadlineExceeded\n", err)
	}
	// 444 is never printed: the lock is still held by the first Acquire.
	lock.Release()

	// An RLock counts its holder's acquisitions.
	rlock := mp.Must(mp.NewRLock())
	fmt.Printf("RLock: first Acquire: %s, second Acquire: %s\n", outcome(rlock.Acquire(bg)), outcome(rlock.Acquire(bg)))
	fmt.Printf("RLock: first Release: %s, second Release: %s\n", outcome(rlock.Release()), outcome(rlock.Release()))
	err = rlock.Release()
	fmt.Printf("RLock: third Release: %v (ErrNotAcquired: %v)\n", err, errors.Is(err, mp.ErrNotAcquired))
	err = lock.Release()
	fmt.Printf("Lock: Release of an unlocked Lock: %v (ErrNotAcquired: %v)\n", err, errors.Is(err, mp.ErrNotAcquired))

	// Sync vs async.
	var ps []*mp.Process
	for i := range 10 {
		p := mp.NewProcess(report, i, lock)
		if err := p.Start(); err != nil {
			panic(err)
		}
		ps = append(ps, p)
	}
	failed := false
	for _, p := range ps {
		if err := p.Join(bg); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p.Name, err)
			failed = true
		}
	}
	if failed {
		mp.Shutdown()
		os.Exit(1)
	}
	fmt.Println("all 10 processes done")
}

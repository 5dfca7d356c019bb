// Daemon shows daemonic processes as the seeds describe them: a daemon
// lives only as long as its parent's main work. When main is done, the
// deferred mp.Shutdown terminates the daemon at once, while the ordinary
// child is waited for.
package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/multiproc/mp"
)

// stars prints a growing row of stars forever.
func stars(every time.Duration) {
	for n := 1; ; n++ {
		fmt.Println(strings.Repeat("*", n))
		time.Sleep(every)
	}
}

// work is the ordinary child: it outlives main's own code.
func work(d time.Duration) {
	fmt.Println("work start")
	time.Sleep(d)
	fmt.Println("work end")
}

func init() { mp.Register(stars, work) }

func main() {
	mp.Init()
	every := flag.Duration("every", 100*time.Millisecond, "time between the daemon's rows of stars")
	length := flag.Duration("work", 500*time.Millisecond, "how long the ordinary child works")
	flag.Parse()

	daemon := mp.NewProcess(stars, *every)
	daemon.Daemon = true
	if err := daemon.Start(); err != nil {
		panic(err)
	}
	worker := mp.NewProcess(work, *length)
	if err := worker.Start(); err != nil {
		panic(err)
	}
	time.Sleep(*every * 3)
	fmt.Println("main code done")

	// What a deferred mp.Shutdown() does at the end of main, made explicit
	// here so that the outcome can be printed.
	mp.Shutdown()
	dc, _ := daemon.ExitCode()
	wc, _ := worker.ExitCode()
	fmt.Printf("daemon %s exit code %d (terminated)\n", daemon.Name, dc)
	fmt.Printf("worker %s exit code %d (waited for)\n", worker.Name, wc)
}

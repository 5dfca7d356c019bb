// Joinable is the seeds' JoinableQueue version of producer/consumer (seeds
// 002 and 003): three cooks put dishes on an mp.JoinableQueue, two daemonic
// eaters take them off, and nobody tells the eaters to stop.
//
// Instead, an eater calls TaskDone when it has finished a dish, and main,
// once the cooks are done, waits in Join until every dish put has been
// marked done. At that moment the eaters have nothing left to do but wait
// for dishes that will never come; they are daemons, so the mp.Shutdown at
// the end of main terminates them rather than waiting for them, and the
// program ends.
//
// Everything an eater prints about a dish it prints before TaskDone, so all
// of it comes out before main's "all ... dishes done" line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/multiproc/mp"
)

// Dish is one item of work.
type Dish struct {
	Cook string
	Food string
	N    int
}

func (d Dish) String() string { return fmt.Sprintf("%s#%d", d.Food, d.N) }

// pause simulates up to d of work; the randomness lets cooks and eaters
// overtake one another.
func pause(d time.Duration) {
	if d > 0 {
		time.Sleep(rand.N(d))
	}
}

// cook puts n dishes of food on the table.
func cook(table *mp.JoinableQueue[Dish], food string, n int, work time.Duration) error {
	name := mp.CurrentProcess().Name
	// The child is killed if its parent dies, and the parent has a
	// deadline, so the child's own calls need none.
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		pause(work)
		d := Dish{Cook: name, Food: food, N: i}
		// Printed before the Put, so that it always comes out before the
		// line of the eater who eats the dish.
		fmt.Printf("%s cooked %s\n", name, d)
		if err := table.Put(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// eat takes dishes from the table for ever: it is a daemon, ended by its
// parent's Shutdown.
func eat(table *mp.JoinableQueue[Dish], work time.Duration) error {
	name := mp.CurrentProcess().Name
	ctx := context.Background()
	for {
		d, err := table.Get(ctx)
		if err != nil {
			return err
		}
		pause(work)
		fmt.Printf("%s ate %s from %s\n", name, d, d.Cook)
		// Marks this dish, not any particular one: Join waits for the
		// count of dishes put and not yet done to reach zero.
		if err := table.TaskDone(); err != nil {
			return err
		}
	}
}

func init() { mp.Register(cook, eat) }

// fail reports err and exits with status 1. Shutdown waits for every
// child that is not a daemon, and after a failure a cook may be blocked for
// good on a full table, so the children are terminated first.
func fail(err error) {
	fmt.Fprintln(os.Stderr, "joinable:", err)
	for _, p := range mp.ActiveChildren() {
		p.Terminate()
	}
	mp.Shutdown()
	os.Exit(1)
}

func main() {
	mp.Init()
	defer mp.Shutdown()
	items := flag.Int("items", 6, "dishes each cook makes")
	size := flag.Int("size", 4, "dishes the table holds")
	work := flag.Duration("work", 30*time.Millisecond, "longest time to cook or eat a dish")
	timeout := flag.Duration("timeout", time.Minute, "give up if the meal takes longer than this")
	flag.Parse()
	if *items < 0 || *size < 1 || *work < 0 {
		fail(errors.New("need -size >= 1, and no negative flag"))
	}
	// A child that fails may leave the others waiting: the deadline turns
	// that into an error instead of a hang.
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	table, err := mp.NewJoinableQueue[Dish](*size)
	if err != nil {
		fail(err)
	}
	var eaters []*mp.Process
	for i := 1; i <= 2; i++ {
		p := mp.NewProcess(eat, table, *work)
		p.Name = fmt.Sprintf("eater%d", i)
		p.Daemon = true // see Shutdown below
		if err := p.Start(); err != nil {
			fail(err)
		}
		eaters = append(eaters, p)
	}
	var cooks []*mp.Process
	for i, food := range []string{"bun", "dumpling", "noodles"} {
		p := mp.NewProcess(cook, table, food, *items, *work)
		p.Name = fmt.Sprintf("cook%d", i+1)
		if err := p.Start(); err != nil {
			fail(err)
		}
		cooks = append(cooks, p)
	}

	// Join on the queue returns whenever no dish is left undone, which can
	// also happen while the cooks are still at the stove: wait for them
	// first, so that every dish has been put.
	for _, p := range cooks {
		if err := p.Join(ctx); err != nil {
			fail(err)
		}
	}
	// Returns an error wrapping mp.ErrTasksLost, rather than waiting for
	// ever, if an eater died with dishes it had not marked done.
	if err := table.Join(ctx); err != nil {
		fail(err)
	}
	fmt.Printf("main: all %d dishes done\n", 3**items)

	// What the deferred mp.Shutdown does at the end of main, made explicit
	// here so that the eaters' fate can be printed: daemons are terminated,
	// not waited for (they would wait for ever).
	mp.Shutdown()
	for _, p := range eaters {
		code, _ := p.ExitCode()
		fmt.Printf("main: %s exit code %d (a daemon, terminated by Shutdown)\n", p.Name, code)
	}
}

// Prodcons is the seeds' producer/consumer model (seeds 000, 003 and 004):
// bakers bake buns and put them on a counter, customers take them off and
// eat them. The counter, an mp.Queue with room for a few buns, lets either
// side work at its own pace: a baker waits only when the counter is full, a
// customer only when it is empty.
//
// The hard part is the end. A customer waiting at an empty counter cannot
// tell a slow baker from one that has gone home, so it has to be told. The
// example runs the bakery twice, once for each way of telling it:
//
//  1. The seeds' way: once every baker is done, main puts a sentinel (a nil
//     bun, Python's None) on the counter for each customer. A customer stops
//     at the first sentinel it takes, so there must be one per customer, or
//     some wait forever.
//  2. Close: once every baker is done, main closes the queue. Customers take
//     the buns that are left and then get mp.ErrClosed, however many of them
//     there are: nothing to count, nothing to put.
//
// Every bun has a name, and every customer says which buns it ate and, at
// the end, how many and why it stopped: enough to check that each bun was
// eaten exactly once.
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

// Bun is one item. Buns travel as pointers so that nil, which no real bun
// is, can be the sentinel.
type Bun struct {
	Baker string
	N     int
}

func (b *Bun) String() string { return fmt.Sprintf("%s-bun%d", b.Baker, b.N) }

// pause simulates up to d of work; the randomness lets bakers and
// customers overtake one another.
func pause(d time.Duration) {
	if d > 0 {
		time.Sleep(rand.N(d))
	}
}

// baker bakes n buns and puts them on the counter.
func baker(counter *mp.Queue[*Bun], n int, work time.Duration) error {
	name := mp.CurrentProcess().Name
	// The child is killed if its parent dies, and the parent has a
	// deadline, so the child's own calls need none.
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		pause(work)
		b := &Bun{Baker: name, N: i}
		// Printed before the Put, so that it always comes out before the
		// line of the customer who eats the bun.
		fmt.Printf("%s baked %s\n", name, b)
		if err := counter.Put(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// customer eats buns from the counter until it is told there will be no
// more, by a sentinel or by the queue being closed: the same customer
// serves both runs.
func customer(counter *mp.Queue[*Bun], work time.Duration) error {
	name := mp.CurrentProcess().Name
	ctx := context.Background()
	eaten := 0
	for {
		b, err := counter.Get(ctx)
		switch {
		case errors.Is(err, mp.ErrClosed):
			fmt.Printf("%s stops after %d buns: the counter is closed\n", name, eaten)
			return nil
		case err != nil:
			return err
		case b == nil:
			fmt.Printf("%s stops after %d buns: took a sentinel\n", name, eaten)
			return nil
		}
		pause(work)
		eaten++
		fmt.Printf("%s ate %s\n", name, b)
	}
}

func init() { mp.Register(baker, customer) }

type config struct {
	bakers, customers, buns, size int
	work                          time.Duration
}

// bakery runs one day: the bakers and customers, and, when the bakers are
// done, end, which tells the customers.
func bakery(ctx context.Context, cfg config, end func(*mp.Queue[*Bun]) error) error {
	counter, err := mp.NewQueue[*Bun](cfg.size)
	if err != nil {
		return err
	}
	var bakers, customers []*mp.Process
	for i := 1; i <= cfg.bakers; i++ {
		p := mp.NewProcess(baker, counter, cfg.buns, cfg.work)
		p.Name = fmt.Sprintf("baker%d", i)
		if err := p.Start(); err != nil {
			return err
		}
		bakers = append(bakers, p)
	}
	for i := 1; i <= cfg.customers; i++ {
		p := mp.NewProcess(customer, counter, cfg.work)
		p.Name = fmt.Sprintf("customer%d", i)
		if err := p.Start(); err != nil {
			return err
		}
		customers = append(customers, p)
	}
	// Only once every baker has returned is the last bun on the counter:
	// a sentinel or a Close before that would cut the day short.
	for _, p := range bakers {
		if err := p.Join(ctx); err != nil {
			return err
		}
	}
	if err := end(counter); err != nil {
		return err
	}
	for _, p := range customers {
		if err := p.Join(ctx); err != nil {
			return err
		}
	}
	return nil
}

// fail reports err and exits with status 1. Shutdown waits for every
// child that is not a daemon, and after a failure a child may be blocked
// for good on a counter that nobody serves any more, so the children are
// terminated first.
func fail(err error) {
	fmt.Fprintln(os.Stderr, "prodcons:", err)
	for _, p := range mp.ActiveChildren() {
		p.Terminate()
	}
	mp.Shutdown()
	os.Exit(1)
}

func main() {
	mp.Init()
	defer mp.Shutdown()
	var cfg config
	flag.IntVar(&cfg.bakers, "producers", 2, "number of bakers")
	flag.IntVar(&cfg.customers, "consumers", 3, "number of customers")
	flag.IntVar(&cfg.buns, "items", 8, "buns each baker bakes")
	flag.IntVar(&cfg.size, "size", 4, "buns the counter holds")
	flag.DurationVar(&cfg.work, "work", 20*time.Millisecond, "longest time to bake or eat a bun")
	timeout := flag.Duration("timeout", time.Minute, "give up if a run takes longer than this")
	flag.Parse()
	if cfg.bakers < 0 || cfg.customers < 1 || cfg.buns < 0 || cfg.size < 1 || cfg.work < 0 {
		fail(errors.New("need -consumers >= 1, -size >= 1, and no negative flag"))
	}
	// A child that fails may leave the others waiting: the deadline turns
	// that into an error instead of a hang.
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	fmt.Println("== run 1: a sentinel for each customer ==")
	err := bakery(ctx, cfg, func(counter *mp.Queue[*Bun]) error {
		for range cfg.customers {
			if err := counter.Put(ctx, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		fail(err)
	}

	fmt.Println("== run 2: the counter is closed ==")
	err = bakery(ctx, cfg, func(counter *mp.Queue[*Bun]) error {
		counter.Close()
		return nil
	})
	if err != nil {
		fail(err)
	}
	fmt.Printf("== done: two runs of %d buns each ==\n", cfg.bakers*cfg.buns)
}

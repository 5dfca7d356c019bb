// Tickets is the seeds' ticket rush (seeds 000, 001, 002 and 004; seed 001
// adds 12306, seed 003 the message-passing trend). Buyers check how many
// tickets are left, then buy one. The stock is a JSON database, a file
// holding {"count": N}, and every sale takes a while (-latency, the
// payment: the seeds sleep 0.1 to 0.5 s between reading the count and
// writing it back). Four ways to sell, each run against the same database,
// reset for each, and each paying the same latency per sale; what differs
// is where they pay it:
//
//   - unsafe: no coordination, the seeds' first attempt. Buyers read the
//     same count during one another's latency and each writes back its own
//     count-1: tickets are sold more than once, more are sold than there
//     were, and the database forgets most of the sales.
//   - lock: an mp.Lock around read, check and write, the seeds' fix. It
//     never oversells, but the latency is inside the critical section, so
//     the sales happen one at a time: tickets × latency. That is the honest
//     price of the lock, and the table shows it.
//   - queue: message passing instead of a lock, the trend of seed 003. One
//     seller process owns the database; buyers put orders on an mp.Queue
//     and wait for the seller's answer on their own process's reply queue.
//     Nothing to lock, because only one process touches the stock; the
//     sales are as serial as under the lock, the seller being the critical
//     section, but no buyer holds anything while it waits.
//   - memory: the 12306 design of seed 001. The stock is loaded from the
//     database into shared memory (an mp.Dict) before sales open; a
//     purchase is one atomic Dict.Update that reserves the ticket, with no
//     gap between reading and writing; the sale's latency is paid after it,
//     outside any lock, so sales overlap as in the unsafe way, without its
//     race. After the rush, a writer process writes the count back to the
//     database, once.
//
// By default all four run and the program prints one table: what each
// sold, how far beyond the stock, what the database says is left, and how
// fast. While buyers run, a progress line is rewritten on stderr when
// stderr is a terminal. With -v every buyer prints its own line.
//
// A ticket's number is the count its buyer saw: whoever saw 5 left bought
// ticket 5. Under the lock, the queue and the Dict, every number is sold
// once; without coordination, one number goes to several buyers, which is
// the oversell made visible.
//
// # Buyers and processes
//
// A buyer is a goroutine, and buyers are spread over at most -procs
// processes (by default four per CPU, and at least ten, so that the seeds'
// ten buyers are ten processes). A buyer spends its time waiting (for the
// latency, the lock, the seller's answer), not computing, so a thousand
// buyers need a thousand concurrent waits, not a thousand OS processes: on
// two cores, a thousand process start-ups would cost more than the rush.
// Buyers that share a process still race for the stock exactly as buyers
// in different processes do: the database is a file and the lock, queue
// and Dict are shared-memory primitives, none of which cares which process
// a goroutine is in. A Pool would be the wrong tool: a pool worker runs one
// task at a time, so only as many buyers as workers would be in the shop
// at once, and the rush, the point of the example, would be gone.
//
// # Latency
//
// The latency is the work of a sale besides the stock (the network, the
// payment), the same for every strategy: the database's reads and writes
// themselves are as fast as the file system. Unsafe, lock and queue pay it
// between reading the stock and writing it back, as the seeds do; memory
// pays it once the Dict has reserved the ticket. So the lock and the
// queue, whose critical section holds it, sell one ticket per latency,
// while unsafe and memory pay the latencies of all sales at once: that
// difference is the one the table shows, and -latency 0 removes it,
// leaving the cost of the coordination itself. A buyer who finds the stock
// empty has nothing to pay for and leaves at once (the seeds sleep before
// they look; that would only make every refusal slow as well). The elapsed
// time runs from the opening of sales until every buyer has been answered
// and the database holds the final count.
//
// Ctrl-C or SIGTERM stops the rush under way (mp.NotifyContext): buyers
// stop after the purchase they are making and report what they bought, the
// memory strategy's writer still writes the count back, and the program
// exits with status 130 or 143 after printing the table so far.
//
// The database is replaced by renaming a new file over it rather than
// rewritten in place, so a reader sees the old record or the new one, never
// a half-written file: the race shown here is the one between a buyer's
// read and its write, not one inside a write.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/multiproc/mp"
)

var strategies = []string{"unsafe", "lock", "queue", "memory"}

// Shop is what every process of one rush is given. Its primitives travel
// as handles: each process's copy is the same barrier, lock, queue or Dict.
// Those a strategy does not use are nil.
type Shop struct {
	Strategy string
	DB       string
	Latency  Latency
	Attempts int
	Verbose  bool
	// Open is where the buyer processes and the main process wait for
	// each other: sales open when every buyer is in the shop, so that the
	// first processes to start do not have the stock to themselves and
	// start-up is not part of the rush.
	Open *mp.Barrier
	// Results carries each buyer's outcome to the main process, which
	// counts on it, not on the -v lines.
	Results *mp.Queue[Outcome]
	Lock    *mp.Lock              // lock
	Stock   *mp.Dict[string, int] // memory
	Orders  *mp.Queue[Order]      // queue: buyers to the seller
	Replies []*mp.Queue[Answer]   // queue: the seller to each buyer process
}

// Order is a buyer's request to the seller.
type Order struct{ Proc, Buyer int }

// Answer is the seller's reply: the ticket sold, or 0 for sold out.
type Answer struct{ Buyer, Ticket int }

// Outcome is what a buyer reports when it is done.
type Outcome struct {
	Buyer, Pid, Attempts int
	Tickets              []int
}

func (o Outcome) String() string {
	if len(o.Tickets) == 0 {
		return fmt.Sprintf("buyer %d (pid %d) bought 0 of %d: sold out", o.Buyer, o.Pid, o.Attempts)
	}
	nums := make([]string, len(o.Tickets))
	for i, t := range o.Tickets {
		nums[i] = strconv.Itoa(t)
	}
	word := "ticket"
	if len(nums) > 1 {
		word = "tickets"
	}
	return fmt.Sprintf("buyer %d (pid %d) bought %d of %d: %s %s", o.Buyer, o.Pid, len(nums), o.Attempts, word, strings.Join(nums, " "))
}

// Latency is a random duration between Min and Max; as a flag, "100ms-500ms"
// or a single duration.
type Latency struct{ Min, Max time.Duration }

func (l *Latency) String() string {
	if l.Min == l.Max {
		return l.Min.String()
	}
	return l.Min.String() + "-" + l.Max.String()
}

func (l *Latency) Set(s string) error {
	first, second, ranged := strings.Cut(s, "-")
	lo, err := time.ParseDuration(first)
	if err != nil {
		return err
	}
	hi := lo
	if ranged {
		if hi, err = time.ParseDuration(second); err != nil {
			return err
		}
	}
	if lo < 0 || hi < lo {
		return fmt.Errorf("want MIN-MAX with 0 <= MIN <= MAX, got %q", s)
	}
	l.Min, l.Max = lo, hi
	return nil
}

func (l Latency) pause() {
	if l.Max > 0 {
		time.Sleep(l.Min + rand.N(l.Max-l.Min+1))
	}
}

func init() { mp.Register(buyers, sell, persist) }

// buyers runs buyers first to first+n-1, each a goroutine of this process,
// the proc'th buyer process. When ctx ends (the rush is interrupted), each
// buyer stops after the purchase under way and reports what it bought.
func buyers(ctx context.Context, s Shop, proc, first, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var buy func(buyer int) (ticket int, err error)
	switch s.Strategy {
	case "unsafe":
		buy = func(int) (int, error) { return sellFromDB(s.DB, s.Latency) }
	case "lock":
		buy = func(int) (int, error) {
			// A holder killed mid-sale left the database before or after
			// its one rename: there is nothing to repair.
			if err := s.Lock.Acquire(ctx); err != nil && !errors.Is(err, mp.ErrOwnerDied) {
				return 0, err
			}
			defer s.Lock.Release()
			return sellFromDB(s.DB, s.Latency)
		}
	case "queue":
		buy = s.orderer(ctx, proc, first, n)
	case "memory":
		buy = func(int) (int, error) {
			ticket := 0
			err := s.Stock.Update("count", func(left int, _ bool) (int, bool) {
				if left > 0 {
					ticket = left
					left--
				}
				return left, true
			})
			if ticket > 0 && err == nil {
				s.Latency.pause() // the sale's work, outside any lock
			}
			return ticket, err
		}
	default:
		return fmt.Errorf("unknown strategy %q", s.Strategy)
	}

	if _, err := s.Open.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted before sales opened: nothing bought
		}
		return err
	}
	pid := os.Getpid()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			out := Outcome{Buyer: first + i, Pid: pid, Attempts: s.Attempts}
			for range s.Attempts {
				if ctx.Err() != nil {
					break
				}
				ticket, err := buy(out.Buyer)
				if err != nil && ctx.Err() != nil {
					break // the interruption cut this purchase short
				}
				if err != nil {
					errs[i] = fmt.Errorf("buyer %d: %w", out.Buyer, err)
					return
				}
				if ticket > 0 {
					out.Tickets = append(out.Tickets, ticket)
				}
			}
			if s.Verbose {
				fmt.Println(out)
			}
			errs[i] = s.Results.Put(context.WithoutCancel(ctx), out)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// orderer returns the queue strategy's purchase: an order to the seller,
// then the wait for its answer. The seller answers every buyer of this
// process on one queue, so one goroutine hands each answer to its buyer,
// who has one order out at a time.
func (s Shop) orderer(ctx context.Context, proc, first, n int) func(int) (int, error) {
	answers := make([]chan Answer, n)
	for i := range answers {
		answers[i] = make(chan Answer, 1)
	}
	broken := make(chan struct{})
	var brokenErr error
	go func() {
		defer close(broken)
		for {
			a, err := s.Replies[proc].Get(ctx)
			if err == nil && (a.Buyer < first || a.Buyer >= first+n) {
				err = fmt.Errorf("answer for buyer %d, not one of this process's", a.Buyer)
			}
			if err != nil {
				brokenErr = err // ctx's end, once every buyer here is done
				return
			}
			answers[a.Buyer-first] <- a
		}
	}()
	return func(buyer int) (int, error) {
		if err := s.Orders.Put(ctx, Order{Proc: proc, Buyer: buyer}); err != nil {
			return 0, err
		}
		select {
		case a := <-answers[buyer-first]:
			return a.Ticket, nil
		case <-broken:
			return 0, fmt.Errorf("waiting for the seller: %w", brokenErr)
		}
	}
}

// sell is the queue strategy's seller: the one process that reads and
// writes the database, one order at a time, until the orders are closed.
func sell(s Shop) error {
	ctx := context.Background()
	for {
		o, err := s.Orders.Get(ctx)
		if errors.Is(err, mp.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		if o.Proc < 0 || o.Proc >= len(s.Replies) {
			return fmt.Errorf("order from buyer process %d of %d", o.Proc, len(s.Replies))
		}
		ticket, err := sellFromDB(s.DB, s.Latency)
		if err != nil {
			return err
		}
		if err := s.Replies[o.Proc].Put(ctx, Answer{Buyer: o.Buyer, Ticket: ticket}); err != nil {
			return err
		}
	}
}

// persist is the memory strategy's writer: after the rush, the count in
// shared memory goes back to the database.
func persist(s Shop) error {
	left, ok, err := s.Stock.Get("count")
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("no count in shared memory")
	}
	return writeDB(s.DB, left)
}

// sellFromDB is one purchase against the database: read the count, and if
// there is a ticket, take the latency and write back one less. It returns
// the ticket's number (the count it read), or 0 when sold out.
func sellFromDB(db string, l Latency) (int, error) {
	left, err := readDB(db)
	if err != nil || left <= 0 {
		return 0, err
	}
	l.pause()
	return left, writeDB(db, left-1)
}

type record struct {
	Count int `json:"count"`
}

func readDB(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return r.Count, nil
}

// writeDB replaces the database by renaming a new file over it, so that a
// concurrent reader never sees it truncated (see the package comment).
func writeDB(path string, count int) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "{\"count\": %d}\n", count)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

type config struct {
	buyers, tickets, attempts, procs int
	latency                          Latency
	db                               string
	verbose, progress                bool
}

// result is one rush as the main process saw it.
type result struct {
	strategy   string
	sold, left int
	elapsed    time.Duration
	shared     int // ticket numbers sold to more than one buyer
	worst      int // the ticket number sold to the most buyers
	worstCount int // how many
	// interrupted: a signal stopped the rush; the count was written back
	// all the same.
	interrupted bool
}

// crew is the processes of one rush. If one fails, the rush is void: the
// others are killed rather than left waiting for it (a buyer for the
// seller's answer, say), and the first failure is the one reported.
type crew struct {
	ctx     context.Context // once it ends, a process's failure is the interruption's
	mu      sync.Mutex
	procs   []*mp.Process
	err     error
	onAbort func() // breaks the barrier, which does not notice a dead party
}

func (c *crew) start(p *mp.Process) error {
	if err := p.Start(); err != nil {
		c.abort(err)
		return err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	aborted := c.err != nil
	c.mu.Unlock()
	if aborted {
		p.Kill()
	}
	go func() {
		if err := p.Join(context.Background()); err != nil && c.ctx.Err() == nil {
			c.abort(err)
		}
	}()
	return nil
}

func (c *crew) abort(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.onAbort != nil {
		c.onAbort()
	}
	for _, p := range c.procs {
		p.Kill()
	}
}

// wait joins ps and returns the crew's first failure, if any.
func (c *crew) wait(ps ...*mp.Process) error {
	for _, p := range ps {
		p.Join(context.Background())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// rush runs one strategy from a fresh database to the count written back.
// If ctx ends (a signal), the buyers stop, and the rush ends as it would
// have: the memory strategy's writer writes the count back.
func rush(ctx context.Context, c config, strategy string) (res result, err error) {
	res.strategy = strategy
	if err := writeDB(c.db, c.tickets); err != nil {
		return res, err
	}
	procs := min(c.procs, c.buyers)
	s := Shop{Strategy: strategy, DB: c.db, Latency: c.latency, Attempts: c.attempts, Verbose: c.verbose}
	if s.Open, err = mp.NewBarrier(procs+1, nil); err != nil {
		return res, err
	}
	// No buyer has more than one order or outcome in a queue at a time, so
	// queues of one slot per buyer never make anyone wait for room.
	if s.Results, err = mp.NewQueue[Outcome](min(c.buyers, mp.DefaultQueueSize)); err != nil {
		return res, err
	}
	defer s.Results.Close()
	crew := crew{ctx: ctx, onAbort: s.Open.Abort}
	var seller *mp.Process
	switch strategy {
	case "lock":
		if s.Lock, err = mp.NewLock(); err != nil {
			return res, err
		}
	case "memory":
		if s.Stock, err = mp.NewDict[string, int](); err != nil {
			return res, err
		}
		left, err := readDB(c.db)
		if err != nil {
			return res, err
		}
		if err := s.Stock.Set("count", left); err != nil {
			return res, err
		}
	case "queue":
		if s.Orders, err = mp.NewQueue[Order](min(c.buyers, mp.DefaultQueueSize)); err != nil {
			return res, err
		}
		defer s.Orders.Close()
		for k := range procs {
			q, err := mp.NewQueue[Answer](min(share(c.buyers, procs, k), mp.DefaultQueueSize))
			if err != nil {
				return res, err
			}
			s.Replies = append(s.Replies, q)
		}
		seller = mp.NewProcess(sell, s)
		seller.Name = "seller"
		if err := crew.start(seller); err != nil {
			return res, err
		}
	}

	var ps []*mp.Process
	first := 0
	for k := range procs {
		n := share(c.buyers, procs, k)
		p := mp.NewProcess(buyers, s, k, first, n)
		p.Name = fmt.Sprintf("buyers %d-%d", first, first+n-1)
		if err := crew.start(p); err != nil {
			crew.wait(ps...)
			return res, err
		}
		ps = append(ps, p)
		first += n
	}

	var (
		done, sold atomic.Int64
		reported   = make([]bool, c.buyers)
		owners     = map[int]int{} // ticket number -> buyers who got it
		collectErr error
		collected  = make(chan struct{})
	)
	go func() {
		defer close(collected)
		for {
			o, err := s.Results.Get(context.Background())
			if errors.Is(err, mp.ErrClosed) {
				return
			}
			if err == nil && (o.Buyer < 0 || o.Buyer >= c.buyers || reported[o.Buyer]) {
				err = fmt.Errorf("unexpected outcome for buyer %d", o.Buyer)
			}
			if err != nil {
				collectErr = err
				return
			}
			reported[o.Buyer] = true
			for _, t := range o.Tickets {
				owners[t]++
			}
			sold.Add(int64(len(o.Tickets)))
			done.Add(1)
		}
	}()
	if c.progress {
		stop := showProgress(strategy, c.buyers, &done, &sold)
		defer stop()
	}

	if _, err := s.Open.Wait(ctx); err != nil && ctx.Err() == nil {
		crew.abort(err)
	}
	start := time.Now()
	err = crew.wait(ps...)
	s.Results.Close()
	<-collected
	if err != nil {
		return res, err
	}
	if collectErr != nil {
		return res, collectErr
	}
	res.interrupted = ctx.Err() != nil
	if n := done.Load(); n != int64(c.buyers) && !res.interrupted {
		return res, fmt.Errorf("%d of %d buyers reported", n, c.buyers)
	}
	switch strategy {
	case "queue":
		s.Orders.Close() // the seller sells what is queued, then stops
		if err := crew.wait(seller); err != nil {
			return res, err
		}
	case "memory":
		w := mp.NewProcess(persist, s)
		w.Name = "writer"
		if err := crew.start(w); err != nil {
			return res, err
		}
		if err := crew.wait(w); err != nil {
			return res, err
		}
	}
	res.elapsed = time.Since(start)
	res.sold = int(sold.Load())
	for t, n := range owners {
		if n > 1 {
			res.shared++
		}
		if n > res.worstCount || n == res.worstCount && t > res.worst {
			res.worst, res.worstCount = t, n
		}
	}
	res.left, err = readDB(c.db)
	return res, err
}

// share is how many of n buyers process k of procs runs: as even as can be.
func share(n, procs, k int) int {
	return (k+1)*n/procs - k*n/procs
}

// showProgress rewrites a line on stderr until the returned stop is
// called, which erases it.
func showProgress(strategy string, buyers int, done, sold *atomic.Int64) (stop func()) {
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				fmt.Fprintf(os.Stderr, "\r%s: %d/%d buyers done, %d tickets sold\x1b[K", strategy, done.Load(), buyers, sold.Load())
			case <-quit:
				fmt.Fprint(os.Stderr, "\r\x1b[K")
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

// isTerminal reports whether f is a character device: a terminal, or
// /dev/null, where the progress line does no harm either.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func main() {
	mp.Init()
	defer mp.Shutdown() // after Ctrl-C or SIGTERM: exits 130 or 143 once the tree is down
	// Ctrl-C or SIGTERM stops the buyers; the rush under way still writes
	// its count back (see NotifyContext).
	ctx, stop := mp.NotifyContext(context.Background())
	defer stop()

	c := config{latency: Latency{100 * time.Millisecond, 500 * time.Millisecond}}
	flag.IntVar(&c.buyers, "buyers", 10, "number of buyers")
	flag.IntVar(&c.tickets, "tickets", 5, "tickets in stock")
	flag.IntVar(&c.attempts, "attempts", 1, "purchase attempts per buyer")
	flag.IntVar(&c.procs, "procs", max(4*mp.CPUCount(), 10), "most buyer processes; buyers beyond it share processes as goroutines")
	flag.Var(&c.latency, "latency", "the work of each sale, in every strategy: MIN-MAX (random) or one duration; 0 for none")
	flag.StringVar(&c.db, "db", "", "the JSON database, reset to {\"count\": tickets} for each strategy (default: a file in a temporary directory)")
	strategy := flag.String("strategy", "all", "unsafe, lock, queue, memory or all")
	flag.BoolVar(&c.verbose, "v", false, "every buyer prints its own line")
	flag.Parse()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "tickets:", err)
		mp.Shutdown()
		os.Exit(1)
	}
	if c.buyers < 1 || c.tickets < 0 || c.attempts < 1 || c.procs < 1 {
		fail(errors.New("want -buyers, -attempts and -procs at least 1, -tickets at least 0"))
	}
	run := strategies
	if *strategy != "all" {
		if !slices.Contains(strategies, *strategy) {
			fail(fmt.Errorf("unknown strategy %q: want %s or all", *strategy, strings.Join(strategies, ", ")))
		}
		run = []string{*strategy}
	}
	if c.db == "" {
		dir, err := os.MkdirTemp("", "tickets")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(dir)
		c.db = filepath.Join(dir, "ticket.json")
	}
	// With -v the buyers' own lines are the progress, and they would tear
	// a line rewritten in place.
	c.progress = !c.verbose && isTerminal(os.Stderr)

	fmt.Printf("%d buyers, %s each, rush for %d tickets; each sale takes %v (in memory, after the reservation); buyers in %d processes\n",
		c.buyers, plural(c.attempts, "attempt"), c.tickets, &c.latency, min(c.procs, c.buyers))
	var results []result
	for _, st := range run {
		if c.verbose {
			fmt.Printf("%s:\n", st)
		}
		r, err := rush(ctx, c, st)
		if err != nil {
			fail(fmt.Errorf("%s: %w", st, err))
		}
		results = append(results, r)
		if r.interrupted {
			break
		}
	}
	report(c, results)
	if ctx.Err() != nil {
		r := results[len(results)-1]
		fmt.Printf("\n%s: interrupted (%v): %d sold; the database says %d left\n", r.strategy, context.Cause(ctx), r.sold, r.left)
	}
}

func report(c config, results []result) {
	attempts := c.buyers * c.attempts
	rows := [][]string{{"strategy", "buyers", "tickets", "sold", "oversold", "left in db", "elapsed", "attempts/s"}}
	for _, r := range results {
		rate := fmt.Sprintf("%.0f", float64(attempts)/r.elapsed.Seconds())
		if r.interrupted {
			rate = "-" // not every attempt was made
		}
		rows = append(rows, []string{r.strategy, strconv.Itoa(c.buyers), strconv.Itoa(c.tickets), strconv.Itoa(r.sold),
			strconv.Itoa(max(r.sold-c.tickets, 0)), strconv.Itoa(r.left), r.elapsed.Round(time.Millisecond).String(), rate})
	}
	fmt.Println()
	printTable(rows)
	for _, r := range results {
		if r.shared == 0 && r.sold == c.tickets-r.left {
			continue
		}
		// A sale that left no trace in the database was overwritten by
		// another buyer's write of the same count.
		fmt.Printf("\n%s: %d sold from a stock of %d (%d oversold); %s sold more than once (ticket %d to %d buyers); the database says %d left: %d of the %d sales were overwritten\n",
			r.strategy, r.sold, c.tickets, max(r.sold-c.tickets, 0), plural(r.shared, "ticket"), r.worst, r.worstCount,
			r.left, r.sold-(c.tickets-r.left), r.sold)
	}
}

// printTable prints rows in columns, the first left-aligned, the numbers
// right-aligned.
func printTable(rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len(cell))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, cell := range row {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", widths[i], cell)
			} else {
				fmt.Fprintf(&b, "  %*s", widths[i], cell)
			}
		}
		fmt.Println(b.String())
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

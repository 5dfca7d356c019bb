// Command status is a small workload to watch on the status page: a pool
// squaring numbers in batches, a producer and a consumer passing orders
// through a queue, and a lock they take now and then.
//
//	go run ./examples/status -status 127.0.0.1:6060
//
// then open http://127.0.0.1:6060/ (MULTIPROC_STATUS=127.0.0.1:6060 does
// the same for any mp program, without the flag). It runs until it is
// interrupted, or for -duration.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/multiproc/mp"
	_ "github.com/multiproc/mp/metrics" // adds /metrics to the status page
)

func square(x int) int {
	time.Sleep(2 * time.Millisecond)
	return x * x
}

// produce puts an order every few milliseconds, taking the ledger lock for
// each.
func produce(ctx context.Context, orders *mp.Queue[int], ledger *mp.Lock) error {
	for i := 0; ctx.Err() == nil; i++ {
		if err := ledger.Acquire(ctx); err != nil && err != mp.ErrOwnerDied {
			return nil
		}
		ledger.Release()
		if err := orders.Put(ctx, i); err != nil {
			return nil
		}
		time.Sleep(3 * time.Millisecond)
	}
	return nil
}

// consume takes orders, a little slower than they come in bursts.
func consume(ctx context.Context, orders *mp.Queue[int]) error {
	for ctx.Err() == nil {
		if _, err := orders.Get(ctx); err != nil {
			return nil
		}
		time.Sleep(4 * time.Millisecond)
	}
	return nil
}

func init() { mp.Register(square, produce, consume) }

func main() {
	mp.Init()
	defer mp.Shutdown()
	addr := flag.String("status", "127.0.0.1:6060", "address of the status page (port 0: any free port)")
	workers := flag.Int("workers", 3, "pool workers")
	duration := flag.Duration("duration", 0, "how long to run (0: until interrupted)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: mp.StatusHandler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Printf("status page at http://%s/\n", ln.Addr())

	orders := mp.Must(mp.NewQueue[int](64))
	orders.SetName("orders")
	ledger := mp.Must(mp.NewLock())
	ledger.SetName("ledger")
	pool := mp.Must(mp.NewPool(*workers))
	pool.SetName("squares")
	defer pool.Terminate()

	var procs []*mp.Process
	for _, p := range []*mp.Process{mp.NewProcess(produce, orders, ledger), mp.NewProcess(consume, orders)} {
		p.Daemon = true
		if err := p.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		procs = append(procs, p)
	}
	items := make([]int, 200)
	for i := range items {
		items[i] = i
	}
	for batch := 1; ctx.Err() == nil; batch++ {
		// A worker killed from outside fails its task; the pool replaces
		// it and the next batch goes on.
		if _, err := mp.Map[int](ctx, pool, square, items, mp.WithChunkSize(4)); err != nil && ctx.Err() == nil {
			fmt.Printf("batch %d: %v\n", batch, err)
		}
	}
	for _, p := range procs {
		p.Terminate()
		p.Join(context.Background())
	}
}

// Queueapi walks through the Queue API of the seeds (000, 004): a queue of
// maxsize 5, Put until it is Full, TryPut refused with ErrFull (Python's
// put_nowait raising queue.Full), Gets in first-in first-out order, TryGet
// refused with ErrEmpty (get_nowait raising queue.Empty), Empty, and a Get
// with a deadline instead of Python's blocking forever.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/multiproc/mp"
)

func main() {
	mp.Init()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "queueapi:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	q, err := mp.NewQueue[int](5)
	if err != nil {
		return err
	}
	for i := 1; i <= 5; i++ {
		if err := q.Put(ctx, i); err != nil {
			return err
		}
		fmt.Println("put", i)
	}
	fmt.Println("full:", q.Full(), "len:", q.Len())

	// Put would block here until a consumer made room; TryPut says so.
	if err := q.TryPut(6); errors.Is(err, mp.ErrFull) {
		fmt.Println("TryPut(6):", err)
	} else {
		return fmt.Errorf("TryPut on a full queue: %v", err)
	}

	for range 5 {
		v, err := q.Get(ctx)
		if err != nil {
			return err
		}
		fmt.Println("got", v)
	}
	if _, err := q.TryGet(); errors.Is(err, mp.ErrEmpty) {
		fmt.Println("TryGet:", err)
	} else {
		return fmt.Errorf("TryGet on an empty queue: %v", err)
	}
	fmt.Println("empty:", q.Empty())

	// Python's q.get() on an empty queue waits forever; a deadline bounds it.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := q.Get(short); errors.Is(err, context.DeadlineExceeded) {
		fmt.Println("Get with a 100ms deadline:", err)
	} else {
		return fmt.Errorf("Get with a deadline on an empty queue: %v", err)
	}

	if err := q.Put(ctx, 6); err != nil {
		return err
	}
	fmt.Println("put 6")
	q.Close()
	if err := q.Put(ctx, 7); errors.Is(err, mp.ErrClosed) {
		fmt.Println("Put after Close:", err)
	}
	for {
		v, err := q.Get(ctx)
		if errors.Is(err, mp.ErrClosed) {
			fmt.Println("drained, then:", err)
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Println("got", v)
	}
}

// IPC shows the seeds' "IPC mechanism" (seeds 002 and 004): processes do
// not share memory, so whatever one wants another to know has to travel as
// a message, through a queue or through a pipe.
//
// First, a queue. A writer process puts messages into an mp.Queue and a
// reader process, which knows nothing about the writer but the queue, takes
// them out in the order they were put. The queue holds at most three (the
// seed's Queue(3)), so the writer waits whenever the slower reader falls
// three behind. Having put the last message the writer closes the queue, and
// the reader, once it has taken what was left, gets mp.ErrClosed: that is
// how it knows the conversation is over, without a special last message.
//
// Then the same conversation over a duplex pipe, the other mechanism the
// seeds name. A pipe joins exactly two ends: the parent asks questions on
// one, a child answers on the other, and when the parent closes its end the
// child's Recv returns io.EOF.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/multiproc/mp"
)

// Message is what the writer sends the reader. Any encodable value can be
// put in a queue; a struct shows that the fields travel, not a pointer.
type Message struct {
	Seq  int
	Text string
}

// writer puts n messages into q, then closes it.
func writer(q *mp.Queue[Message], n int) error {
	// Closed even if a Put fails, so that the reader is never left waiting
	// for a message that will not come.
	defer q.Close()
	// The child is killed if its parent dies, and the parent has a
	// deadline, so the child's own calls need none.
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		m := Message{Seq: i, Text: fmt.Sprintf("hello number %d", i)}
		if err := q.Put(ctx, m); err != nil {
			return err
		}
		fmt.Printf("writer: put %d %q\n", m.Seq, m.Text)
	}
	fmt.Println("writer: closing the queue")
	return nil
}

// reader takes messages from q until it is closed and empty.
func reader(q *mp.Queue[Message], work time.Duration) error {
	ctx := context.Background()
	for {
		m, err := q.Get(ctx)
		if errors.Is(err, mp.ErrClosed) {
			fmt.Println("reader: queue closed and empty, done")
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Printf("reader: got %d %q\n", m.Seq, m.Text)
		time.Sleep(work) // slower than the writer, so that the queue fills up
	}
}

// answer replies to each question it receives on c with its square, until
// the other end is closed.
func answer(c *mp.Conn) error {
	defer c.Close()
	ctx := context.Background()
	for {
		var q int
		err := c.Recv(ctx, &q)
		if errors.Is(err, io.EOF) {
			fmt.Println("child: io.EOF, the parent closed its end")
			return nil
		}
		if err != nil {
			return err
		}
		// Printed before the answer is sent, so it always comes out before
		// the parent's line about it.
		fmt.Printf("child: received %d, sending back %d\n", q, q*q)
		if err := c.Send(q * q); err != nil {
			return err
		}
	}
}

func init() { mp.Register(writer, reader, answer) }

func overQueue(ctx context.Context, n int, work time.Duration) error {
	fmt.Println("== over a Queue ==")
	q, err := mp.NewQueue[Message](3)
	if err != nil {
		return err
	}
	w := mp.NewProcess(writer, q, n)
	w.Name = "writer"
	r := mp.NewProcess(reader, q, work)
	r.Name = "reader"
	for _, p := range []*mp.Process{w, r} {
		if err := p.Start(); err != nil {
			return err
		}
	}
	for _, p := range []*mp.Process{w, r} {
		if err := p.Join(ctx); err != nil {
			return err
		}
	}
	fmt.Println("main: writer and reader done")
	return nil
}

func overPipe(ctx context.Context, n int) error {
	fmt.Println("== over a Pipe ==")
	mine, theirs, err := mp.Pipe(true)
	if err != nil {
		return err
	}
	child := mp.NewProcess(answer, theirs)
	child.Name = "answerer"
	if err := child.Start(); err != nil {
		return err
	}
	// Unlike Python, the parent does not close the end it handed over: its
	// claim on that end passes to the child when the child receives it, and
	// from then on the child's Close or death alone makes this end see
	// io.EOF. Closing it here, as Python programs do, would shut the pipe
	// if the child had not received its end yet.
	for i := 1; i <= n; i++ {
		if err := mine.Send(i); err != nil {
			return err
		}
		var sq int
		if err := mine.Recv(ctx, &sq); err != nil {
			if errors.Is(err, io.EOF) {
				// The child hung up early; its Join says why.
				if jerr := child.Join(ctx); jerr != nil {
					return jerr
				}
				return fmt.Errorf("the child hung up after %d answers", i-1)
			}
			return err
		}
		fmt.Printf("parent: sent %d, received %d\n", i, sq)
	}
	// How the child learns that the conversation is over.
	if err := mine.Close(); err != nil {
		return err
	}
	if err := child.Join(ctx); err != nil {
		return err
	}
	fmt.Println("main: child done")
	return nil
}

// fail reports err and exits with status 1. Shutdown waits for every
// child that is not a daemon, and after a failure a child may be blocked
// for good on a queue or pipe that nobody serves any more, so the children
// are terminated first.
func fail(err error) {
	fmt.Fprintln(os.Stderr, "ipc:", err)
	for _, p := range mp.ActiveChildren() {
		p.Terminate()
	}
	mp.Shutdown()
	os.Exit(1)
}

func main() {
	mp.Init()
	defer mp.Shutdown()
	n := flag.Int("n", 5, "messages in each conversation")
	work := flag.Duration("work", 20*time.Millisecond, "time the queue's reader spends on each message")
	timeout := flag.Duration("timeout", time.Minute, "give up if the conversations take longer than this")
	flag.Parse()
	if *n < 0 || *work < 0 {
		fail(errors.New("-n and -work must not be negative"))
	}
	// A child that fails leaves its partner waiting: the deadline turns
	// that into an error instead of a hang.
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	if err := overQueue(ctx, *n, *work); err != nil {
		fail(err)
	}
	if err := overPipe(ctx, *n); err != nil {
		fail(err)
	}
}

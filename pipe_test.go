package mp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

type note struct {
	From string
	Seq  int
	Tags []string
}

// echo sends back every message it receives, until EOF.
func echo(c *mp.Conn) error {
	for {
		var n note
		err := c.Recv(context.Background(), &n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		n.From = "child"
		if err := c.Send(n); err != nil {
			return err
		}
	}
}

// recvForever blocks in Recv, having told the test it holds the end.
func recvForever(c *mp.Conn, ready *mp.Event) error {
	ready.Set()
	var v int
	return c.Recv(context.Background(), &v)
}

// sendThenExit sends n numbers and returns without closing its end.
func sendThenExit(c *mp.Conn, n int) error {
	for i := 0; i < n; i++ {
		if err := c.Send(i); err != nil {
			return err
		}
	}
	return nil
}

// connFromQueue takes an end from a queue and sends a greeting on it.
func connFromQueue(q *mp.Queue[*mp.Conn]) error {
	c, err := q.Get(context.Background())
	if err != nil {
		return err
	}
	return c.Send("hello through a queue")
}

func init() { mp.Register(echo, recvForever, sendThenExit, connFromQueue) }

func pipe(t *testing.T, duplex bool) (*mp.Conn, *mp.Conn) {
	t.Helper()
	a, b, err := mp.Pipe(duplex)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func within(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestPipeEchoAcrossProcesses(t *testing.T) {
	a, b := pipe(t, true)
	p := mp.NewProcess(echo, b)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx := within(t)
	for i := 0; i < 1000; i++ {
		if err := a.Send(note{From: "parent", Seq: i, Tags: []string{fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
		var got note
		if err := a.Recv(ctx, &got); err != nil {
			t.Fatal(err)
		}
		if got.From != "child" || got.Seq != i || len(got.Tags) != 1 || got.Tags[0] != fmt.Sprint(i) {
			t.Fatalf("round trip %d: got %+v", i, got)
		}
	}
	// The parent never used b, so its claim passed to the child: closing
	// a is enough for the child to see EOF and end.
	a.Close()
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
}

func TestPipeBoundariesAndEmptyMessages(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	defer b.Close()
	ctx := within(t)
	msgs := [][]byte{{}, []byte("x"), {}, make([]byte, 5000), []byte("end")}
	for _, m := range msgs {
		if err := a.SendBytes(m); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range msgs {
		got, err := b.RecvBytes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil || string(got) != string(want) {
			t.Fatalf("message %d: got %d bytes (nil %v), want %d", i, len(got), got == nil, len(want))
		}
	}
	// Typed values, including an empty string and a zero struct.
	for _, v := range []any{"", 0, note{}, []int{1, 2}} {
		if err := b.Send(v); err != nil {
			t.Fatal(err)
		}
	}
	var s string
	var n int
	var nt note
	var is []int
	for _, p := range []any{&s, &n, &nt, &is} {
		if err := a.Recv(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if s != "" || n != 0 || nt.From != "" || len(is) != 2 || is[1] != 2 {
		t.Fatalf("typed values: %q %d %+v %v", s, n, nt, is)
	}
}

func TestPipeOneWay(t *testing.T) {
	r, w := pipe(t, false)
	defer r.Close()
	defer w.Close()
	if err := r.Send(1); !errors.Is(err, mp.ErrNotSupported) {
		t.Fatalf("Send on the receiving end = %v", err)
	}
	var v int
	if err := w.Recv(context.Background(), &v); !errors.Is(err, mp.ErrNotSupported) {
		t.Fatalf("Recv on the sending end = %v", err)
	}
	if _, err := w.Poll(context.Background()); !errors.Is(err, mp.ErrNotSupported) {
		t.Fatalf("Poll on the sending end = %v", err)
	}
	if err := w.Send(7); err != nil {
		t.Fatal(err)
	}
	if err := r.Recv(within(t), &v); err != nil || v != 7 {
		t.Fatalf("Recv = %d, %v", v, err)
	}
}

func TestPipeCloseGivesEOF(t *testing.T) {
	a, b := pipe(t, true)
	ctx := within(t)
	if err := a.Send(1); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(2); err != nil {
		t.Fatal(err)
	}
	// A Recv blocked in another goroutine must see the close too.
	var wg sync.WaitGroup
	wg.Add(1)
	var blockedErr error
	go func() {
		defer wg.Done()
		var v int
		blockedErr = a.Recv(ctx, &v)
	}()
	b.Close()
	wg.Wait()
	if blockedErr != io.EOF {
		t.Fatalf("blocked Recv after peer Close = %v, want io.EOF", blockedErr)
	}
	if err := a.Send(3); err != io.ErrClosedPipe {
		t.Fatalf("Send after peer Close = %v, want io.ErrClosedPipe", err)
	}
	var v int
	if err := b.Recv(ctx, &v); !errors.Is(err, mp.ErrClosed) {
		t.Fatalf("Recv on a closed Conn = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	a.Close()
}

func TestPipeDrainsBeforeEOF(t *testing.T) {
	a, b := pipe(t, false)
	p := mp.NewProcess(sendThenExit, b, 100)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	// The child exited without closing: everything it sent is still
	// delivered, then EOF.
	ctx := within(t)
	for i := 0; i < 100; i++ {
		var v int
		if err := a.Recv(ctx, &v); err != nil || v != i {
			t.Fatalf("Recv %d = %d, %v", i, v, err)
		}
	}
	var v int
	if err := a.Recv(ctx, &v); err != io.EOF {
		t.Fatalf("Recv after the last message = %v, want io.EOF", err)
	}
	if ok, err := a.Poll(ctx); !ok || err != nil {
		t.Fatalf("Poll at EOF = %v, %v; want true", ok, err)
	}
	a.Close()
}

// startReceiver starts a child that holds end and blocks in Recv on it,
// and waits until it is there.
func startReceiver(t *testing.T, end *mp.Conn) *mp.Process {
	t.Helper()
	ready := mp.Must(mp.NewEvent())
	p := mp.NewProcess(recvForever, end, ready)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ready.Wait(within(t)); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPipePeerKilled(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	p := startReceiver(t, b)
	// The parent is (or is about to be) blocked in Recv when the child
	// dies; either way it must end with EOF.
	recvDone := make(chan error, 1)
	go func() {
		var v int
		recvDone <- a.Recv(within(t), &v)
	}()
	p.Kill()
	join(t, p)
	if err := <-recvDone; err != io.EOF {
		t.Fatalf("Recv from a killed peer = %v, want io.EOF", err)
	}
	var err error
	for i := 0; i <= mp.PipeSize && err == nil; i++ {
		err = a.Send(i)
	}
	if err != io.ErrClosedPipe {
		t.Fatalf("Send to a killed peer = %v, want io.ErrClosedPipe", err)
	}
}

func TestPipeSendBlocksUntilPeerDies(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	p := startReceiver(t, b)
	// Fill the pipe: the child takes at most one message.
	for i := 0; i < mp.PipeSize; i++ {
		if err := a.Send(i); err != nil {
			t.Fatal(err)
		}
	}
	// Whether this Send is already blocked or not when the child dies, it
	// must end with io.ErrClosedPipe.
	sent := make(chan error, 1)
	go func() {
		var err error
		for err == nil {
			err = a.Send(-1)
		}
		sent <- err
	}()
	p.Kill()
	join(t, p)
	if err := <-sent; err != io.ErrClosedPipe {
		t.Fatalf("blocked Send to a killed peer = %v, want io.ErrClosedPipe", err)
	}
}

func TestPipePoll(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	defer b.Close()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := b.Poll(done); ok || err != context.Canceled {
		t.Fatalf("Poll of an empty pipe with a done context = %v, %v", ok, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if ok, err := b.Poll(short); ok || err != context.DeadlineExceeded {
		t.Fatalf("Poll of an empty pipe = %v, %v", ok, err)
	}
	go a.Send("later")
	if ok, err := b.Poll(within(t)); !ok || err != nil {
		t.Fatalf("Poll with a message coming = %v, %v", ok, err)
	}
	// Poll does not consume.
	var s string
	if err := b.Recv(within(t), &s); err != nil || s != "later" {
		t.Fatalf("Recv after Poll = %q, %v", s, err)
	}
}

func TestPipeBadInput(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	defer b.Close()
	ctx := within(t)
	if err := a.Send(func() {}); !errors.Is(err, mp.ErrUnencodable) {
		t.Fatalf("Send of a func = %v", err)
	}
	if err := a.SendBytes(make([]byte, mp.MaxMessage+1)); !errors.Is(err, mp.ErrTooLarge) {
		t.Fatalf("SendBytes of an oversized message = %v", err)
	}
	var v int
	if err := b.Recv(ctx, v); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("Recv into a non-pointer = %v", err)
	}
	if err := a.SendBytes([]byte{0xff, 0x00, 0x13}); err != nil {
		t.Fatal(err)
	}
	if err := a.Send("text"); err != nil {
		t.Fatal(err)
	}
	if err := b.Recv(ctx, &v); !errors.Is(err, mp.ErrCorrupt) {
		t.Fatalf("Recv of garbage = %v, want ErrCorrupt", err)
	}
	if err := b.Recv(ctx, &v); !errors.Is(err, mp.ErrCorrupt) {
		t.Fatalf("Recv of a string into an int = %v, want ErrCorrupt", err)
	}
	// Messages that trip the decoder's limits (which Send's encoder has
	// too) are corrupt as well, and say which limit.
	deep := []byte{0xC1} // the codec's tag for CBOR, then [[[[...0]]]]
	for range 2000 {
		deep = append(deep, 0x81)
	}
	deep = append(deep, 0x00)
	huge := []byte{0xC1, 0x9B, 0, 0, 0, 0, 0x40, 0, 0, 0, 0} // an array head claiming 2^30 items
	for _, tc := range []struct {
		name, msg string
		data      []byte
	}{
		{"a message nested 2000 deep", "nest", deep},
		{"an array head of 2^30 items", "elements", huge},
	} {
		if err := a.SendBytes(tc.data); err != nil {
			t.Fatal(err)
		}
		var x any
		if err := b.Recv(ctx, &x); !errors.Is(err, mp.ErrCorrupt) || !strings.Contains(err.Error(), tc.msg) {
			t.Fatalf("Recv of %s = %v, want ErrCorrupt saying %q", tc.name, err, tc.msg)
		}
	}
	// The pipe is still usable.
	if err := a.Send(5); err != nil {
		t.Fatal(err)
	}
	if err := b.Recv(ctx, &v); err != nil || v != 5 {
		t.Fatalf("Recv after bad messages = %d, %v", v, err)
	}
	var zero mp.Conn
	if err := zero.UnmarshalBinary([]byte("garbage")); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("UnmarshalBinary of garbage = %v", err)
	}
}

func TestPipeThroughQueue(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	q := mp.Must(mp.NewQueue[*mp.Conn](1))
	p := mp.NewProcess(connFromQueue, q)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := q.Put(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	var s string
	if err := a.Recv(within(t), &s); err != nil || s != "hello through a queue" {
		t.Fatalf("Recv = %q, %v", s, err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := a.Recv(within(t), &v); err != io.EOF {
		t.Fatalf("Recv after the child exited = %v, want io.EOF", err)
	}
}

func TestPipeManyGoroutines(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	defer b.Close()
	const senders, each = 8, 500
	ctx := within(t)
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := a.Send([2]int{s, i}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var mu sync.Mutex
	next := make([]int, senders)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var m [2]int
				if err := b.Recv(ctx, &m); err != nil {
					if err != io.EOF {
						t.Error(err)
					}
					return
				}
				mu.Lock()
				next[m[0]]++
				mu.Unlock()
			}
		}()
	}
	eventually(t, "every message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range next {
			if n != each {
				return false
			}
		}
		return true
	})
	a.Close()
	wg.Wait()
}

func TestPipeParentClosesHandedEnd(t *testing.T) {
	a, b := pipe(t, true)
	p := mp.NewProcess(echo, b)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	b.Close() // what Python programs do: harmless here
	if err := a.Send(note{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	var got note
	if err := a.Recv(within(t), &got); err != nil || got.Seq != 1 || got.From != "child" {
		t.Fatalf("round trip after closing the handed end: %+v, %v", got, err)
	}
	a.Close()
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
}

func TestPipeChildKilledAtStart(t *testing.T) {
	for range 5 {
		a, b := pipe(t, true)
		p := mp.NewProcess(echo, b)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		// Whether or not the child got as far as decoding its end, it was
		// the end's holder: its death is EOF for the parent.
		p.Kill()
		join(t, p)
		var v note
		if err := a.Recv(within(t), &v); err != io.EOF {
			t.Fatalf("Recv from a child killed at start = %v, want io.EOF", err)
		}
		a.Close()
	}
}

// holdEnd holds c until release is set, then, if send, sends "last" on it.
func holdEnd(c *mp.Conn, started *mp.Semaphore, release *mp.Event, send bool) error {
	if err := started.Release(); err != nil {
		return err
	}
	if err := release.Wait(context.Background()); err != nil {
		return err
	}
	if send {
		return c.Send("last")
	}
	return nil
}

func init() { mp.Register(holdEnd) }

// TestPipeManyHolders: with 80 processes holding an end, the other end
// does not see it gone while the last of them lives (the holder table used
// to stop at 64, so that the 65th holder was not counted).
func TestPipeManyHolders(t *testing.T) {
	const n = 80
	a, b := pipe(t, false)
	started := mp.Must(mp.NewSemaphore(0))
	release, releaseLast := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	var ps []*mp.Process
	for i := range n {
		ev := release
		if i == n-1 {
			ev = releaseLast
		}
		p := mp.NewProcess(holdEnd, b, started, ev, i == n-1)
		p.Daemon = true
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if p.IsAlive() {
				p.Kill()
				join(t, p)
			}
		})
		ps = append(ps, p)
	}
	b.Close()
	ctx := within(t)
	for range n {
		if err := started.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	release.Set()
	for _, p := range ps[:n-1] {
		if err := join(t, p); err != nil {
			t.Fatal(err)
		}
	}
	// The last holder is alive: a Poll must wait (it checks for a gone
	// peer every 50 ms), not report the end gone.
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if ok, err := a.Poll(pctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Poll with the 80th holder alive = %v, %v; want it to wait", ok, err)
	}
	releaseLast.Set()
	var got string
	if err := a.Recv(ctx, &got); err != nil || got != "last" {
		t.Fatalf("Recv = %q, %v; want the 80th holder's message", got, err)
	}
	if err := join(t, ps[n-1]); err != nil {
		t.Fatal(err)
	}
	if err := a.Recv(ctx, &got); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after every holder ended = %v, want io.EOF", err)
	}
}

// holdUntil holds end, not reading, until release is set.
func holdUntil(end *mp.Conn, ready, release *mp.Event) error {
	ready.Set()
	return release.Wait(context.Background())
}

// sendSizes sends a message of each length in sizes, each byte its index
// in the list, then returns without closing its end.
func sendSizes(c *mp.Conn, sizes []int) error {
	for i, n := range sizes {
		if err := c.SendBytes(bytes.Repeat([]byte{byte(i)}, n)); err != nil {
			return err
		}
	}
	return nil
}

func init() { mp.Register(holdUntil, sendSizes) }

// fillPipe sends with TrySend until the pipe is full, and returns how many
// it sent.
func fillPipe(t *testing.T, c *mp.Conn) int {
	t.Helper()
	for i := 0; ; i++ {
		err := c.TrySend(i)
		if errors.Is(err, mp.ErrFull) {
			return i
		}
		if err != nil {
			t.Fatalf("TrySend %d: %v", i, err)
		}
		if i > 10*mp.PipeSize {
			t.Fatal("TrySend never found the pipe full")
		}
	}
}

// TestPipeTrySendAndContext: a reader that is alive but does not read lets
// the pipe fill: TrySend and TrySendBytes then return ErrFull at once, and
// SendContext and SendBytesContext give up with the context's error,
// sending nothing; once the reader takes a message there is room again.
func TestPipeTrySendAndContext(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	ready, release := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	p := mp.NewProcess(holdUntil, b, ready, release)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		release.Set()
		if err := join(t, p); err != nil {
			t.Error(err)
		}
	}()
	if err := ready.Wait(within(t)); err != nil {
		t.Fatal(err)
	}
	n := fillPipe(t, a)
	if n != mp.PipeSize {
		t.Fatalf("the pipe took %d messages, want PipeSize (%d)", n, mp.PipeSize)
	}
	if err := a.TrySendBytes([]byte("x")); !errors.Is(err, mp.ErrFull) {
		t.Fatalf("TrySendBytes on a full pipe: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := a.SendContext(ctx, "late"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendContext on a full pipe past its deadline: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() { cancelled <- a.SendBytesContext(ctx, []byte("late")) }()
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("SendBytesContext on a full pipe, cancelled: %v", err)
	}
	// The other end (held here too: this process made the pipe) finds
	// exactly the messages that were accepted, in order.
	for i := range n {
		var v int
		if err := b.Recv(within(t), &v); err != nil || v != i {
			t.Fatalf("message %d: %d %v", i, v, err)
		}
		if i == 0 {
			if err := a.TrySend(n); err != nil {
				t.Fatalf("TrySend after a message was taken: %v", err)
			}
		}
	}
	var v int
	if err := b.Recv(within(t), &v); err != nil || v != n {
		t.Fatalf("the message sent once there was room: %d %v", v, err)
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	if ok, _ := b.Poll(done); ok {
		t.Fatal("a message of a failed send was delivered")
	}
}

// TestPipeTrySendDeadReader: TrySend to a full pipe whose only reader was
// killed ends with io.ErrClosedPipe, not ErrFull for ever.
func TestPipeTrySendDeadReader(t *testing.T) {
	a, b := pipe(t, true)
	defer a.Close()
	ready, release := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	defer release.Close()
	p := mp.NewProcess(holdUntil, b, ready, release)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ready.Wait(within(t)); err != nil {
		t.Fatal(err)
	}
	fillPipe(t, a)
	p.Kill()
	join(t, p)
	deadline := time.Now().Add(time.Minute)
	for {
		err := a.TrySend(0)
		if err == io.ErrClosedPipe {
			break
		}
		if !errors.Is(err, mp.ErrFull) || time.Now().After(deadline) {
			t.Fatalf("TrySend to a full pipe whose reader died: %v", err)
		}
	}
	if err := a.SendContext(within(t), 0); err != io.ErrClosedPipe {
		t.Fatalf("SendContext after: %v", err)
	}
}

// TestPipeRecvBytesInto: messages that fit are copied into the buffer; a
// longer one is a *BufferTooShortError with its length, and stays first in
// the pipe for a call with a buffer big enough. Across processes, with
// messages inline and out of line.
func TestPipeRecvBytesInto(t *testing.T) {
	a, b := pipe(t, false)
	sizes := []int{0, 5, 200, 10, 100000, 7}
	p := mp.NewProcess(sendSizes, b, sizes)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	shorts := 0
	for i, want := range sizes {
		n, err := a.RecvBytesInto(within(t), buf)
		var short *mp.BufferTooShortError
		if errors.As(err, &short) {
			if short.Needed != want || len(buf) >= want || !errors.Is(err, io.ErrShortBuffer) {
				t.Fatalf("message %d of %d bytes into %d: %v (Needed %d)", i, want, len(buf), err, short.Needed)
			}
			shorts++
			buf = make([]byte, short.Needed)
			n, err = a.RecvBytesInto(within(t), buf)
		}
		if err != nil || n != want || !bytes.Equal(buf[:n], bytes.Repeat([]byte{byte(i)}, want)) {
			t.Fatalf("message %d: %d bytes (want %d), %v", i, n, want, err)
		}
	}
	if shorts != 2 {
		t.Fatalf("%d short buffers, want 2", shorts)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	// The sender has gone: EOF. An empty pipe with a deadline: its error.
	if n, err := a.RecvBytesInto(within(t), buf); n != 0 || err != io.EOF {
		t.Fatalf("RecvBytesInto after the sender left: %d %v", n, err)
	}
	c, d := pipe(t, true)
	defer c.Close()
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.RecvBytesInto(ctx, buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecvBytesInto on an empty pipe past its deadline: %v", err)
	}
	if _, err := b.RecvBytesInto(ctx, buf); !errors.Is(err, mp.ErrNotSupported) {
		t.Fatalf("RecvBytesInto on the sending end: %v", err)
	}
	if err := a.TrySend(1); !errors.Is(err, mp.ErrNotSupported) {
		t.Fatalf("TrySend on the receiving end: %v", err)
	}
}

// BenchmarkPipeRecvBytesInto is BenchmarkPipeRoundTrip with the reply read
// by RecvBytesInto into one buffer: no allocation per message.
func BenchmarkPipeRecvBytesInto(b *testing.B) {
	a, c, err := mp.Pipe(true)
	if err != nil {
		b.Fatal(err)
	}
	ready := mp.Must(mp.NewEvent())
	p := startChild(b, ready, benchPipeEcho, c, ready)
	ctx := context.Background()
	msg, buf := make([]byte, 64), make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := a.SendBytes(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := a.RecvBytesInto(ctx, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	a.Close()
	joinChild(b, p)
}

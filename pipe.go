package mp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/refs"
	"github.com/multiproc/mp/internal/ring"
	"github.com/multiproc/mp/internal/shm"
)

// PipeSize is how many messages a pipe holds in each direction before Send
// blocks.
//
// A pipe takes shared memory as it fills: an idle duplex pipe takes about
// 12 KiB of the arena (8 KiB for a one-way pipe), of which a few KiB are
// touched.
// Each direction's buffer grows by doubling, from 16 messages, when more
// messages are queued at once than it holds: to hold PipeSize, it takes
// 508 KiB of the arena, about 130 KiB of it touched (the arena is sparse:
// memory never written costs no RAM). Messages whose encoding exceeds 96
// bytes take a block each while queued. A pipe keeps what it took until
// it is destroyed.
const PipeSize = 1024

// Conn is one end of a pipe made by Pipe: Python's multiprocessing
// Connection. Messages keep their boundaries (an empty message is a
// message) and arrive in the order they were sent.
//
// An end belongs to the processes that hold it: the one that made the
// pipe, and every process that receives the end as an argument, inside a
// struct, or through a queue or another pipe. When every holder of one end
// has closed it or died, the other end's Recv returns the messages still
// queued, then io.EOF, and its Send returns io.ErrClosedPipe. Python
// programs must close, in the parent, the end they handed to a child for
// this to work; here the parent's claim on an end passes to the child it
// starts with it (Process.Start counts the child as a holder at once, so
// a child that dies before it even ran is a peer gone), or to the first
// other process that receives it otherwise, unless the parent uses that
// end itself (Send, Recv or Poll), which keeps its claim until it calls
// Close. Closing the handed end in the parent, as Python programs do, is
// harmless.
//
// A holder that dies without closing is noticed by the other end's blocked
// Recv, Send or Poll within about 50 ms. A Send that does not block is not
// checked: like a write to a socket buffer, it succeeds while the pipe has
// room.
//
// A Conn may be used by several goroutines at once (messages are then
// shared out among the receivers). Up to MaxHolders live processes may hold
// each end; a further process's decoding of an end fails with an error
// wrapping ErrTooManyProcesses.
//
// The zero Conn is not usable: make one with Pipe. Its methods panic with an
// error wrapping ErrInvalidHandle, Close included.
type Conn struct {
	h          handle
	end        int
	recv, send *ring.Ring // nil for the direction a one-way end lacks
	mine, peer *holders   // holders of this end and of the other

	origin    bool        // made by Pipe, in the creating process
	claimed   atomic.Bool // origin only: the implicit claim was made explicit
	closed    atomic.Bool
	lastCheck atomic.Int64 // unix nanoseconds of the last peer check
}

// Block layout of a pipe.
const (
	pRecv0    = 0  // u64: arena offset of the ring end 0 receives from
	pRecv1    = 8  // u64: the ring end 1 receives from; 0 for a one-way pipe
	pImplicit = 16 // u32 per end: the creator's claim on the end is implicit
	pCreator  = 24 // u64: the creating process (pid | start32<<32)
	pHeir     = 32 // u64 per end: a child started with the end, already counted
	pHolders  = 64 // holders of end 0, then of end 1
	pSize     = pHolders + 2*holdersSize
)

// Pipe returns the two ends of a new pipe. With duplex, each end sends and
// receives; otherwise the first end only receives and the second only
// sends, as in Python. It fails only if shared memory is exhausted or Init
// was not called.
func Pipe(duplex bool) (*Conn, *Conn, error) {
	h, err := alloc(kindConn, pSize)
	if err != nil {
		return nil, nil, err
	}
	a, _ := treeArena()
	newRing := func() (shm.Offset, error) { return ring.NewGrowing(a, PipeSize, ring.DefaultInline) }
	r0, err := retryNoSpace(newRing)
	if err != nil {
		h.close() // the block goes back through its reference, like any other
		return nil, nil, fmt.Errorf("mp: Pipe: %w", noSpace(err))
	}
	atomic.StoreUint64(h.u64(pRecv0), uint64(r0))
	if duplex {
		r1, err := retryNoSpace(newRing)
		if err != nil {
			h.close() // and the first ring with it (see the Conn's destroy)
			return nil, nil, fmt.Errorf("mp: Pipe: %w", noSpace(err))
		}
		atomic.StoreUint64(h.u64(pRecv1), uint64(r1))
	}
	atomic.StoreUint64(h.u64(pCreator), self64())
	var ends [2]*Conn
	for i := range ends {
		c, err := openConn(h, i)
		if err != nil {
			return nil, nil, err
		}
		atomic.StoreUint32(c.implicit(), 1)
		c.mine.add(1)
		c.origin = true
		ends[i] = c
	}
	return ends[0], ends[1], nil
}

func openConn(h handle, end int) (*Conn, error) {
	c := new(Conn)
	return c, c.open(h, end)
}

// open initializes c, a Conn not yet in use, as end of the pipe h.
func (c *Conn) open(h handle, end int) error {
	a, err := treeArena()
	if err != nil {
		return err
	}
	c.h, c.end = h, end
	c.mine, c.peer = new(holders), new(holders)
	c.mine.init(h, pHolders+uintptr(end)*holdersSize)
	c.peer.init(h, pHolders+uintptr(1-end)*holdersSize)
	open := func(off uint64) (*ring.Ring, error) {
		if off == 0 {
			return nil, nil
		}
		r, err := ring.Open(a, shmOffset(off))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidHandle, err)
		}
		r.SetIdle(c.checkPeer)
		return r, nil
	}
	offs := [2]uint64{atomic.LoadUint64(h.u64(pRecv0)), atomic.LoadUint64(h.u64(pRecv1))}
	if offs[0] == 0 {
		return fmt.Errorf("%w: not a pipe", ErrInvalidHandle)
	}
	if c.recv, err = open(offs[end]); err != nil {
		return err
	}
	c.send, err = open(offs[1-end])
	return err
}

// Send encodes v and sends it, blocking while the pipe is full. It returns
// an error wrapping ErrUnencodable or ErrTooLarge (nothing is sent),
// io.ErrClosedPipe if every holder of the other end has closed it or died,
// ErrClosed after Close, or an error wrapping ErrNotSupported on the
// receiving end of a one-way pipe. It is SendContext without a way out:
// when the reader may stop reading while alive, use SendContext or
// TrySend.
func (c *Conn) Send(v any) error { return c.sendValue(context.Background(), v, true, "Send") }

// SendContext is Send that gives up when ctx ends, returning ctx.Err():
// the message is then not sent.
func (c *Conn) SendContext(ctx context.Context, v any) error {
	return c.sendValue(ctx, v, true, "SendContext")
}

// TrySend is Send without blocking: on a full pipe it returns ErrFull, and
// sends nothing. A full pipe whose readers have all died gives
// io.ErrClosedPipe instead, once that is noticed (it is looked for at most
// every 50 ms).
func (c *Conn) TrySend(v any) error { return c.sendValue(nil, v, false, "TrySend") }

func (c *Conn) sendValue(ctx context.Context, v any, block bool, op string) error {
	if err := c.ready(c.send, op); err != nil {
		return err
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	msg := (*bp)[:0]
	var lent []refs.ID
	if lendsValue(v) {
		var err error
		if msg, lent, err = lend(msg, v); err != nil {
			return fmt.Errorf("mp: %s: %w", op, err)
		}
	}
	msg, err := codec.AppendMarshal(msg, v)
	if err != nil {
		giveBack(lent)
		return fmt.Errorf("mp: %s: %w", op, err)
	}
	*bp = msg[:0]
	if err := c.put(ctx, msg, block); err != nil {
		giveBack(lent)
		return err
	}
	return nil
}

// SendBytes sends b as it is, as one message (Python's send_bytes); the
// other end reads it with RecvBytes or RecvBytesInto. Its errors are those
// of Send.
func (c *Conn) SendBytes(b []byte) error {
	return c.SendBytesContext(context.Background(), b)
}

// SendBytesContext is SendBytes that gives up when ctx ends, as
// SendContext.
func (c *Conn) SendBytesContext(ctx context.Context, b []byte) error {
	if err := c.ready(c.send, "SendBytes"); err != nil {
		return err
	}
	return c.put(ctx, b, true)
}

// TrySendBytes is SendBytes without blocking, as TrySend: ErrFull on a full
// pipe.
func (c *Conn) TrySendBytes(b []byte) error {
	if err := c.ready(c.send, "TrySendBytes"); err != nil {
		return err
	}
	return c.put(nil, b, false)
}

// put sends msg, blocking until ctx ends if block is set.
func (c *Conn) put(ctx context.Context, msg []byte, block bool) error {
	c.h.loc.raceRelease()
	var err error
	if block {
		err = c.send.Put(ctx, msg)
	} else if err = c.send.TryPut(msg); err == ring.ErrFull {
		// Nobody may be left to read: a TrySend in a loop must end.
		c.checkPeer()
		if c.send.Closed() {
			err = ring.ErrClosed
		}
	}
	if err != nil {
		if errors.Is(err, ring.ErrClosed) {
			return io.ErrClosedPipe
		}
		return err
	}
	return nil
}

// Recv waits for the next message, until ctx ends, and decodes it into
// the value v points to, which must have the type that was sent (or a
// compatible one, as for encoding/json). It returns nil, ctx.Err(), io.EOF
// once every holder of the other end has closed it or died and no message
// is left, ErrClosed after Close, an error wrapping ErrCorrupt for a
// message that is not a valid encoding of v's type (the message is
// consumed), an error wrapping ErrBadArguments if v is not a non-nil
// pointer, or an error wrapping ErrNotSupported on the sending end of a
// one-way pipe. Close does not interrupt a Recv in progress: cancel its
// context.
func (c *Conn) Recv(ctx context.Context, v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("%w: Recv needs a non-nil pointer, not %T", ErrBadArguments, v)
	}
	if err := c.ready(c.recv, "Recv"); err != nil {
		return err
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	msg, err := c.get(ctx, (*bp)[:0])
	if err != nil {
		return err
	}
	*bp = msg[:0]
	lent, body, err := borrowed(msg)
	defer giveBack(lent) // once the decoded handles hold their own
	if err != nil {
		return decodeErr("Recv", err)
	}
	if err := codec.Unmarshal(body, v); err != nil {
		return decodeErr("Recv", err)
	}
	return nil
}

// RecvBytes waits for the next message, until ctx ends, and returns it as
// it was sent (Python's recv_bytes). Its errors are those of Recv.
func (c *Conn) RecvBytes(ctx context.Context) ([]byte, error) {
	if err := c.ready(c.recv, "RecvBytes"); err != nil {
		return nil, err
	}
	msg, err := c.get(ctx, nil)
	if msg == nil && err == nil {
		msg = []byte{}
	}
	return msg, err
}

// RecvBytesInto waits for the next message, until ctx ends, copies it into
// buf and returns its length (Python's recv_bytes_into), allocating
// nothing. A message longer than buf is not taken: RecvBytesInto returns
// a *BufferTooShortError holding its length, and the message stays first
// in the pipe for a later call with a buffer big enough. Its other errors
// are those of Recv.
func (c *Conn) RecvBytesInto(ctx context.Context, buf []byte) (int, error) {
	if err := c.ready(c.recv, "RecvBytesInto"); err != nil {
		return 0, err
	}
	n, err := c.recv.GetInto(ctx, buf)
	if err != nil {
		switch {
		case err == ring.ErrShortBuffer:
			return 0, &BufferTooShortError{Needed: n}
		case errors.Is(err, ring.ErrClosed):
			return 0, io.EOF
		}
		return 0, err
	}
	c.h.loc.raceAcquire()
	return n, nil
}

func (c *Conn) get(ctx context.Context, dst []byte) ([]byte, error) {
	msg, err := c.recv.Get(ctx, dst)
	if err != nil {
		if errors.Is(err, ring.ErrClosed) {
			return nil, io.EOF
		}
		return nil, err
	}
	c.h.loc.raceAcquire()
	return msg, nil
}

// Poll reports whether a Recv would not block: a message is waiting, or the
// other end is gone (Recv returns io.EOF). It waits until that is so or ctx
// ends, returning false and ctx.Err() then; with a ctx that is already
// done it does not wait. It returns ErrClosed after Close and an error
// wrapping ErrNotSupported on the sending end of a one-way pipe.
func (c *Conn) Poll(ctx context.Context) (bool, error) {
	if err := c.ready(c.recv, "Poll"); err != nil {
		return false, err
	}
	if c.recv.Ready() {
		return true, nil
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := c.recv.WaitReady(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// Close gives up this process's hold on the end; when no process holds it
// any more, the other end sees io.EOF (after the messages already sent)
// and io.ErrClosedPipe. Further calls on c return ErrClosed. Closing twice
// does nothing.
func (c *Conn) Close() error {
	c.check()
	if c.closed.Swap(true) {
		return nil
	}
	if !c.origin || c.claimed.Load() {
		c.mine.add(-1)
	} else if atomic.CompareAndSwapUint32(c.implicit(), 1, 0) {
		// This process's claim was still the implicit one, which no other
		// process had taken over.
		c.mine.add(-1)
	}
	if c.mine.total() == 0 {
		c.shut()
	}
	return nil
}

// shut closes both directions: the end that made no one hold it, or whose
// peer is gone, can neither be sent to nor receive any more.
func (c *Conn) shut() {
	if c.recv != nil {
		c.recv.Close()
	}
	if c.send != nil {
		c.send.Close()
	}
}

// checkPeer runs while a call on c is blocked: if every holder of the
// other end is dead (or has closed it), it shuts the pipe so the call
// ends. It looks at /proc, so at most once per 50 ms.
func (c *Conn) checkPeer() {
	now := time.Now().UnixNano()
	last := c.lastCheck.Load()
	if now-last < int64(50*time.Millisecond) || !c.lastCheck.CompareAndSwap(last, now) {
		return
	}
	c.peer.reclaim()
	if c.peer.total() == 0 {
		c.shut()
	}
}

// ready checks that c may be used for a call that needs r, and makes an
// implicit claim explicit on first use.
func (c *Conn) ready(r *ring.Ring, op string) error {
	c.check()
	if c.closed.Load() {
		return ErrClosed
	}
	if r == nil {
		return fmt.Errorf("%w: %s on the wrong end of a one-way pipe", ErrNotSupported, op)
	}
	if c.origin && !c.claimed.Load() {
		c.claim()
	}
	return nil
}

func (c *Conn) claim() {
	if c.claimed.Swap(true) {
		return
	}
	if !atomic.CompareAndSwapUint32(c.implicit(), 1, 0) {
		// Another process took the end over: hold it again.
		c.mine.add(1)
	}
}

// implicit is the word saying that the creator's claim on c's end is
// still the implicit one; heir names a child started with the end.
func (c *Conn) implicit() *uint32 { return c.h.u32(pImplicit + 4*uintptr(c.end)) }
func (c *Conn) heir() *uint64     { return c.h.u64(pHeir + 8*uintptr(c.end)) }

func (c *Conn) check() {
	if c == nil || !c.h.valid() {
		panic(fmt.Errorf("%w: a Conn must be made with Pipe", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the end's handle, so that c can be passed to
// another process.
func (c *Conn) MarshalBinary() ([]byte, error) {
	b, err := c.h.marshal()
	if err != nil {
		return nil, err
	}
	return append(b, byte(c.end)), nil
}

// UnmarshalBinary makes c an end of the pipe that data encodes, held by
// this process (see Conn). It fails with ErrInvalidHandle if data is not
// the handle of a pipe's end.
func (c *Conn) UnmarshalBinary(data []byte) error {
	if len(data) != handleLen+1 || data[handleLen] > 1 {
		return fmt.Errorf("%w: not a Conn", ErrInvalidHandle)
	}
	var h handle
	if err := h.unmarshal(kindConn, data[:handleLen]); err != nil {
		return err
	}
	end := int(data[handleLen])
	if err := c.open(h, end); err != nil {
		return err
	}
	if atomic.CompareAndSwapUint64(c.heir(), self64(), 0) {
		// The parent that started this process with the end counted it
		// as a holder already (see handOver).
		return nil
	}
	if !c.mine.add(1) {
		return fmt.Errorf("%w: %d live processes hold the pipe's end already", ErrTooManyProcesses, holderMax)
	}
	if creator := atomic.LoadUint64(h.u64(pCreator)); creator != self64() &&
		atomic.CompareAndSwapUint32(c.implicit(), 1, 0) {
		// The creator handed this end on without using it: its claim
		// passes to this process.
		c.mine.addFor(creator, -1)
	}
	return nil
}

// handOver counts child, which Process.Start is starting with c among its
// arguments, as a holder of c's end from now on, before the child runs;
// the child's decoding of the end then adds nothing. A claim of this
// process that was only the creator's implicit one passes to the child.
func (c *Conn) handOver(child uint64) {
	if !c.mine.addFor(child, 1) {
		return // the table is full: the child's decoding then fails (see UnmarshalBinary)
	}
	atomic.StoreUint64(c.heir(), child)
	if c.origin && !c.claimed.Load() &&
		atomic.CompareAndSwapUint32(c.implicit(), 1, 0) {
		c.mine.add(-1)
	}
}

// connsIn returns the pipe ends in use found in vs (see eachPrimitive).
func connsIn(vs []any) []*Conn {
	var out []*Conn
	for _, v := range vs {
		eachPrimitive(v, func(p primitive) {
			if c, ok := p.(*Conn); ok && c.h.valid() {
				out = append(out, c)
			}
		})
	}
	return out
}

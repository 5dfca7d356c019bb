package mp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/multiproc/mp/internal/codec"
	"github.com/multiproc/mp/internal/ring"
)

// Fuzzing of the decoding side of queues and pipes: whatever bytes sit in
// the ring (a corrupt arena, a buggy or hostile process of the tree), a Get
// or Recv returns a value or an error wrapping ErrCorrupt, never panics,
// never allocates a size the bytes merely claim, and leaves the queue or
// pipe working.
//
//	go test -run '^$' -fuzz FuzzQueueDecode -fuzztime 30s .
//	go test -run '^$' -fuzz FuzzPipeDecode -fuzztime 30s .

// fzRecord is a struct with a slice and a map, the shape of a typical item.
type fzRecord struct {
	ID    int
	Name  string
	Tags  []string
	Attrs map[string]int
	Kids  []fzKid
}

type fzKid struct {
	N    uint16
	Data []byte
}

// Limits on what decoding one input may allocate, over all the types it is
// decoded into. A message can only make the decoder allocate in proportion
// to its own length: 64 MiB for any input (the fuzzer's inputs are far
// smaller), 1 MiB for a short one (a 20-byte message claiming a 1 GiB array
// must fail before allocating it).
const (
	fzMaxAlloc      = 64 << 20
	fzShortInput    = 64
	fzMaxAllocShort = 1 << 20
)

func fzAllocLimit(n int) uint64 {
	if n <= fzShortInput {
		return fzMaxAllocShort
	}
	return fzMaxAlloc
}

// fzAllocated returns how many bytes the heap grew by (in total, not net of
// frees) while f ran.
func fzAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// fzCBOR returns a message of the CBOR kind: the codec's tag byte, then b.
func fzCBOR(b ...byte) []byte { return append([]byte{0xC1}, b...) }

// fzHead returns a CBOR head of major type major with an 8-byte argument.
func fzHead(major byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{major<<5 | 27}, n)
}

// fzPad pads b with zero bytes to n bytes.
func fzPad(b []byte, n int) []byte {
	for len(b) < n {
		b = append(b, 0)
	}
	return b
}

// fzSeeds are the inputs plain `go test` checks and fuzzing starts from:
// valid encodings of each type, and the hostile cases that matter most.
func fzSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	rec := fzRecord{ID: 7, Name: "rec", Tags: []string{"a", ""}, Attrs: map[string]int{"x": 1, "y": -2},
		Kids: []fzKid{{1, []byte("k")}, {2, nil}}}
	for _, v := range []any{0, -1, 1 << 40, "", "hello", []byte{}, []byte(nil), []byte("bytes"),
		rec, &rec, (*fzRecord)(nil), fzRecord{}, []any{1, "x", nil}, map[string]any{"k": []any{}},
		make([]byte, 300), string(make([]byte, 200))} {
		b, err := codec.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	const giB = 1 << 30
	deep := fzCBOR()
	for range 2000 {
		deep = append(deep, 0x81) // [[[[...
	}
	deep = append(deep, 0x00)
	seeds = append(seeds,
		nil,                      // empty message
		[]byte{0xC1},             // tag, no item
		[]byte{0xB0, 1},          // nil []byte with trailing bytes
		[]byte{0xA1, 1, 0x51, 1}, // an argument list, not a value
		[]byte{0x00, 1, 2},       // unknown tag
		// 20-byte messages whose heads claim a gigabyte.
		fzPad(fzCBOR(fzHead(4, giB)...), 20),     // array of 2^30 items
		fzPad(fzCBOR(fzHead(5, giB)...), 20),     // map of 2^30 pairs
		fzPad(fzCBOR(fzHead(2, giB)...), 20),     // byte string of 1 GiB
		fzPad(fzCBOR(fzHead(3, giB)...), 20),     // text string of 1 GiB
		fzPad(fzCBOR(fzHead(4, 1<<63)...), 20),   // array of 2^63 items
		fzPad(fzCBOR(fzHead(2, 1<<64-1)...), 20), // byte string of 2^64-1 bytes
		// The struct's slice and map fields claiming a gigabyte.
		fzPad(fzCBOR(append([]byte{0xA1, 0x64, 'T', 'a', 'g', 's'}, fzHead(4, giB)...)...), 20),
		fzPad(fzCBOR(append([]byte{0xA1, 0x65, 'A', 't', 't', 'r', 's'}, fzHead(5, giB)...)...), 20),
		fzPad(fzCBOR(append([]byte{0xA1, 0x64, 'K', 'i', 'd', 's', 0x81, 0xA1, 0x64, 'D', 'a', 't', 'a'}, fzHead(2, giB)...)...), 24),
		deep,                     // nesting beyond the decoder's limit
		fzCBOR(0x9f, 0x01, 0xff), // indefinite-length array (refused)
		fzCBOR(0xC2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0), // bignum 2^64 into int
		fzCBOR(0xC0, 0x61, 'x'),                       // time tag with a bad time
		fzCBOR(0xA2, 0x01, 0x02, 0x61, 'k', 0x03),     // map with a non-string key
		fzCBOR(0x01, 0x02),                            // trailing bytes
		fzCBOR(0x62, 0xff, 0xfe),                      // text string, invalid UTF-8
	)
	return seeds
}

// fzCase decodes one raw message as one type, through a queue or a pipe.
type fzCase interface {
	name() string
	// decode delivers raw and decodes it, returning the value (nil on
	// error) and the error.
	decode(t *testing.T, raw []byte) (any, error)
	// roundTrip sends v, a value decode returned, and returns what comes
	// back.
	roundTrip(t *testing.T, v any) (any, error)
	// works checks that a normal send and receive go through.
	works(t *testing.T)
	// comparable reports whether a round trip must give back an equal
	// value (not for any: NaN floats, and values the codec cannot
	// encode again).
	comparable() bool
}

// fzDecodeErrOK reports whether err is an acceptable outcome of decoding
// a bad message: an error wrapping ErrCorrupt, as Get and Recv document,
// whatever the reason, including the decoder's limits (nesting deeper than
// 1024, an array head over 2^27 items, a map head over 2^24 pairs).
func fzDecodeErrOK(err error) bool {
	return errors.Is(err, ErrCorrupt)
}

func fzCheck(t *testing.T, cases []fzCase, raw []byte) {
	var total uint64
	for _, c := range cases {
		var v any
		var err error
		total += fzAllocated(func() { v, err = c.decode(t, raw) })
		if err != nil && !fzDecodeErrOK(err) {
			t.Fatalf("%s: %d-byte message %x: %v; want a value or an error wrapping ErrCorrupt", c.name(), len(raw), fzShort(raw), err)
		}
		if err == nil && c.comparable() {
			back, err := c.roundTrip(t, v)
			if err != nil {
				t.Fatalf("%s: %#v, decoded from %x, does not survive a round trip: %v", c.name(), v, fzShort(raw), err)
			}
			if !reflect.DeepEqual(back, v) {
				t.Fatalf("%s: %#v, decoded from %x, came back as %#v", c.name(), v, fzShort(raw), back)
			}
		}
		c.works(t)
	}
	if limit := fzAllocLimit(len(raw)); total > limit {
		t.Fatalf("decoding a %d-byte message %x allocated %d bytes (limit %d)", len(raw), fzShort(raw), total, limit)
	}
}

func fzShort(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// queueCase is a Queue[T] and a sample value.
type queueCase[T any] struct {
	q      *Queue[T]
	sample T
}

func newQueueCase[T any](tb testing.TB, sample T) fzCase {
	// A power-of-two maxsize: the queue keeps no count of its own, which
	// a raw put into the ring would not update.
	q, err := NewQueue[T](8)
	if err != nil {
		tb.Fatal(err)
	}
	if q.exact != nil {
		tb.Fatal("the queue keeps its own count")
	}
	return &queueCase[T]{q, sample}
}

func (c *queueCase[T]) name() string { return fmt.Sprintf("Queue[%v]", reflect.TypeFor[T]()) }

func (c *queueCase[T]) comparable() bool { return reflect.TypeFor[T]().Kind() != reflect.Interface }

func (c *queueCase[T]) decode(t *testing.T, raw []byte) (any, error) {
	if err := c.q.r.TryPut(raw); err != nil {
		t.Fatalf("%s: raw put: %v", c.name(), err)
	}
	v, err := c.q.TryGet()
	if err != nil {
		if c.q.Len() != 0 {
			t.Fatalf("%s: TryGet = %v and left the message queued", c.name(), err)
		}
		return nil, err
	}
	return v, nil
}

func (c *queueCase[T]) roundTrip(t *testing.T, v any) (any, error) {
	if err := c.q.TryPut(v.(T)); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	back, err := c.q.TryGet()
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	return back, nil
}

func (c *queueCase[T]) works(t *testing.T) {
	if err := c.q.TryPut(c.sample); err != nil {
		t.Fatalf("%s: put after a bad message: %v", c.name(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := c.q.Get(ctx)
	if err != nil || !reflect.DeepEqual(got, c.sample) {
		t.Fatalf("%s: get after a bad message: %#v, %v; want %#v", c.name(), got, err, c.sample)
	}
	if !c.q.Empty() {
		t.Fatalf("%s: %d items left", c.name(), c.q.Len())
	}
}

func FuzzQueueDecode(f *testing.F) {
	for _, s := range fzSeeds(f) {
		f.Add(s)
	}
	rec := fzRecord{ID: 1, Name: "sample", Tags: []string{"t"}, Attrs: map[string]int{"a": 1}, Kids: []fzKid{{3, []byte{1}}}}
	cases := []fzCase{
		newQueueCase(f, 42),
		newQueueCase(f, "sample"),
		newQueueCase(f, []byte("sample")),
		newQueueCase(f, rec),
		newQueueCase(f, &rec),
		newQueueCase[any](f, "sample"),
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fzCheck(t, cases, raw)
	})
}

// pipeCase receives into a *T from one end of a pipe what the other end
// sent.
type pipeCase[T any] struct {
	a, b   *Conn
	sample T
}

func (c *pipeCase[T]) name() string { return fmt.Sprintf("Recv(*%v)", reflect.TypeFor[T]()) }

func (c *pipeCase[T]) comparable() bool { return reflect.TypeFor[T]().Kind() != reflect.Interface }

func fzCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (c *pipeCase[T]) decode(t *testing.T, raw []byte) (any, error) {
	if err := c.a.SendBytes(raw); err != nil {
		t.Fatalf("%s: SendBytes: %v", c.name(), err)
	}
	v := new(T)
	if err := c.b.Recv(fzCtx(t), v); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Recv of a queued message did not return within a minute", c.name())
		}
		return nil, err
	}
	return *v, nil
}

func (c *pipeCase[T]) roundTrip(t *testing.T, v any) (any, error) {
	// The other way: b sends, a receives.
	if err := c.b.Send(v); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	back := new(T)
	if err := c.a.Recv(fzCtx(t), back); err != nil {
		return nil, fmt.Errorf("recv: %w", err)
	}
	return *back, nil
}

func (c *pipeCase[T]) works(t *testing.T) {
	if err := c.a.Send(c.sample); err != nil {
		t.Fatalf("%s: Send after a bad message: %v", c.name(), err)
	}
	got := new(T)
	if err := c.b.Recv(fzCtx(t), got); err != nil || !reflect.DeepEqual(*got, c.sample) {
		t.Fatalf("%s: Recv after a bad message: %#v, %v; want %#v", c.name(), *got, err, c.sample)
	}
	if ok, err := c.b.Poll(canceled); ok || err == nil {
		t.Fatalf("%s: a message is left over (Poll = %v, %v)", c.name(), ok, err)
	}
}

var canceled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func FuzzPipeDecode(f *testing.F) {
	for _, s := range fzSeeds(f) {
		f.Add(s)
	}
	a, b, err := Pipe(true)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		a.Close()
		b.Close()
	})
	rec := fzRecord{ID: 1, Name: "sample", Tags: []string{"t"}, Attrs: map[string]int{"a": 1}, Kids: []fzKid{{3, []byte{1}}}}
	cases := []fzCase{
		&pipeCase[int]{a, b, 42},
		&pipeCase[string]{a, b, "sample"},
		&pipeCase[[]byte]{a, b, []byte("sample")},
		&pipeCase[fzRecord]{a, b, rec},
		&pipeCase[*fzRecord]{a, b, &rec},
		&pipeCase[any]{a, b, "sample"},
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fzCheck(t, cases, raw)
	})
}

// SetQueueHook installs f as this process's queue test hook (nil removes
// it), which Put and Get call at the points HookSlotTaken, HookTaking and
// HookTaken: the kill tests of package mp_test stop a child there to kill
// it. It must be called before the process uses a queue.
func SetQueueHook(f func(point int)) {
	if f == nil {
		queueHook = nil
		return
	}
	queueHook = func(p hookPoint) { f(int(p)) }
}

// The points of SetQueueHook.
const (
	HookSlotTaken = int(hookSlotTaken)
	HookTaking    = int(hookTaking)
	HookTaken     = int(hookTaken)
)

// ringCell returns the bytes of the cell of r that holds position pos, as
// internal/ring lays them out: a 512-byte header whose u32 at 12 is the
// cell size, then the cells, each a 32-byte head (state u64, len u32,
// flags u32, out-of-line block u64, spare u64) and the inline payload.
func ringCell(t *testing.T, r *ring.Ring, pos int) []byte {
	a, err := treeArena()
	if err != nil {
		t.Fatal(err)
	}
	size, err := a.BlockSize(r.Offset())
	if err != nil {
		t.Fatal(err)
	}
	mem := a.Bytes(r.Offset(), size)
	cellSize := int(atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[12]))))
	off := 512 + (pos%r.Cap())*cellSize
	return mem[off : off+cellSize]
}

// TestJoinableQueueCorruptItem: an item that Get drops as corrupt, because
// its ring cell is invalid or because its bytes do not decode, counts as
// lost at once: Join returns ErrTasksLost instead of waiting for a
// TaskDone that nobody is to call, and an exact maxsize has the item's
// slot back.
func TestJoinableQueueCorruptItem(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(cell []byte)
	}{
		{"cell", func(cell []byte) { atomic.StoreUint32((*uint32)(unsafe.Pointer(&cell[12])), 0x55) }},
		{"encoding", func(cell []byte) { cell[32] = 0x00 }}, // the codec's tag: none is 0
	} {
		for _, maxsize := range []int{8, 3} {
			t.Run(fmt.Sprintf("%s/maxsize%d", tc.name, maxsize), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				q, err := NewJoinableQueue[int](maxsize)
				if err != nil {
					t.Fatal(err)
				}
				if (q.exact != nil) != (maxsize == 3) {
					t.Fatalf("maxsize %d: exact count %v", maxsize, q.exact != nil)
				}
				for _, v := range []int{7, 8} {
					if err := q.TryPut(v); err != nil {
						t.Fatal(err)
					}
				}
				tc.corrupt(ringCell(t, q.r, 0))
				if v, err := q.TryGet(); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("TryGet of the corrupt item = %d, %v; want ErrCorrupt", v, err)
				}
				if v, err := q.TryGet(); err != nil || v != 8 {
					t.Fatalf("TryGet = %d, %v; want 8", v, err)
				}
				if err := q.TaskDone(); err != nil {
					t.Fatal(err)
				}
				if err := q.Join(ctx); !errors.Is(err, ErrTasksLost) || !strings.HasSuffix(err.Error(), ": 1 items") {
					t.Fatalf("Join = %v, want ErrTasksLost for 1 item", err)
				}
				if err := q.TaskDone(); !errors.Is(err, ErrTaskDone) {
					t.Fatalf("TaskDone for the dropped item = %v, want ErrTaskDone", err)
				}
				for i := range maxsize {
					if err := q.TryPut(i); err != nil {
						t.Fatalf("TryPut %d of %d: %v (Len %d)", i+1, maxsize, err, q.Len())
					}
				}
				if q.exact != nil {
					if err := q.TryPut(-1); !errors.Is(err, ErrFull) {
						t.Fatalf("TryPut beyond maxsize = %v", err)
					}
				}
			})
		}
	}
}

// TestQueueDecodeLimitIsCorrupt: an item that trips one of the decoder's
// limits (here, nesting, which Put cannot produce: the encoder has the same
// limit) is an error wrapping ErrCorrupt, saying which limit. (Recv's is
// checked in pipe_test.go.)
func TestQueueDecodeLimitIsCorrupt(t *testing.T) {
	deep := fzCBOR()
	for range 2000 {
		deep = append(deep, 0x81)
	}
	deep = append(deep, 0x00)
	q, err := NewQueue[any](8)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.r.TryPut(deep); err != nil {
		t.Fatal(err)
	}
	if _, err := q.TryGet(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "nest") {
		t.Fatalf("Get of an item nested 2000 deep = %v; want ErrCorrupt with the decoder's detail", err)
	}
}

// TestHoldersReclaimOnce: goroutines reclaiming a holder table at once (as
// processes do, with the same atomics on shared memory) give back each
// dead entry's holdings exactly once, never a live one's; and losses
// counted while several account for them at once are each taken by one.
func TestHoldersReclaimOnce(t *testing.T) {
	const dead, reclaimers = 40, 8
	for round := range 50 {
		mem := make([]uint64, holdersSize/8)
		h := &holders{base: unsafe.Pointer(&mem[0])}
		want := 0
		for i := range dead {
			// Pids above Linux's PID_MAX_LIMIT (2^22): never alive.
			h.addFor(uint64(1<<23+i)|uint64(round+1)<<32, int32(i+1))
			want += i + 1
		}
		h.add(3) // this process's: alive
		var got atomic.Int64
		var lost, taken atomic.Uint32
		var seen uint32
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 1000 {
				lost.Add(1)
			}
		}()
		var wg sync.WaitGroup
		for range reclaimers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got.Add(int64(h.reclaim()))
				for range 200 {
					taken.Add(takeNew(&seen, lost.Load()))
				}
			}()
		}
		wg.Wait()
		<-done
		taken.Add(takeNew(&seen, lost.Load()))
		if got.Load() != int64(want) || h.total() != 3 {
			t.Fatalf("round %d: reclaimed %d, want %d; %d left, want this process's 3", round, got.Load(), want, h.total())
		}
		if taken.Load() != 1000 {
			t.Fatalf("round %d: %d losses taken, want 1000", round, taken.Load())
		}
	}
}

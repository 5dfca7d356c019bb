package mp_test

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	"github.com/multiproc/mp"
)

// TestQueueBytesRoundTrip: a queue of []byte gives back each item as it
// was put, whatever its size (inline in the ring, out of line, large), a
// nil item as nil and an empty one as empty but not nil, through every
// way of taking items.
func TestQueueBytesRoundTrip(t *testing.T) {
	ctx := context.Background()
	items := [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("ab"), 100),
		bytes.Repeat([]byte{7}, 4096), bytes.Repeat([]byte{9}, 1<<20)}
	q := mp.Must(mp.NewQueue[[]byte](len(items)))
	defer q.Close()
	takes := map[string]func() ([]byte, error){
		"Get":    func() ([]byte, error) { return q.Get(ctx) },
		"TryGet": q.TryGet,
		"GetInto": func() ([]byte, error) {
			buf := make([]byte, 0, 64)
			err := q.GetInto(ctx, &buf)
			return buf, err
		},
	}
	for name, take := range takes {
		for _, it := range items {
			if err := q.Put(ctx, it); err != nil {
				t.Fatal(err)
			}
		}
		for i, want := range items {
			got, err := take()
			if err != nil {
				t.Fatalf("%s item %d: %v", name, i, err)
			}
			if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
				t.Fatalf("%s item %d: got %d bytes (nil %v), want %d (nil %v)",
					name, i, len(got), got == nil, len(want), want == nil)
			}
			if name != "GetInto" && cap(got) != len(got) {
				t.Fatalf("%s item %d: cap %d, len %d: appending to an item must not write past it",
					name, i, cap(got), len(got))
			}
		}
	}
}

// TestQueueGetAllocatesTheItem: taking a 4 KiB item allocates 4 KiB, not
// the size class above it (4.75 KiB, the cost of copying the encoded item
// with its tag byte).
func TestQueueGetAllocatesTheItem(t *testing.T) {
	ctx := context.Background()
	const n, size = 200, 4096
	q := mp.Must(mp.NewQueue[[]byte](n))
	defer q.Close()
	item := make([]byte, size)
	for i := 0; i < n; i++ {
		if err := q.Put(ctx, item); err != nil {
			t.Fatal(err)
		}
	}
	got := make([][]byte, 0, n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		v, err := q.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	runtime.ReadMemStats(&after)
	// Other goroutines may allocate a little meanwhile; the old cost was
	// 768 bytes more per item.
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > size+size/16 {
		t.Fatalf("Get allocated %d bytes per %d-byte item", per, size)
	}
	runtime.KeepAlive(got)
}

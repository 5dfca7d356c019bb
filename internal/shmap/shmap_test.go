package shmap

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/leakcheck"
	"github.com/multiproc/mp/internal/shm"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }

func newArena(t testing.TB) *shm.Arena {
	t.Helper()
	a, err := shm.New(shm.MinSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// newHeader allocates a zeroed header: an empty store.
func newHeader(t testing.TB, a *shm.Arena) shm.Offset {
	t.Helper()
	off, err := a.Alloc(HeaderSize)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

func set(m Map, k, v string) error { return m.Set(Hash([]byte(k)), []byte(k), []byte(v)) }
func del(m Map, k string) bool {
	ok, err := m.Delete(Hash([]byte(k)), []byte(k))
	must(err)
	return ok
}

func get(m Map, k string) (string, bool) {
	v, ok, err := m.Get(Hash([]byte(k)), []byte(k))
	must(err)
	return string(v), ok
}

func mapContents(m Map) map[string]string {
	got := map[string]string{}
	must(m.Each(func(k, v []byte) bool {
		got[string(k)] = string(v)
		return true
	}))
	return got
}

func listContents(l List) []string {
	var got []string
	must(l.Each(func(i int, v []byte) bool {
		got = append(got, string(v))
		return true
	}))
	return got
}

// TestMapModel checks the map against a Go map through random operations
// that grow the table, fill it with tombstones and empty it again.
func TestMapModel(t *testing.T) {
	a := newArena(t)
	m := OpenMap(a, newHeader(t, a))
	base := a.Stats().Allocs
	want := map[string]string{}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		k := fmt.Sprint("k", r.IntN(300))
		switch op := r.IntN(10); {
		case op < 5:
			v := strings.Repeat("v", r.IntN(200)) + fmt.Sprint(i)
			if err := set(m, k, v); err != nil {
				t.Fatal(err)
			}
			want[k] = v
		case op < 8:
			_, had := want[k]
			if got := del(m, k); got != had {
				t.Fatalf("op %d: Delete(%s) = %v, want %v", i, k, got, had)
			}
			delete(want, k)
		default:
			v, ok := get(m, k)
			if wv, wok := want[k]; v != wv || ok != wok {
				t.Fatalf("op %d: Get(%s) = %q %v, want %q %v", i, k, v, ok, wv, wok)
			}
		}
		if m.Len() != len(want) {
			t.Fatalf("op %d: Len = %d, want %d", i, m.Len(), len(want))
		}
	}
	if got := mapContents(m); !maps.Equal(got, want) {
		t.Fatalf("contents differ: %d entries, want %d", len(got), len(want))
	}
	for k := range want {
		del(m, k)
	}
	// What is left is the table: no entry block leaked.
	if n := a.Stats().Allocs - base; n != 1 || m.Len() != 0 {
		t.Fatalf("empty map holds %d blocks and %d entries, want the table only", n, m.Len())
	}
}

func TestListModel(t *testing.T) {
	a := newArena(t)
	l := OpenList(a, newHeader(t, a))
	base := a.Stats().Allocs
	var want []string
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 5000 {
		switch op := r.IntN(10); {
		case op < 5 || len(want) == 0:
			v := fmt.Sprint("v", i)
			if err := l.Append([]byte(v)); err != nil {
				t.Fatal(err)
			}
			want = append(want, v)
		case op < 6:
			j := r.IntN(len(want))
			if err := l.Delete(j); err != nil {
				t.Fatal(err)
			}
			want = slices.Delete(want, j, j+1)
		case op < 7:
			j, v := r.IntN(len(want)+1), fmt.Sprint("i", i)
			if err := l.Insert(j, []byte(v)); err != nil {
				t.Fatal(err)
			}
			want = slices.Insert(want, j, v)
		case op < 9:
			j, v := r.IntN(len(want)), strings.Repeat("x", r.IntN(100))
			if err := l.Set(j, []byte(v)); err != nil {
				t.Fatal(err)
			}
			want[j] = v
		default:
			j := r.IntN(len(want))
			if got, err := l.At(j); err != nil || string(got) != want[j] {
				t.Fatalf("op %d: At(%d) = %q, want %q", i, j, got, want[j])
			}
		}
	}
	if got := listContents(l); !slices.Equal(got, want) {
		t.Fatalf("contents differ:\n%q\nwant\n%q", got, want)
	}
	for l.Len() > 0 {
		l.Delete(0)
	}
	if n := a.Stats().Allocs - base; n != 1 {
		t.Fatalf("empty list holds %d blocks, want the table only", n)
	}
	// Clear takes the table too; the list is then usable again.
	fillList(50)(a, l.off)
	if err := l.Clear(); err != nil || l.Len() != 0 || a.Stats().Allocs != base {
		t.Fatalf("Clear: %v, Len %d, %d blocks, want %d", err, l.Len(), a.Stats().Allocs, base)
	}
	must(l.Insert(0, []byte("again")))
	if got := listContents(l); !slices.Equal(got, []string{"again"}) {
		t.Fatalf("after Clear and Insert: %q", got)
	}
}

func TestArenaFull(t *testing.T) {
	a := newArena(t)
	m := OpenMap(a, newHeader(t, a))
	big := make([]byte, shm.MinSize/8)
	var err error
	n := 0
	for ; err == nil; n++ {
		err = set(m, fmt.Sprint(n), string(big))
	}
	if !errors.Is(err, shm.ErrNoSpace) {
		t.Fatalf("error of a full arena: %v", err)
	}
	// The failed Set changed nothing and the map stays usable.
	if m.Len() != n-1 || m.get(wPhase) != idle {
		t.Fatalf("after a failed Set: Len %d (want %d), phase %d", m.Len(), n-1, m.get(wPhase))
	}
	del(m, "0")
	if err := set(m, "0", "small"); err != nil {
		t.Fatal(err)
	}
}

// crash is what the hook panics with to stop a change at a store, as a
// SIGKILL would: everything stored so far stays, nothing after happens.
type crash struct{}

// stopAt makes the hook stop the change at its n-th store (never if n is
// 0), and returns the number of stores counted.
func stopAt(n int) *int {
	count := 0
	crashHook = func() {
		if count++; count == n {
			panic(crash{})
		}
	}
	return &count
}

func run(f func()) (stopped bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			stopped = true
		}
	}()
	f()
	return false
}

// state is what a store holds. A change may publish a bigger table before
// its entry, so blocks are not part of it: checkBlocks checks them.
type state struct {
	contents string
	length   int
}

// checkBlocks checks that the arena holds exactly the blocks the store can
// reach: its header, its table and its entries. A leaked block, or one
// freed while still in use, breaks the count.
func checkBlocks(a *shm.Arena, hdr shm.Offset) error {
	s := open(a, hdr)
	want := 1 + s.Len()
	if s.get(wTable) != 0 {
		want++
	}
	if got := a.Stats().Allocs; got != want {
		return fmt.Errorf("%d blocks in the arena, want %d (header, table, %d entries)", got, want, s.Len())
	}
	return nil
}

// A scenario builds a store, then changes it with op.
type scenario struct {
	name  string
	setup func(a *shm.Arena, hdr shm.Offset)
	op    func(a *shm.Arena, hdr shm.Offset)
	list  bool
}

func snapshot(a *shm.Arena, hdr shm.Offset, list bool) state {
	if list {
		l := OpenList(a, hdr)
		return state{fmt.Sprint(listContents(l)), l.Len()}
	}
	m := OpenMap(a, hdr)
	c := mapContents(m)
	keys := slices.Sorted(maps.Keys(c))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s ", k, c[k])
	}
	return state{b.String(), m.Len()}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

var scenarios = []scenario{
	{name: "map insert into new table", op: func(a *shm.Arena, h shm.Offset) { must(set(OpenMap(a, h), "a", "1")) }},
	{name: "map insert", setup: fillMap(3), op: func(a *shm.Arena, h shm.Offset) { must(set(OpenMap(a, h), "new", "x")) }},
	{name: "map replace", setup: fillMap(3), op: func(a *shm.Arena, h shm.Offset) { must(set(OpenMap(a, h), "k1", "changed")) }},
	{name: "map delete", setup: fillMap(3), op: func(a *shm.Arena, h shm.Offset) { del(OpenMap(a, h), "k2") }},
	{name: "map grow", setup: fillMap(5), op: func(a *shm.Arena, h shm.Offset) { must(set(OpenMap(a, h), "new", "x")) }},
	{name: "list append into new table", list: true, op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Append([]byte("a"))) }},
	{name: "list grow", list: true, setup: fillList(8), op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Append([]byte("a"))) }},
	{name: "list set", list: true, setup: fillList(3), op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Set(1, []byte("b"))) }},
	{name: "list delete", list: true, setup: fillList(3), op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Delete(1)) }},
	{name: "list delete last", list: true, setup: fillList(3), op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Delete(2)) }},
	{name: "list insert", list: true, setup: fillList(3), op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Insert(1, []byte("new"))) }},
	{name: "list insert first", list: true, setup: fillList(3), op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Insert(0, []byte("new"))) }},
	{name: "list insert grow", list: true, setup: fillList(8), op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Insert(3, []byte("new"))) }},
	{name: "map clear", setup: fillMap(5), op: func(a *shm.Arena, h shm.Offset) { must(OpenMap(a, h).Clear()) }},
	{name: "map clear with tombstones", setup: func(a *shm.Arena, h shm.Offset) {
		fillMap(5)(a, h)
		del(OpenMap(a, h), "k2")
	}, op: func(a *shm.Arena, h shm.Offset) { must(OpenMap(a, h).Clear()) }},
	{name: "list clear", list: true, setup: fillList(4), op: func(a *shm.Arena, h shm.Offset) { must(OpenList(a, h).Clear()) }},
}

func fillMap(n int) func(a *shm.Arena, h shm.Offset) {
	return func(a *shm.Arena, h shm.Offset) {
		for i := range n {
			must(set(OpenMap(a, h), fmt.Sprint("k", i), fmt.Sprint(i)))
		}
	}
}

func fillList(n int) func(a *shm.Arena, h shm.Offset) {
	return func(a *shm.Arena, h shm.Offset) {
		for i := range n {
			must(OpenList(a, h).Append([]byte(fmt.Sprint(i))))
		}
	}
}

// zeroReplaced zeroes the blocks that the change in progress replaced, as
// the arena's Free does first: a kill inside that Free leaves them zeroed
// but allocated, and recovery must still free them.
func zeroReplaced(a *shm.Arena, s Store) {
	if ph := s.get(wPhase); ph == idle || ph == prepared|phaseMagic || ph == prepared2|phaseMagic {
		return
	}
	for _, w := range []int{wOld, wOld2} {
		if v := shm.Offset(s.get(w)); v >= minEntry {
			if size, err := a.BlockSize(v); err == nil {
				clear(a.Bytes(v, size))
			}
		}
	}
}

// TestCrashAtEveryStore stops each change at each of its stores, and also
// stops the recovery from each such point at each of its stores, and
// checks that a completed recovery leaves the store exactly as before the
// change or exactly as after it, with no block leaked or freed twice.
func TestCrashAtEveryStore(t *testing.T) {
	defer func() { crashHook = nil }()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			fresh := func() (*shm.Arena, shm.Offset) {
				crashHook = nil
				a := newArena(t)
				h := newHeader(t, a)
				if sc.setup != nil {
					sc.setup(a, h)
				}
				return a, h
			}
			a, h := fresh()
			before := snapshot(a, h, sc.list)
			points := stopAt(0)
			sc.op(a, h)
			n := *points
			crashHook = nil
			after := snapshot(a, h, sc.list)
			a.Close()
			if before == after || n < 3 {
				t.Fatalf("the change changed nothing or stored %d times", n)
			}
			published := false
			for k := 1; k <= n; k++ {
				// The recovery is stopped at its j-th store, then run again in
				// full, until j is past its last store.
				for j := 1; ; j++ {
					a, h := fresh()
					stopAt(k)
					if !run(func() { sc.op(a, h) }) {
						t.Fatalf("point %d of %d: not reached", k, n)
					}
					s := open(a, h)
					zeroReplaced(a, s)
					stopAt(j)
					stopped := run(func() { must(s.Recover()) })
					crashHook = nil
					must(s.Recover())
					got := snapshot(a, h, sc.list)
					if err := checkBlocks(a, h); err != nil {
						t.Fatalf("point %d of %d (recovery stopped at %d): %v", k, n, j, err)
					}
					a.Close()
					switch got {
					case before:
						if published {
							t.Fatalf("point %d of %d (recovery stopped at %d): back to the state before, after an earlier point reached the state after", k, n, j)
						}
					case after:
						if !stopped {
							published = true
						}
					default:
						t.Fatalf("point %d of %d (recovery stopped at %d):\n got %+v\nbefore %+v\n after %+v", k, n, j, got, before, after)
					}
					if !stopped {
						break
					}
				}
			}
			if !published {
				t.Fatal("no stop point recovered to the state after the change")
			}
		})
	}
}

// TestDestroyAtEveryStore interrupts each scenario's change at each of its
// stores (or lets it complete), then stops Destroy at each of its own
// stores and calls it again, and checks that the arena is left holding the
// header block only, with the header zeroed: nothing leaked, nothing freed
// twice (a double free would fail, or drive the count below one).
func TestDestroyAtEveryStore(t *testing.T) {
	defer func() { crashHook = nil }()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			fresh := func() (*shm.Arena, shm.Offset) {
				crashHook = nil
				a := newArena(t)
				h := newHeader(t, a)
				if sc.setup != nil {
					sc.setup(a, h)
				}
				return a, h
			}
			a, h := fresh()
			points := stopAt(0)
			sc.op(a, h)
			n := *points
			crashHook = nil
			a.Close()
			destroyStops := 0
			for k := 0; k <= n; k++ {
				for j := 1; ; j++ {
					a, h := fresh()
					stopAt(k)
					if run(func() { sc.op(a, h) }) != (k > 0) {
						t.Fatalf("point %d of %d: not reached", k, n)
					}
					s := open(a, h)
					zeroReplaced(a, s)
					stopAt(j)
					stopped := run(func() { must(s.Destroy()) })
					crashHook = nil
					if err := s.Destroy(); err != nil {
						t.Fatalf("change stopped at %d of %d, Destroy at %d: second Destroy: %v", k, n, j, err)
					}
					if got := a.Stats().Allocs; got != 1 {
						t.Fatalf("change stopped at %d of %d, Destroy at %d: %d blocks left, want the header only", k, n, j, got)
					}
					if hdr := a.Bytes(h, HeaderSize); !bytes.Equal(hdr, make([]byte, HeaderSize)) {
						t.Fatalf("change stopped at %d of %d, Destroy at %d: header not zeroed: %x", k, n, j, hdr)
					}
					a.Close()
					if !stopped {
						break
					}
					destroyStops++
				}
			}
			if destroyStops < n {
				t.Fatalf("Destroy was stopped only %d times over %d points of the change", destroyStops, n)
			}
		})
	}
}

// TestDestroyEmptyAndReuse: Destroy of a store that never held anything is
// a no-op, and a destroyed store is an empty one that can be used again.
func TestDestroyEmptyAndReuse(t *testing.T) {
	a := newArena(t)
	h := newHeader(t, a)
	m := OpenMap(a, h)
	if err := m.Destroy(); err != nil || a.Stats().Allocs != 1 {
		t.Fatalf("Destroy of an empty map: %v, %d blocks", err, a.Stats().Allocs)
	}
	fillMap(20)(a, h)
	del(m, "k3")
	if err := m.Destroy(); err != nil || a.Stats().Allocs != 1 || m.Len() != 0 {
		t.Fatalf("Destroy: %v, %d blocks, Len %d", err, a.Stats().Allocs, m.Len())
	}
	must(set(m, "a", "b"))
	if v, ok := get(m, "a"); !ok || v != "b" {
		t.Fatalf("destroyed map reused: Get = %q %v", v, ok)
	}
}

// TestScribble writes random bytes over a map's or a list's header, table
// or entries, and checks that its methods then never panic or hang, fail
// only with errors wrapping shm.ErrCorrupt, and never free or write
// another object's memory: a neighbouring map stays intact while the
// arena's free memory is reused and overwritten.
func TestScribble(t *testing.T) {
	trials := 400
	if os.Getenv("MULTIPROC_LONG") != "" {
		trials = 10000
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	defer func() { crashHook = nil }()
	corrupt := 0
	for trial := range trials {
		list := trial%2 == 1
		a, err := shm.New(shm.MinSize)
		if err != nil {
			t.Fatal(err)
		}
		// The neighbour's entries lie between the damaged store's, so that
		// a damaged slot often names one of them.
		nb, h := newHeader(t, a), newHeader(t, a)
		for i := range 3 + rng.IntN(10) {
			k := fmt.Sprint("k", i)
			must(set(OpenMap(a, nb), k, "neighbour's"))
			if list {
				must(OpenList(a, h).Append([]byte(k)))
			} else {
				must(set(OpenMap(a, h), k, k))
			}
		}
		if !list {
			del(OpenMap(a, h), "k1")
		}
		neighbour := snapshot(a, nb, false)
		s := open(a, h)
		// Where to scribble: the header, the table or an entry.
		var off shm.Offset
		n := 1 + rng.IntN(16)
		t0 := shm.Offset(s.get(wTable))
		slots, _ := s.table()
		switch rng.IntN(3) {
		case 0:
			off = h + shm.Offset(rng.IntN(HeaderSize-n+1))
		case 1:
			off = t0 + shm.Offset(rng.IntN(tableHeader+8*len(slots)-n+1))
		case 2:
			var entries []uint64
			for _, v := range slots {
				if v >= minEntry {
					entries = append(entries, v)
				}
			}
			off = shm.Offset(entries[rng.IntN(len(entries))]) + shm.Offset(rng.IntN(entryHeader+2))
		}
		b := a.Bytes(off, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		what := fmt.Sprintf("trial %d (list %v): %d bytes at %#x", trial, list, n, off)
		check := func(err error) bool {
			if err == nil || errors.Is(err, shm.ErrNoSpace) {
				return true
			}
			if errors.Is(err, shm.ErrCorrupt) {
				corrupt++
				return true
			}
			t.Errorf("%s: %v", what, err)
			return false
		}
		within(t, what, func() {
			if !check(s.Recover()) {
				return
			}
			_ = s.Len()
			for i := range 20 {
				if list {
					l := List{s}
					var err error
					switch i % 6 {
					case 0:
						err = l.Append([]byte("new"))
					case 1:
						_, err = l.At(i % max(1, l.Len()))
					case 2:
						err = l.Set(i%max(1, l.Len()), []byte("set"))
					case 3:
						err = l.Delete(0)
					case 4:
						err = l.Each(func(int, []byte) bool { return true })
					case 5:
						err = l.Insert(i%max(1, l.Len()), []byte("inserted"))
					}
					if !check(err) {
						return
					}
					continue
				}
				m := Map{s}
				k := []byte(fmt.Sprint("k", i%12))
				var err error
				switch i % 4 {
				case 0:
					err = m.Set(Hash(k), k, []byte("v"))
				case 1:
					_, _, err = m.Get(Hash(k), k)
				case 2:
					_, err = m.Delete(Hash(k), k)
				case 3:
					err = m.Each(func(k, v []byte) bool { return true })
				}
				if !check(err) {
					return
				}
			}
			check(s.Destroy())
		})
		// The neighbour's blocks are all still allocated, and it holds what
		// it held.
		ns := open(a, nb)
		nt, err := ns.table()
		if err != nil {
			t.Fatalf("%s: the neighbouring map: %v", what, err)
		}
		for _, v := range append(nt, ns.get(wTable)) {
			if _, ok := a.OwnedSize(shm.Offset(v)); v >= minEntry && !ok {
				t.Fatalf("%s: block %#x of the neighbouring map was freed", what, v)
			}
		}
		if got := snapshot(a, nb, false); got != neighbour {
			t.Fatalf("%s: the neighbouring map changed:\n%+v\nwant\n%+v", what, got, neighbour)
		}
		a.Close()
		if t.Failed() {
			return
		}
	}
	t.Logf("%d trials, %d operations found the store damaged", trials, corrupt)
}

// within runs f and fails the test if it panics or has not returned within
// a minute, which only a wait that never ends takes.
func within(t testing.TB, what string, f func()) {
	t.Helper()
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		f()
	}()
	select {
	case r := <-done:
		if r != nil {
			t.Fatalf("%s panicked: %v", what, r)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s hung", what)
	}
}

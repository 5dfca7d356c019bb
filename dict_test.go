package mp_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

type point struct{ X, Y int }

// pair is updated as a whole: A and B always move together, so a Dict
// that shows them different has exposed half an update.
type pair struct{ A, B int }

func init() {
	mp.Register(dictDecrement, dictDecrementLocked, dictDecrementUnlocked, dictHammer, listAppender,
		dictFillClear, listPopper)
}

// dictDecrement is the seed's worker: take one from "count", atomically.
func dictDecrement(d *mp.Dict[string, int]) error {
	return d.Update("count", func(old int, _ bool) (int, bool) { return old - 1, true })
}

// dictDecrementLocked is the seed's worker with the seed's explicit lock.
func dictDecrementLocked(d *mp.Dict[string, int], l *mp.Lock) error {
	l.Lock()
	defer l.Unlock()
	return dictDecrementUnlocked(d)
}

func dictDecrementUnlocked(d *mp.Dict[string, int]) error {
	v, _, err := d.Get("count")
	if err != nil {
		return err
	}
	return d.Set("count", v-1)
}

// dictHammer changes d until it is killed: it updates the pair under
// "pair" and inserts and deletes keys, so that tables grow and fill with
// tombstones while it may die.
func dictHammer(d *mp.Dict[string, pair], ready *mp.Event) error {
	for i := 0; ; i++ {
		if err := d.Update("pair", func(p pair, _ bool) (pair, bool) { return pair{p.A + 1, p.B + 1}, true }); err != nil {
			return err
		}
		k := fmt.Sprint("k", i%50)
		if err := d.Set(k, pair{i, i}); err != nil {
			return err
		}
		if _, err := d.Delete(fmt.Sprint("k", (i+25)%50)); err != nil {
			return err
		}
		if i == 100 {
			ready.Set()
		}
	}
}

func listAppender(l *mp.List[string], id, n int) error {
	for i := range n {
		if err := l.Append(fmt.Sprintf("%d:%d", id, i)); err != nil {
			return err
		}
	}
	return nil
}

func runAll(t *testing.T, procs []*mp.Process) {
	t.Helper()
	for _, p := range procs {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		if err := p.Join(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDictBasics(t *testing.T) {
	d := mp.Must(mp.NewDict[string, int]())
	if _, ok, err := d.Get("missing"); ok || err != nil {
		t.Fatalf("Get of a missing key: %v %v", ok, err)
	}
	for i := range 1000 {
		if err := d.Set(fmt.Sprint(i), i); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok, err := d.Get("777"); v != 777 || !ok || err != nil {
		t.Fatalf("Get = %v %v %v", v, ok, err)
	}
	for i := 0; i < 1000; i += 2 {
		if ok, err := d.Delete(fmt.Sprint(i)); !ok || err != nil {
			t.Fatalf("Delete(%d) = %v %v", i, ok, err)
		}
	}
	if ok, _ := d.Delete("0"); ok {
		t.Fatal("second Delete found the key")
	}
	if d.Len() != 500 {
		t.Fatalf("Len = %d", d.Len())
	}
	items, err := d.Items()
	if err != nil || len(items) != 500 || items["999"] != 999 {
		t.Fatalf("Items: %d items, %v", len(items), err)
	}
	keys, err := d.Keys()
	if err != nil || len(keys) != 500 {
		t.Fatalf("Keys: %d, %v", len(keys), err)
	}
	if !slices.Equal(slices.Sorted(slices.Values(keys)), slices.Sorted(maps.Keys(items))) {
		t.Fatal("Keys and Items disagree")
	}
	// Update: insert, change, delete; Range may call the Dict.
	d.Update("new", func(old int, ok bool) (int, bool) {
		if ok || old != 0 {
			t.Errorf("Update of a missing key got %d %v", old, ok)
		}
		return 5, true
	})
	d.Update("new", func(old int, ok bool) (int, bool) { return old * 2, true })
	if v, _, _ := d.Get("new"); v != 10 {
		t.Fatalf("after two Updates: %d", v)
	}
	d.Update("new", func(int, bool) (int, bool) { return 0, false })
	if _, ok, _ := d.Get("new"); ok {
		t.Fatal("Update returning false kept the key")
	}
	n := 0
	for k, v := range d.All() {
		d.Set(k, v+1) // allowed: All works on a snapshot
		if n++; n == 10 {
			break
		}
	}
	if n != 10 {
		t.Fatalf("All went on after break: %d iterations", n)
	}
}

func TestDictTypes(t *testing.T) {
	d := mp.Must(mp.NewDict[point, []string]())
	big := strings.Repeat("x", 1<<20)
	if err := d.Set(point{1, 2}, []string{"a", big}); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := d.Get(point{1, 2}); !ok || err != nil || len(v) != 2 || v[1] != big {
		t.Fatalf("Get of a struct key: %v %v", ok, err)
	}
	if _, ok, _ := d.Get(point{2, 1}); ok {
		t.Fatal("a different struct key matched")
	}

	// A value that cannot be encoded is an error, and changes nothing.
	da := mp.Must(mp.NewDict[int, any]())
	if err := da.Set(1, func() {}); !errors.Is(err, mp.ErrUnencodable) {
		t.Fatalf("Set of a func: %v", err)
	}
	if err := da.Update(1, func(any, bool) (any, bool) { return make(chan int), true }); !errors.Is(err, mp.ErrUnencodable) {
		t.Fatalf("Update to a chan: %v", err)
	}
	if da.Len() != 0 {
		t.Fatal("a failed Set stored something")
	}
	// So is a key that cannot be encoded.
	dc := mp.Must(mp.NewDict[any, int]())
	if err := dc.Set(make(chan int), 1); !errors.Is(err, mp.ErrUnencodable) {
		t.Fatalf("Set with a chan key: %v", err)
	}

	// A handle decodes only as a Dict of the same types.
	b, _ := d.MarshalBinary()
	var wrong mp.Dict[point, string]
	if err := wrong.UnmarshalBinary(b); !errors.Is(err, mp.ErrInvalidHandle) {
		t.Fatalf("handle of a Dict[point, []string] as Dict[point, string]: %v", err)
	}
	var zero mp.Dict[string, int]
	mustPanicWith(t, mp.ErrInvalidHandle, func() { zero.Len() })
}

func mustPanicWith(t *testing.T, target error, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if err, ok := r.(error); !ok || !errors.Is(err, target) {
			t.Fatalf("panic %v, want %v", r, target)
		}
	}()
	f()
}

// TestDictPanicInUpdate: a panicking function leaves the Dict unchanged
// and unlocked.
func TestDictPanicInUpdate(t *testing.T) {
	d := mp.Must(mp.NewDict[string, int]())
	d.Set("k", 1)
	func() {
		defer func() { recover() }()
		d.Update("k", func(int, bool) (int, bool) { panic("boom") })
	}()
	if v, _, err := d.Get("k"); v != 1 || err != nil {
		t.Fatalf("after a panic in Update: %d %v", v, err)
	}
}

// TestDictSeedCount is seed 003's Manager dict: ten processes each take one
// from {"count": 100}, with Update and with the seed's explicit lock, and
// it ends at 90.
func TestDictSeedCount(t *testing.T) {
	for _, locked := range []bool{false, true} {
		d := mp.Must(mp.NewDict[string, int]())
		d.Set("count", 100)
		lock := mp.Must(mp.NewLock())
		var procs []*mp.Process
		for range 10 {
			if locked {
				procs = append(procs, mp.NewProcess(dictDecrementLocked, d, lock))
			} else {
				procs = append(procs, mp.NewProcess(dictDecrement, d))
			}
		}
		runAll(t, procs)
		if v, _, err := d.Get("count"); v != 90 || err != nil {
			t.Fatalf("locked=%v: count = %d %v, want 90", locked, v, err)
		}
	}
}

// TestDictKilledMidUpdate kills processes that are changing a Dict, again
// and again, and checks that no half-done change is ever visible and that
// the Dict stays usable by the others.
func TestDictKilledMidUpdate(t *testing.T) {
	d := mp.Must(mp.NewDict[string, pair]())
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	for r := range rounds {
		ready := mp.Must(mp.NewEvent())
		p := mp.NewProcess(dictHammer, d, ready)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := ready.Wait(ctx); err != nil {
			cancel()
			p.Kill()
			p.Join(context.Background())
			t.Fatalf("round %d: hammer not ready: %v", r, err)
		}
		cancel()
		// Let it run for a varying while, keeping the lock busy from
		// here too, so that the kill lands at varying points.
		for range 50 * (r + 1) {
			d.Update("here", func(v pair, _ bool) (pair, bool) { return pair{v.A + 1, v.B + 1}, true })
		}
		p.Kill()
		err := p.Join(context.Background())
		var pe *mp.ProcessError
		if !errors.As(err, &pe) || pe.ExitCode != -int(syscall.SIGKILL) {
			t.Fatalf("round %d: hammer ended with %v", r, err)
		}
		items, err := d.Items()
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		if len(items) != d.Len() {
			t.Fatalf("round %d: Items has %d entries, Len says %d", r, len(items), d.Len())
		}
		for k, v := range items {
			if v.A != v.B {
				t.Fatalf("round %d: %s = %+v: half an update", r, k, v)
			}
		}
	}
	before, _, _ := d.Get("pair")
	for range 100 {
		d.Update("pair", func(p pair, _ bool) (pair, bool) { return pair{p.A + 1, p.B + 1}, true })
	}
	if after, _, _ := d.Get("pair"); after.A != before.A+100 || after.B != before.B+100 {
		t.Fatalf("after the kills, 100 updates took %+v to %+v", before, after)
	}
}

func TestListBasics(t *testing.T) {
	l := mp.Must(mp.NewList[string]())
	for i := range 100 {
		if err := l.Append(fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Delete(0); err != nil {
		t.Fatal(err)
	}
	if err := l.Set(0, "first"); err != nil {
		t.Fatal(err)
	}
	if err := l.Update(98, func(s string) string { return s + "!" }); err != nil {
		t.Fatal(err)
	}
	items, err := l.Items()
	if err != nil || len(items) != 99 || items[0] != "first" || items[1] != "2" || items[98] != "99!" {
		t.Fatalf("Items = %q, %v", items, err)
	}
	if v, err := l.Get(50); v != "51" || err != nil {
		t.Fatalf("Get(50) = %q %v", v, err)
	}
	for _, i := range []int{-1, 99, 1000} {
		if _, err := l.Get(i); !errors.Is(err, mp.ErrOutOfRange) {
			t.Fatalf("Get(%d): %v", i, err)
		}
		if err := l.Set(i, ""); !errors.Is(err, mp.ErrOutOfRange) {
			t.Fatalf("Set(%d): %v", i, err)
		}
		if err := l.Delete(i); !errors.Is(err, mp.ErrOutOfRange) {
			t.Fatalf("Delete(%d): %v", i, err)
		}
	}
	var zero mp.List[int]
	mustPanicWith(t, mp.ErrInvalidHandle, func() { zero.Append(1) })
}

// TestListAcrossProcesses: four processes append at once; every element
// arrives once, and each process's elements are in its order.
func TestListAcrossProcesses(t *testing.T) {
	const procs, n = 4, 300
	l := mp.Must(mp.NewList[string]())
	var ps []*mp.Process
	for id := range procs {
		ps = append(ps, mp.NewProcess(listAppender, l, id, n))
	}
	runAll(t, ps)
	items, err := l.Items()
	if err != nil || len(items) != procs*n {
		t.Fatalf("%d items, %v", len(items), err)
	}
	next := make([]int, procs)
	for _, s := range items {
		var id, i int
		fmt.Sscanf(s, "%d:%d", &id, &i)
		if i != next[id] {
			t.Fatalf("process %d's element %d after %d", id, i, next[id]-1)
		}
		next[id]++
	}
}

// dictFillClear sets keys 0 to n-1, in order, to the round's number, then
// clears the Dict, for rounds rounds (for ever if rounds is 0), setting
// ready after the first.
func dictFillClear(d *mp.Dict[int, int], n, rounds int, ready *mp.Event) error {
	for r := 0; rounds == 0 || r < rounds; r++ {
		for k := range n {
			if err := d.Set(k, r); err != nil {
				return err
			}
		}
		if err := d.Clear(); err != nil {
			return err
		}
		ready.Set()
	}
	return nil
}

// checkPrefix checks a snapshot of a Dict that dictFillClear changes: with
// Clear atomic, it is always keys 0 to j-1 of one round, for some j (the
// round's filling so far); a Clear seen half done would leave some keys
// and not others, in hash order.
func checkPrefix(items map[int]int) error {
	round := -1
	for k := range len(items) {
		v, ok := items[k]
		if !ok {
			return fmt.Errorf("%d keys but not key %d: a Clear half done (%v)", len(items), k, items)
		}
		if round >= 0 && v != round {
			return fmt.Errorf("keys of rounds %d and %d together: %v", round, v, items)
		}
		round = v
	}
	return nil
}

// TestDictClearAtomic: another process fills a Dict and clears it, over and
// over, while this one takes snapshots: none shows a Clear half done. Then
// the arena is back where it was before the Dict was ever filled: Clear
// gave back the entries' and the table's memory.
func TestDictClearAtomic(t *testing.T) {
	const n, rounds = 64, 150
	d := mp.Must(mp.NewDict[int, int]())
	ready := mp.Must(mp.NewEvent())
	defer ready.Close()
	p := mp.NewProcess(dictFillClear, d, n, rounds, ready)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	snapshots, partial := 0, 0
	for p.IsAlive() {
		items, err := d.Items()
		if err != nil {
			t.Fatal(err)
		}
		if err := checkPrefix(items); err != nil {
			p.Kill()
			p.Join(context.Background())
			t.Fatal(err)
		}
		snapshots++
		if len(items) > 0 && len(items) < n {
			partial++
		}
	}
	if err := p.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d snapshots, %d of them during a filling", snapshots, partial)
	if d.Len() != 0 {
		t.Fatalf("Len = %d after the last Clear", d.Len())
	}
}

// inUse is the arena's memory in use but for the holder tables, which grow
// with the processes started and are kept.
func inUse(t *testing.T) int {
	t.Helper()
	s, err := mp.ReadArenaStats()
	if err != nil {
		t.Fatal(err)
	}
	return s.InUse - s.Tables
}

// TestDictClearMemory: many rounds of Set and Clear leave the arena as it
// was before the Dict was filled: Clear gives back the entries' and the
// table's memory (deleting every key one by one would keep the table).
func TestDictClearMemory(t *testing.T) {
	d := mp.Must(mp.NewDict[int, string]())
	defer d.Close()
	// Earlier tests' primitives dropped without Close give their memory
	// back when the collector finds them: not during the measurement.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	runtime.GC()
	before := inUse(t)
	for r := range 200 {
		for k := range 50 + r%50 {
			if err := d.Set(k, strings.Repeat("v", r)); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Clear(); err != nil {
			t.Fatal(err)
		}
	}
	if after := inUse(t); after > before || d.Len() != 0 || mp.DictBlocks(d) != 0 {
		t.Fatalf("after 200 rounds of Set and Clear: %d keys, %d blocks, %d bytes in use, %d before",
			d.Len(), mp.DictBlocks(d), after, before)
	}
}

// TestDictClearKilled kills a process that fills and clears a Dict, again
// and again: what it leaves is never a Clear half done, the Dict stays
// usable, and once cleared it holds no memory: nothing leaked by a Clear
// cut short, nothing freed twice.
func TestDictClearKilled(t *testing.T) {
	const n = 40
	d := mp.Must(mp.NewDict[int, int]())
	defer d.Close()
	before := inUse(t)
	rounds := 10
	if testing.Short() {
		rounds = 4
	}
	for r := range rounds {
		ready := mp.Must(mp.NewEvent())
		p := mp.NewProcess(dictFillClear, d, n, 0, ready)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := ready.Wait(ctx)
		cancel()
		ready.Close()
		// Vary the moment of the kill: this process takes the lock too.
		for range 20 * r {
			if _, err := d.Items(); err != nil {
				t.Fatal(err)
			}
		}
		p.Kill()
		p.Join(context.Background())
		if err != nil {
			t.Fatalf("round %d: filler not ready: %v", r, err)
		}
		items, err := d.Items()
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		if err := checkPrefix(items); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	if err := d.Clear(); err != nil {
		t.Fatal(err)
	}
	if after := inUse(t); after > before || d.Len() != 0 || mp.DictBlocks(d) != 0 {
		t.Fatalf("after the kills and a Clear: %d keys, %d bytes in use, %d before", d.Len(), after, before)
	}
	// Usable again.
	if err := d.Set(1, 2); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := d.Get(1); v != 2 || !ok || err != nil {
		t.Fatalf("Get after Clear: %v %v %v", v, ok, err)
	}
}

// TestDictAllSnapshot: All yields the Dict as it was when the loop began,
// though the loop's body changes it.
func TestDictAllSnapshot(t *testing.T) {
	d := mp.Must(mp.NewDict[string, int]())
	for i := range 10 {
		d.Set(fmt.Sprint(i), i)
	}
	seen := map[string]int{}
	for k, v := range d.All() {
		seen[k] = v
		d.Delete(k)
		d.Set("new"+k, v)
	}
	if len(seen) != 10 {
		t.Fatalf("All yielded %d entries: %v", len(seen), seen)
	}
	for i := range 10 {
		if v, ok := seen[fmt.Sprint(i)]; !ok || v != i {
			t.Fatalf("All yielded %v", seen)
		}
	}
	if d.Len() != 10 {
		t.Fatalf("Len = %d", d.Len())
	}
}

// listPopper pops from l until it is empty, appending each element to
// out, and then counts itself done.
func listPopper(l, out *mp.List[int], fromFront bool) error {
	for {
		var v int
		var err error
		if fromFront {
			v, err = l.PopAt(0)
		} else {
			v, err = l.Pop()
		}
		if errors.Is(err, mp.ErrOutOfRange) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := out.Append(v); err != nil {
			return err
		}
	}
}

// TestListPopConcurrent: three processes pop from one List at once (from
// the end, then from the front): each element is popped exactly once.
func TestListPopConcurrent(t *testing.T) {
	const n, procs = 1500, 3
	for _, front := range []bool{false, true} {
		l := mp.Must(mp.NewList[int]())
		for i := range n {
			if err := l.Append(i); err != nil {
				t.Fatal(err)
			}
		}
		var outs []*mp.List[int]
		var ps []*mp.Process
		for range procs {
			out := mp.Must(mp.NewList[int]())
			outs = append(outs, out)
			ps = append(ps, mp.NewProcess(listPopper, l, out, front))
		}
		runAll(t, ps)
		seen := make([]int, n)
		for _, out := range outs {
			items, err := out.Items()
			if err != nil {
				t.Fatal(err)
			}
			// Each process's pops come in the List's order.
			if !slices.IsSortedFunc(items, func(a, b int) int {
				if front {
					return a - b
				}
				return b - a
			}) {
				t.Fatalf("front=%v: a process popped out of order: %v", front, items)
			}
			for _, v := range items {
				seen[v]++
			}
		}
		for v, c := range seen {
			if c != 1 {
				t.Fatalf("front=%v: element %d popped %d times", front, v, c)
			}
		}
		if l.Len() != 0 {
			t.Fatalf("front=%v: %d left", front, l.Len())
		}
	}
}

func TestListPopInsertClear(t *testing.T) {
	l := mp.Must(mp.NewList[string]())
	if _, err := l.Pop(); !errors.Is(err, mp.ErrOutOfRange) {
		t.Fatalf("Pop of an empty List: %v", err)
	}
	for _, s := range []string{"b", "d"} {
		l.Append(s)
	}
	for _, c := range []struct {
		i int
		v string
	}{{0, "a"}, {2, "c"}, {4, "e"}} {
		if err := l.Insert(c.i, c.v); err != nil {
			t.Fatalf("Insert(%d, %q): %v", c.i, c.v, err)
		}
	}
	for _, i := range []int{-1, 6} {
		if err := l.Insert(i, "x"); !errors.Is(err, mp.ErrOutOfRange) {
			t.Fatalf("Insert(%d): %v", i, err)
		}
		if _, err := l.PopAt(i); !errors.Is(err, mp.ErrOutOfRange) {
			t.Fatalf("PopAt(%d): %v", i, err)
		}
	}
	if items, _ := l.Items(); !slices.Equal(items, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("after the Inserts: %q", items)
	}
	if v, err := l.Pop(); v != "e" || err != nil {
		t.Fatalf("Pop = %q %v", v, err)
	}
	if v, err := l.PopAt(1); v != "b" || err != nil {
		t.Fatalf("PopAt(1) = %q %v", v, err)
	}
	var got []string
	for i, v := range l.All() {
		got = append(got, fmt.Sprint(i, v))
		l.Append("during") // not seen: All works on a snapshot
	}
	if !slices.Equal(got, []string{"0a", "1c", "2d"}) {
		t.Fatalf("All yielded %q", got)
	}
	before := inUse(t)
	if err := l.Clear(); err != nil || l.Len() != 0 {
		t.Fatalf("Clear: %v, Len %d", err, l.Len())
	}
	if after := inUse(t); after >= before {
		t.Fatalf("Clear gave back no memory: %d bytes in use, %d before", after, before)
	}
	if _, err := l.Pop(); !errors.Is(err, mp.ErrOutOfRange) {
		t.Fatalf("Pop after Clear: %v", err)
	}
}

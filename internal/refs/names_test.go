package refs

import (
	"errors"
	"strings"
	"testing"
)

func TestNamesAndEvents(t *testing.T) {
	_, tab := newTable(t)
	var ids []ID
	for range objPerSeg + 3 { // into a second segment
		id, _, err := tab.New(kindA, 64)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	last := ids[len(ids)-1]
	if err := tab.SetName(last, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := tab.SetName(last, strings.Repeat("x", MaxName+1)); err == nil {
		t.Fatal("a name longer than MaxName was taken")
	}
	for range 2 {
		if err := tab.CountEvent(last); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[ID]Object{}
	tab.Each(func(o Object) { seen[o.ID] = o })
	if len(seen) != len(ids) {
		t.Fatalf("Each saw %d objects, want %d", len(seen), len(ids))
	}
	if o := seen[last]; o.Name != "orders" || o.Events != 2 || o.Kind != kindA || o.Count != 1 {
		t.Fatalf("%+v, want orders, 2 events", o)
	}
	if o := seen[ids[0]]; o.Name != "" || o.Events != 0 {
		t.Fatalf("an unnamed object: %+v", o)
	}
	// Freed, its entry reused: the new object has neither the name nor
	// the events.
	tab.Detach(last, nil)
	if err := tab.SetName(last, "gone"); !errors.Is(err, ErrGone) {
		t.Fatalf("SetName of a freed object: %v", err)
	}
	id, _, err := tab.New(kindA, 64)
	if err != nil {
		t.Fatal(err)
	}
	if id.Index != last.Index {
		t.Fatalf("entry %d not reused (got %d)", last.Index, id.Index)
	}
	tab.Each(func(o Object) {
		if o.ID == id && (o.Name != "" || o.Events != 0) {
			t.Fatalf("the reused entry inherited %+v", o)
		}
		if o.ID == last {
			t.Fatal("Each saw a freed object")
		}
	})
}

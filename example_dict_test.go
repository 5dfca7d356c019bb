package mp_test

import (
	"context"
	"fmt"
	"slices"

	"github.com/multiproc/mp"
)

// addScore adds points to name's score in a Dict shared with the parent.
func addScore(scores *mp.Dict[string, int], name string, points int) error {
	return scores.Update(name, func(old int, _ bool) (int, bool) { return old + points, true })
}

func init() { mp.Register(addScore) }

// A Dict is shared by every process of the tree: children update it in
// place and the parent reads the result. Update is an atomic
// read-modify-write, so concurrent updates to one key are never lost.
func ExampleNewDict() {
	scores, err := mp.NewDict[string, int]()
	if err != nil {
		fmt.Println(err)
		return
	}
	var ps []*mp.Process
	for _, name := range []string{"ann", "bob", "ann", "ann"} {
		p := mp.NewProcess(addScore, scores, name, 10)
		if err := p.Start(); err != nil {
			fmt.Println(err)
			return
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		p.Join(context.Background())
	}
	items, _ := scores.Items()
	fmt.Println(items)
	// Output: map[ann:30 bob:10]
}

// Update's function decides whether to keep the key: returning false
// deletes it, here once a stock runs out.
func ExampleDict_Update() {
	stock, _ := mp.NewDict[string, int]()
	stock.Set("tickets", 2)
	for range 3 {
		sold := false
		stock.Update("tickets", func(left int, ok bool) (int, bool) {
			if !ok {
				return 0, false // none left: stays deleted
			}
			sold = true
			return left - 1, left > 1
		})
		fmt.Println("sold:", sold)
	}
	// Output:
	// sold: true
	// sold: true
	// sold: false
}

func ExampleNewList() {
	l, _ := mp.NewList[string]()
	for _, s := range []string{"a", "b", "c"} {
		l.Append(s)
	}
	l.Delete(0)
	l.Update(1, func(s string) string { return s + s })
	items, _ := l.Items()
	fmt.Println(items, slices.Contains(items, "cc"))
	_, err := l.Get(5)
	fmt.Println(err)
	// Output:
	// [b cc] true
	// mp: index out of range: index 5, length 2
}

// Clear empties a Dict in one step: no process sees it half cleared.
func ExampleDict_Clear() {
	d, _ := mp.NewDict[string, int]()
	d.Set("a", 1)
	d.Set("b", 2)
	d.Clear()
	fmt.Println(d.Len())
	// Output: 0
}

// All iterates over a snapshot, as maps.All does over a map.
func ExampleDict_All() {
	d, _ := mp.NewDict[string, int]()
	d.Set("a", 1)
	d.Set("b", 2)
	sum := 0
	for _, v := range d.All() {
		sum += v
	}
	fmt.Println(sum)
	// Output: 3
}

// Pop takes the last element, PopAt any; processes popping from one List
// at once each get a different element.
func ExampleList_Pop() {
	l, _ := mp.NewList[string]()
	for _, s := range []string{"a", "b", "c"} {
		l.Append(s)
	}
	last, _ := l.Pop()
	first, _ := l.PopAt(0)
	l.Insert(0, "z")
	fmt.Println(last, first)
	for i, v := range l.All() {
		fmt.Println(i, v)
	}
	l.Pop()
	l.Pop()
	_, err := l.Pop()
	fmt.Println(err)
	// Output:
	// c a
	// 0 z
	// 1 b
	// mp: index out of range: pop from an empty List
}

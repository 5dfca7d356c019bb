package mp_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/multiproc/mp"
)

func TestPrimitivesPrintWhatTheyAre(t *testing.T) {
	ctx := context.Background()
	l := mp.Must(mp.NewLock())
	d := mp.Must(mp.NewDict[string, int]())
	d.Set("a", 1)
	d.Set("b", 2)
	q := mp.Must(mp.NewQueue[int](0))
	q.Put(ctx, 7)
	v := mp.Must(mp.NewValue[float64](2.5))
	ev := mp.Must(mp.NewEvent())
	sem := mp.Must(mp.NewSemaphore(3))
	var zero mp.Lock
	cases := []struct {
		v    fmt.Stringer
		want string
	}{
		{l, "mp.Lock{unlocked}"},
		{d, "mp.Dict[string,int]{2 entries}"},
		{q, "mp.Queue[int]{1 item}"},
		{v, "mp.Value[float64]{2.5}"},
		{ev, "mp.Event{not set}"},
		{sem, "mp.Semaphore{value 3}"},
		{&zero, "mp.Lock{zero value}"},
	}
	for _, c := range cases {
		if got := fmt.Sprint(c.v); got != c.want {
			t.Errorf("printed %q, want %q", got, c.want)
		}
	}
	l.Acquire(ctx)
	if got, want := fmt.Sprint(l), fmt.Sprintf("mp.Lock{held by pid %d}", os.Getpid()); got != want {
		t.Errorf("printed %q, want %q", got, want)
	}
	l.Release()
	l.Close()
	if got := fmt.Sprint(l); got != "mp.Lock{closed}" {
		t.Errorf("a closed Lock printed %q", got)
	}
}

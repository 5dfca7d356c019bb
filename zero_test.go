package mp_test

import (
	"context"
	"errors"
	"testing"

	"github.com/multiproc/mp"
)

// TestZeroValues checks what the types' docs say of their zero values: a
// method panics with an error wrapping ErrInvalidHandle, MarshalBinary
// returns one, and Close does nothing or panics as documented.
func TestZeroValues(t *testing.T) {
	ctx := context.Background()
	type zero struct {
		name       string
		use        func()
		marshal    func() ([]byte, error)
		close      func() error
		closePanic bool
	}
	closeOf := func(f func()) func() error { return func() error { f(); return nil } }
	cases := []zero{
		{"Array", func() { new(mp.Array[int]).Len() }, new(mp.Array[int]).MarshalBinary, new(mp.Array[int]).Close, false},
		{"Barrier", func() { new(mp.Barrier).Wait(ctx) }, new(mp.Barrier).MarshalBinary, new(mp.Barrier).Close, false},
		{"Condition", func() { new(mp.Condition).Notify(1) }, new(mp.Condition).MarshalBinary, new(mp.Condition).Close, false},
		{"Conn", func() { new(mp.Conn).Send(1) }, new(mp.Conn).MarshalBinary, new(mp.Conn).Close, true},
		{"Dict", func() { new(mp.Dict[int, int]).Len() }, new(mp.Dict[int, int]).MarshalBinary, new(mp.Dict[int, int]).Close, false},
		{"Event", func() { new(mp.Event).Set() }, new(mp.Event).MarshalBinary, new(mp.Event).Close, false},
		{"JoinableQueue", func() { new(mp.JoinableQueue[int]).TaskDone() }, new(mp.JoinableQueue[int]).MarshalBinary, closeOf(new(mp.JoinableQueue[int]).Close), true},
		{"List", func() { new(mp.List[int]).Pop() }, new(mp.List[int]).MarshalBinary, new(mp.List[int]).Close, false},
		{"Lock", func() { new(mp.Lock).Lock() }, new(mp.Lock).MarshalBinary, new(mp.Lock).Close, false},
		{"Queue", func() { new(mp.Queue[int]).Len() }, new(mp.Queue[int]).MarshalBinary, closeOf(new(mp.Queue[int]).Close), true},
		{"RLock", func() { new(mp.RLock).Acquire(ctx) }, new(mp.RLock).MarshalBinary, new(mp.RLock).Close, false},
		{"Semaphore", func() { new(mp.Semaphore).Value() }, new(mp.Semaphore).MarshalBinary, new(mp.Semaphore).Close, false},
		{"SharedMemory", func() { new(mp.SharedMemory).Bytes() }, new(mp.SharedMemory).MarshalBinary, new(mp.SharedMemory).Close, true},
		{"SimpleQueue", func() { new(mp.SimpleQueue[int]).Empty() }, new(mp.SimpleQueue[int]).MarshalBinary, closeOf(new(mp.SimpleQueue[int]).Close), true},
		{"Value", func() { new(mp.Value[int]).Load() }, new(mp.Value[int]).MarshalBinary, new(mp.Value[int]).Close, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustPanicWith(t, mp.ErrInvalidHandle, c.use)
			if _, err := c.marshal(); !errors.Is(err, mp.ErrInvalidHandle) {
				t.Errorf("MarshalBinary: %v", err)
			}
			if c.closePanic {
				mustPanicWith(t, mp.ErrInvalidHandle, func() { c.close() })
			} else if err := c.close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	if err := new(mp.Process).Start(); !errors.Is(err, mp.ErrBadArguments) {
		t.Errorf("Start of a zero Process: %v", err)
	}
	if err := new(mp.Thread).Start(); !errors.Is(err, mp.ErrBadArguments) {
		t.Errorf("Start of a zero Thread: %v", err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := new(mp.AsyncResult[int]).Wait(done); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait of a zero AsyncResult: %v", err)
	}
}

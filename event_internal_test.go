package mp

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEventSetThenClearReleasesWaiters: waiters that are waiting when Set
// is called return even if Clear follows at once, as in Python.
func TestEventSetThenClearReleasesWaiters(t *testing.T) {
	e := Must(NewEvent())
	const n = 50
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.Wait(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	// Every waiter has counted itself before reading the word it waits on.
	for atomic.LoadUint32(e.waiters) != n {
		time.Sleep(time.Millisecond)
	}
	e.Set()
	e.Clear()
	wg.Wait()
	if e.IsSet() {
		t.Fatal("still set after Clear")
	}
}

// Package supervise reaps the children of this process and tells interested
// parts of the library when one has died, so that they can repair what the
// child held: a lock it owned, a queue record it was writing, a pool task it
// was running.
//
// Each watched child costs one goroutine parked in the runtime's poller on
// the child's pidfd; no OS thread is held while children run.
package supervise

import (
	"sync"
	"syscall"

	"github.com/multiproc/mp/internal/spawn"
)

// ExitHook is called after a child of this process has exited and been
// reaped. Hooks run on the reaping goroutine, before Watch's callback, so
// that repairs are complete before anyone waiting on the child resumes.
// Hooks must not block.
type ExitHook func(pid int, st spawn.Status)

var (
	mu       sync.Mutex
	hooks    = map[int]ExitHook{}
	nextHook int
	live     = map[int]*spawn.Child{}
)

// OnExit registers h and returns a function that unregisters it.
func OnExit(h ExitHook) (remove func()) {
	mu.Lock()
	defer mu.Unlock()
	id := nextHook
	nextHook++
	hooks[id] = h
	return func() {
		mu.Lock()
		defer mu.Unlock()
		delete(hooks, id)
	}
}

// Watch reaps c when it exits, runs the exit hooks, then calls done with its
// status. err is non-nil only if waiting itself failed.
func Watch(c *spawn.Child, done func(st spawn.Status, err error)) {
	mu.Lock()
	live[c.Pid] = c
	mu.Unlock()
	go func() {
		st, err := c.Wait()
		mu.Lock()
		delete(live, c.Pid)
		hs := make([]ExitHook, 0, len(hooks))
		for _, h := range hooks {
			hs = append(hs, h)
		}
		mu.Unlock()
		if err == nil {
			for _, h := range hs {
				h(c.Pid, st)
			}
		}
		done(st, err)
	}()
}

// SignalAll sends sig to every watched child that has not been reaped, and
// to their process groups: what a stopping tree does to pass the stop on.
func SignalAll(sig syscall.Signal) {
	mu.Lock()
	cs := make([]*spawn.Child, 0, len(live))
	for _, c := range live {
		cs = append(cs, c)
	}
	mu.Unlock()
	for _, c := range cs {
		c.Signal(sig)
	}
}

// Live returns the number of watched children not yet reaped.
func Live() int {
	mu.Lock()
	defer mu.Unlock()
	return len(live)
}

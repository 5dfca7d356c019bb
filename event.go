package mp

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/multiproc/mp/internal/wait"
)

// Event is a flag shared by every process of the tree, Python's
// multiprocessing.Event: Wait blocks until another goroutine or process
// calls Set.
//
// The flag shares its word with a count of Sets, so a waiter released by a
// Set returns even if Clear follows at once, as in Python.
//
// The zero Event is not usable: make one with NewEvent. Its methods panic
// with an error wrapping ErrInvalidHandle; Close does nothing.
type Event struct {
	h       handle
	word    *uint32 // generation << 1 | flag
	waiters *uint32 // goroutines in Wait, in every process: Set skips the wake-up call when 0
}

// NewEvent returns a new Event, not set.
func NewEvent() (*Event, error) {
	h, err := alloc(kindEvent, 64)
	if err != nil {
		return nil, err
	}
	return openEvent(h), nil
}

func openEvent(h handle) *Event { return &Event{h: h, word: h.u32(0), waiters: h.u32(4)} }

// Set sets the flag and wakes every waiter, in every process.
func (e *Event) Set() {
	e.check()
	e.h.loc.raceRelease()
	for {
		v := atomic.LoadUint32(e.word)
		if v&1 != 0 {
			return
		}
		if atomic.CompareAndSwapUint32(e.word, v, (v+2)|1) {
			// A waiter counts itself before it reads the word, so either it
			// sees the new word or this sees its count.
			if atomic.LoadUint32(e.waiters) != 0 {
				wait.Wake(e.word, math.MaxInt32)
			}
			return
		}
	}
}

// Clear resets the flag.
func (e *Event) Clear() {
	e.check()
	for {
		v := atomic.LoadUint32(e.word)
		if v&1 == 0 || atomic.CompareAndSwapUint32(e.word, v, v&^1) {
			return
		}
	}
}

// IsSet reports whether the flag is set: a snapshot.
func (e *Event) IsSet() bool {
	e.check()
	return atomic.LoadUint32(e.word)&1 != 0
}

// Wait blocks until the flag is set, or ctx ends. It returns nil at once if
// the flag is set, nil once a Set happens, and ctx.Err() otherwise.
func (e *Event) Wait(ctx context.Context) error {
	e.check()
	defer e.h.loc.raceAcquire()
	v := atomic.LoadUint32(e.word)
	if v&1 != 0 {
		return nil
	}
	atomic.AddUint32(e.waiters, 1)
	defer atomic.AddUint32(e.waiters, ^uint32(0))
	for atomic.LoadUint32(e.word) == v {
		if err := wait.Wait(ctx, e.word, v, 0); err != nil {
			return err
		}
	}
	return nil // the word changed: only a Set changes an unset flag's word
}

func (e *Event) check() {
	if !e.h.valid() {
		panic(fmt.Errorf("%w: an Event must be made with NewEvent", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the event's handle.
func (e *Event) MarshalBinary() ([]byte, error) { return e.h.marshal() }

// UnmarshalBinary makes e refer to the Event that data encodes.
func (e *Event) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindEvent, data); err != nil {
		return err
	}
	*e = *openEvent(h)
	return nil
}

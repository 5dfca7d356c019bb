package mp

import (
	"errors"
	"fmt"

	"github.com/multiproc/mp/internal/refs"
)

// MaxName is the longest name, in bytes, that SetName records.
const MaxName = refs.MaxName

// Primitives are named after they are made rather than by an option of
// every constructor: a name is an afterthought of observability, most
// constructors take no options, and a method names a primitive a child
// received as well as one it made.

// setName records name for the primitive in the tree's shared memory, where
// ReadStatus in any process finds it.
func (h *handle) setName(name string) error {
	if !h.valid() {
		return fmt.Errorf("%w: zero value", ErrInvalidHandle)
	}
	if len(name) > MaxName {
		return fmt.Errorf("%w: name of %d bytes (at most %d)", ErrBadArguments, len(name), MaxName)
	}
	err := arena.refs.SetName(h.ref.id, name)
	if errors.Is(err, refs.ErrGone) {
		return fmt.Errorf("%w: %s", ErrClosed, h.kind)
	}
	return err
}

// SetName gives the lock a name, shown by ReadStatus, the status page and
// the logs of every process of the tree instead of a number. Names need not
// be unique; the last SetName wins. It fails with an error wrapping
// ErrBadArguments for a name longer than MaxName bytes.
func (l *Lock) SetName(name string) error { return l.h.setName(name) }

// SetName names the lock, as Lock.SetName does.
func (r *RLock) SetName(name string) error { return r.h.setName(name) }

// SetName names the semaphore, as Lock.SetName does.
func (s *Semaphore) SetName(name string) error { return s.h.setName(name) }

// SetName names the event, as Lock.SetName does.
func (e *Event) SetName(name string) error { return e.h.setName(name) }

// SetName names the condition, as Lock.SetName does.
func (c *Condition) SetName(name string) error { return c.h.setName(name) }

// SetName names the barrier, as Lock.SetName does.
func (b *Barrier) SetName(name string) error { return b.h.setName(name) }

// SetName names the queue, as Lock.SetName does.
func (q *Queue[T]) SetName(name string) error { return q.h.setName(name) }

// SetName names the queue, as Lock.SetName does.
func (s *SimpleQueue[T]) SetName(name string) error { return s.q.h.setName(name) }

// SetName names the pipe (both its ends), as Lock.SetName does.
func (c *Conn) SetName(name string) error { return c.h.setName(name) }

// SetName names the value, as Lock.SetName does.
func (v *Value[T]) SetName(name string) error { return v.h.setName(name) }

// SetName names the array, as Lock.SetName does.
func (a *Array[T]) SetName(name string) error { return a.h.setName(name) }

// SetName names the dict, as Lock.SetName does.
func (d *Dict[K, V]) SetName(name string) error { return d.h.setName(name) }

// SetName names the list, as Lock.SetName does.
func (l *List[T]) SetName(name string) error { return l.h.setName(name) }

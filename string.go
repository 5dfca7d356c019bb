package mp

import (
	"fmt"
	"reflect"
	"sync/atomic"
)

// The String methods show what a primitive is and, where it has one, its
// state as this process sees it at that moment, for fmt.Println and
// debuggers: "mp.Lock{held by pid 1234}", "mp.Dict[string,int]{3 entries}".

// state returns the description of a handle that cannot be looked at, or
// "" if it can.
func (h *handle) state() string {
	switch {
	case h.ref != nil && h.ref.closed.Load():
		return "closed"
	case h.base == nil:
		return "zero value"
	}
	return ""
}

func describe(name string, h *handle, f func() string) string {
	if s := h.state(); s != "" {
		return "mp." + name + "{" + s + "}"
	}
	return "mp." + name + "{" + f() + "}"
}

func typeName[T any]() string { return reflect.TypeFor[T]().String() }

// holder describes the owner recorded in a robust mutex's word.
func (m mutex) holder() string {
	if pid := uint32(atomic.LoadUint64(m.state)) &^ (1 << 31); pid != 0 {
		return fmt.Sprintf("held by pid %d", pid)
	}
	return "unlocked"
}

func (l *Lock) String() string { return describe("Lock", &l.h, l.m.holder) }

func (r *RLock) String() string { return describe("RLock", &r.h, r.m.holder) }

func (s *Semaphore) String() string {
	return describe("Semaphore", &s.h, func() string { return fmt.Sprintf("value %d", s.Value()) })
}

func (e *Event) String() string {
	return describe("Event", &e.h, func() string {
		if e.IsSet() {
			return "set"
		}
		return "not set"
	})
}

func (c *Condition) String() string {
	return describe("Condition", &c.h, func() string { return fmt.Sprint(c.lock) })
}

func (b *Barrier) String() string {
	return describe("Barrier", &b.h, func() string {
		if b.Broken() {
			return "broken"
		}
		return fmt.Sprintf("%d of %d waiting", b.NWaiting(), b.Parties())
	})
}

func (v *Value[T]) String() string {
	return describe("Value["+typeName[T]()+"]", &v.h, func() string { return fmt.Sprint(v.Load()) })
}

func (a *Array[T]) String() string {
	return describe("Array["+typeName[T]()+"]", &a.h, func() string { return fmt.Sprintf("len %d", a.Len()) })
}

func (d *Dict[K, V]) String() string {
	return describe("Dict["+typeName[K]()+","+typeName[V]()+"]", &d.h, func() string {
		return plural(d.Len(), "entry", "entries")
	})
}

func (l *List[T]) String() string {
	return describe("List["+typeName[T]()+"]", &l.h, func() string { return plural(l.Len(), "item", "items") })
}

func (q *Queue[T]) String() string {
	if q == nil {
		return "mp.Queue{nil}"
	}
	return describe("Queue["+typeName[T]()+"]", &q.h, func() string { return plural(q.Len(), "item", "items") })
}

func (c *Conn) String() string {
	if c == nil {
		return "mp.Conn{nil}"
	}
	return describe("Conn", &c.h, func() string {
		if c.closed.Load() {
			return fmt.Sprintf("end %d, closed", c.end)
		}
		return fmt.Sprintf("end %d", c.end)
	})
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

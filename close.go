package mp

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/multiproc/mp/internal/refs"
	"github.com/multiproc/mp/internal/ring"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/shmap"
)

// The memory of a primitive lives as long as some process of the tree holds
// it. A process holds a primitive from the moment it makes it, or decodes a
// handle to it (an argument, a struct field, an item from a queue), until it
// closes every handle it has, or the garbage collector finds them
// unreachable, or the process ends, however it ends. When the last process
// lets go, the memory goes back to the arena, and a handle to it that is
// still encoded somewhere decodes as an error wrapping ErrClosed.
//
// The Close methods below release one handle at once. Close must be the
// last call on that handle in this process: calls after it panic with an
// error wrapping ErrClosed, and a call running in another goroutine at the
// same moment is a bug, as using an os.File's descriptor after closing it
// would be. Other handles to the same primitive, in this process or
// another, are not affected.

// Close releases this handle to the Lock; see the package documentation
// on the lifetime of primitives. Closing twice does nothing.
func (l *Lock) Close() error { l.h.close(); return nil }

// Close releases this handle to the RLock; see Lock.Close.
func (r *RLock) Close() error { r.h.close(); return nil }

// Close releases this handle to the Semaphore; see Lock.Close. Permits this
// process holds stay taken until it releases them or ends.
func (s *Semaphore) Close() error { s.h.close(); return nil }

// Close releases this handle to the Event; see Lock.Close.
func (e *Event) Close() error { e.h.close(); return nil }

// Close releases this handle to the Condition; see Lock.Close. Its lock
// is not closed: the Condition keeps the lock's memory alive while it
// lives itself.
func (c *Condition) Close() error {
	if c.h.close() && c.own {
		c.lockHandle().close()
	}
	return nil
}

func (c *Condition) lockHandle() *handle {
	if c.l != nil {
		return &c.l.h
	}
	return &c.r.h
}

// Close releases this handle to the Barrier; see Lock.Close.
func (b *Barrier) Close() error { b.h.close(); return nil }

// Close releases this handle to the Value; see Lock.Close.
func (v *Value[T]) Close() error {
	if v.h.close() && v.lock.h.ref != v.h.ref {
		v.lock.h.close() // the handle made for the Lock given with WithLock
	}
	return nil
}

// Close releases this handle to the Array; see Lock.Close. Slices of the
// Array's memory obtained from it must not be used after Close.
func (a *Array[T]) Close() error {
	if a.h.close() && a.lock.h.ref != a.h.ref {
		a.lock.h.close()
	}
	return nil
}

// Close releases this handle to the Dict; see Lock.Close. When the last
// handle of the tree goes, so do the Dict's entries.
func (d *Dict[K, V]) Close() error { d.h.close(); return nil }

// Close releases this handle to the List; see Lock.Close.
func (l *List[T]) Close() error { l.h.close(); return nil }

// A primitive is any type with a handle: what Process.Start looks for in
// its arguments.
type primitive interface{ handleOf() *handle }

func (l *Lock) handleOf() *handle           { return &l.h }
func (r *RLock) handleOf() *handle          { return &r.h }
func (s *Semaphore) handleOf() *handle      { return &s.h }
func (e *Event) handleOf() *handle          { return &e.h }
func (c *Condition) handleOf() *handle      { return &c.h }
func (b *Barrier) handleOf() *handle        { return &b.h }
func (v *Value[T]) handleOf() *handle       { return &v.h }
func (a *Array[T]) handleOf() *handle       { return &a.h }
func (d *Dict[K, V]) handleOf() *handle     { return &d.h }
func (l *List[T]) handleOf() *handle        { return &l.h }
func (q *Queue[T]) handleOf() *handle       { return &q.h }
func (s *SimpleQueue[T]) handleOf() *handle { return &s.q.h }
func (c *Conn) handleOf() *handle           { return &c.h }

// destroy functions free what a primitive owns besides its block, when the
// last process lets go of it; each is restartable (see refs.DestroyFunc).
func init() {
	refs.SetDestroy(uint8(kindQueue), func(t *refs.Table, b shm.Offset) {
		returnDrained(t, b+qRing)
		ring.DestroyFrom(t.Arena(), b+qRing)
		freeHolderChain(t.Arena(), b+qHolders)
	})
	refs.SetDestroy(uint8(kindConn), func(t *refs.Table, b shm.Offset) {
		for _, r := range []shm.Offset{b + pRecv0, b + pRecv1} {
			returnDrained(t, r)
			ring.DestroyFrom(t.Arena(), r)
		}
		freeHolderChain(t.Arena(), b+pHolders)
		freeHolderChain(t.Arena(), b+pHolders+holdersSize)
	})
	refs.SetDestroy(uint8(kindSemaphore), func(t *refs.Table, b shm.Offset) {
		freeHolderChain(t.Arena(), b+semTableOff)
	})
	refs.SetDestroy(uint8(kindDict), func(t *refs.Table, b shm.Offset) {
		shmap.OpenMap(t.Arena(), b+dictMap).Destroy()
	})
	refs.SetDestroy(uint8(kindList), func(t *refs.Table, b shm.Offset) {
		shmap.OpenList(t.Arena(), b+dictMap).Destroy()
	})
	refs.SetDestroy(uint8(kindCondition), func(t *refs.Table, b shm.Offset) {
		t.ReleaseContained(b + condLockRef)
	})
	lockOfShared := func(t *refs.Table, b shm.Offset) { t.ReleaseContained(b + shLockRef) }
	refs.SetDestroy(uint8(kindValue), lockOfShared)
	refs.SetDestroy(uint8(kindArray), lockOfShared)
}

// contain makes the primitive of h hold inner, recording it in the word at
// byte at of h's block, for as long as h's primitive lives.
func (h *handle) contain(at uintptr, inner *handle) error {
	return arena.refs.Contain(inner.ref.id, uint8(inner.kind), inner.off, h.off+shm.Offset(at))
}

// contained returns a new handle to the primitive of kind k at offset off
// that h's primitive holds in the word at byte at of its block.
func (h *handle) contained(at uintptr, k kind, off shm.Offset) (handle, error) {
	id, ok := arena.refs.Contained(h.off + shm.Offset(at))
	if !ok {
		return handle{}, fmt.Errorf("%w: no %s recorded", ErrInvalidHandle, k)
	}
	var inner handle
	enc := encodeHandle(k, arena.refs.Tree(), id, off)
	if err := inner.unmarshal(k, enc); err != nil {
		return handle{}, err
	}
	return inner, nil
}

// attachForChild makes the child about to start with args a holder of
// every primitive among them, before it runs: it then holds them even if
// it dies before decoding them, and the sweep after its death lets go.
func attachForChild(child uint64, args []any) {
	for _, h := range handlesIn(args) {
		arena.refs.AttachFor(child, h.ref.id, uint8(h.kind), h.off)
	}
}

// handlesIn returns the handles in use of the primitives found in vs (see
// eachPrimitive).
func handlesIn(vs []any) []*handle {
	var out []*handle
	for _, v := range vs {
		eachPrimitive(v, func(p primitive) {
			if h := p.handleOf(); h.base != nil && h.ref != nil {
				out = append(out, h)
			}
		})
	}
	return out
}

// reclaimMu keeps goroutines that ran out of arena space from collecting
// garbage all at once.
var reclaimMu sync.Mutex

// retryNoSpace calls f again, while it fails for lack of arena space,
// after each of a few rounds of reclaiming: a sweep of dead processes'
// references, then a garbage collection, whose cleanups release the
// primitives dropped without Close a moment later.
func retryNoSpace[T any](f func() (T, error)) (T, error) {
	reclaimMu.Lock()
	defer reclaimMu.Unlock()
	v, err := f()
	for wait := time.Millisecond; errors.Is(err, shm.ErrNoSpace) && wait <= 64*time.Millisecond; wait *= 2 {
		arena.refs.Sweep()
		runtime.GC()
		time.Sleep(wait)
		v, err = f()
	}
	return v, err
}

// noSpace adds to an ErrNoSpace what the arena holds, by kind.
func noSpace(err error) error {
	if !errors.Is(err, shm.ErrNoSpace) || arena.refs == nil {
		return err
	}
	return fmt.Errorf("%w (in use: %s)", err, statsString(arena.refs.Stats()))
}

// ArenaStats describes the tree's shared-memory arena, as seen by every
// process of the tree.
type ArenaStats struct {
	Size    int // capacity in bytes (MULTIPROC_ARENA_SIZE)
	InUse   int // bytes in allocated blocks
	Free    int // Size - InUse
	Largest int // the largest free block: the largest allocation that can succeed

	// Tables is the part of InUse that keeps track of which process holds
	// which primitive: it grows with the largest number of primitives
	// live at once (about 32 bytes each) and of processes, and is kept.
	// Names (SetName, and a pool's worker pipes) add 128 KiB to it once
	// per 2047 primitives, kept as well.
	Tables int

	// Objects is the number of live primitives, and ByKind the same by
	// kind ("Lock", "Queue", ...), kinds with none left out. A primitive
	// counts as live while some process holds it.
	Objects int
	ByKind  map[string]int
}

// ReadArenaStats returns the arena's figures, after letting go of what
// dead processes held, so that a test or a long-running program can watch
// for leaks. It fails only if the arena cannot be created.
func ReadArenaStats() (ArenaStats, error) {
	a, err := treeArena()
	if err != nil {
		return ArenaStats{}, err
	}
	arena.refs.Sweep()
	st := a.Stats()
	rs := arena.refs.Stats()
	s := ArenaStats{Size: st.Size, InUse: st.InUse, Free: st.Free, Largest: st.Largest,
		Tables: rs.Tables, Objects: rs.Live, ByKind: map[string]int{}}
	for k, n := range rs.ByKind {
		if n > 0 {
			s.ByKind[kind(k).String()] = n
		}
	}
	return s, nil
}

func statsString(rs refs.Stats) string {
	var parts []string
	for k, n := range rs.ByKind {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, kind(k)))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "no primitives"
	}
	return strings.Join(parts, ", ")
}

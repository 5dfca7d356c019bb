package mp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/multiproc/mp/internal/wait"
)

// ErrBrokenBarrier is returned by Barrier.Wait when the barrier is broken,
// or breaks, or is reset while the caller waits: Python's
// BrokenBarrierError.
var ErrBrokenBarrier = errors.New("mp: broken barrier")

// Barrier makes a fixed number of parties (goroutines of any processes of
// the tree) wait for each other, Python's multiprocessing.Barrier: each
// calls Wait, and all are released together when the last one arrives. The
// barrier can then be used again, round after round.
//
// A barrier breaks when Abort is called, when the context of a waiting
// party ends, or when the action panics or cannot run; every waiting party,
// and every later Wait, then gets ErrBrokenBarrier until Reset.
//
// A party that dies (a killed process) while waiting is not detected: the
// other parties wait until their contexts end, which breaks the barrier.
//
// A released party learns whether its round ended by release or by Reset
// from a history of the last 32-bits.Len(parties) rounds (at least 12). A
// party that does not get to run while more rounds than that end after its
// own (possible only when more goroutines than parties use the barrier)
// counts its round as released.
//
// The zero Barrier is not usable: make one with NewBarrier. Its methods
// panic with an error wrapping ErrInvalidHandle; Close does nothing.
type Barrier struct {
	h         handle
	state     *uint64
	parties   int
	countBits uint
	hb        *atomic.Uint64 // h.loc.hb: updated on arrival, after the action, and on leaving, for the race detector
}

// Block layout. The state word holds, in its low half (the futex word),
// the generation (31 bits) and the broken flag (bit 0); in its high half,
// the number of parties arrived in this generation (countBits bits, enough
// for parties) and above it the history: one bit per generation that
// ended, the latest lowest, set if that generation ended by Reset or Abort
// rather than by release. A waiter that wakes late learns from the history
// how its own generation ended, up to 32-countBits generations back.
const (
	barState   = 0  // u64
	barParties = 8  // u32
	barHasAct  = 12 // u32: 1 if there is an action
	barNameLen = 16 // u32
	barName    = 20 // the action's function name

	barMaxName   = 200
	barBlockSize = 256

	barBroken  = 1
	barGenMask = 1<<31 - 1
)

// MaxBarrierParties is the most parties a Barrier can have.
const MaxBarrierParties = 1<<20 - 1

// barActions holds, in the process that made each barrier, its action by
// the barrier's offset: the function itself, registered or not.
var barActions sync.Map // shm.Offset -> func()

// NewBarrier returns a barrier for parties parties (1 to
// MaxBarrierParties). If action is not nil, the last party to arrive in
// each round calls it before any party is released.
//
// The action runs in the process of that last party. For parties in other
// processes, it must be a function registered with Register (a top-level
// func(), not a closure); its name is kept in shared memory and looked up in
// that process. An action that is not registered, such as a closure, works
// as long as every party is in the process that made the barrier; if the
// last party to arrive is in another process, the barrier breaks, and that
// party gets an error wrapping ErrNotRegistered and ErrBrokenBarrier.
func NewBarrier(parties int, action func()) (*Barrier, error) {
	if parties < 1 || parties > MaxBarrierParties {
		return nil, badValue("NewBarrier(%d, ...): a barrier has from 1 to %d parties", parties, MaxBarrierParties)
	}
	var name string
	if action != nil {
		name = runtime.FuncForPC(reflect.ValueOf(action).Pointer()).Name()
		if len(name) > barMaxName {
			if _, err := lookup(action); err == nil {
				return nil, fmt.Errorf("%w: the barrier action's name %s is longer than %d bytes", ErrBadArguments, name, barMaxName)
			}
			name = name[:barMaxName] // for error messages only
		}
	}
	h, err := alloc(kindBarrier, barBlockSize)
	if err != nil {
		return nil, err
	}
	atomic.StoreUint32(h.u32(barParties), uint32(parties))
	if action != nil {
		barActions.Store(h.off, action)
		copy(barBytes(h, barName, barMaxName), name)
		atomic.StoreUint32(h.u32(barNameLen), uint32(len(name)))
		atomic.StoreUint32(h.u32(barHasAct), 1)
	}
	return openBarrier(h), nil
}

func openBarrier(h handle) *Barrier {
	p := int(atomic.LoadUint32(h.u32(barParties)))
	return &Barrier{h: h, state: h.u64(barState), parties: p, countBits: uint(bits.Len(uint(p))), hb: &h.loc.hb}
}

// barBytes returns n bytes of h's block from byte i.
func barBytes(h handle, i uintptr, n int) []byte {
	return (*[barBlockSize]byte)(h.base)[i : int(i)+n]
}

// State word accessors.
func (b *Barrier) word() *uint32 { return (*uint32)(b.h.base) } // the low half, little-endian

func (b *Barrier) gen(s uint64) uint32 { return uint32(s) >> 1 & barGenMask }
func (b *Barrier) count(s uint64) int  { return int(s >> 32 & (1<<b.countBits - 1)) }
func (b *Barrier) hist(s uint64) uint64 {
	return s >> (32 + b.countBits)
}
func (b *Barrier) histBits() uint { return 32 - b.countBits }

func (b *Barrier) pack(gen uint32, brk bool, count int, hist uint64) uint64 {
	s := uint64(gen&barGenMask) << 1
	if brk {
		s |= barBroken
	}
	hist &= 1<<b.histBits() - 1
	return s | uint64(count)<<32 | hist<<(32+b.countBits)
}

// next is the state that ends the generation of s: the next generation,
// not broken, nobody arrived, with how s's generation ended in the history.
func (b *Barrier) next(s uint64, reset bool) uint64 {
	h := b.hist(s) << 1
	if reset {
		h |= 1
	}
	return b.pack(b.gen(s)+1, false, 0, h)
}

// Wait arrives at the barrier and blocks until all parties have arrived,
// or the barrier breaks or is reset, or ctx ends. It returns the arrival
// index: 0 for the first party of the round to arrive, Parties()-1 for the
// last (which runs the action); -1 with an error.
//
// Errors: ErrBrokenBarrier if the barrier is or becomes broken, or is
// reset while the caller waits; when ctx ends, the caller breaks the
// barrier and gets an error that matches both ErrBrokenBarrier and
// ctx.Err() with errors.Is (the other parties get ErrBrokenBarrier); the
// last party gets an error wrapping ErrBrokenBarrier if the action panics
// or cannot run in its process. A waiting party whose ctx ends while the
// last party runs the action breaks the barrier all the same (the last
// party then gets ErrBrokenBarrier too). A caller that arrives while the
// action of a full round runs (more goroutines than parties use the
// barrier) waits for the next round; if its ctx ends then, it gets
// ctx.Err() alone and the barrier is unaffected.
func (b *Barrier) Wait(ctx context.Context) (int, error) {
	b.check()
	b.hb.Add(1)
	defer b.hb.Add(1)
	for {
		s := atomic.LoadUint64(b.state)
		if s&barBroken != 0 {
			return -1, ErrBrokenBarrier
		}
		c := b.count(s)
		if c >= b.parties {
			// The round is complete and its action runs: wait for the
			// next round.
			if err := wait.Wait(ctx, b.word(), uint32(s), 0); err != nil {
				return -1, err
			}
			continue
		}
		ns := s&^(uint64(1<<b.countBits-1)<<32) | uint64(c+1)<<32
		if !atomic.CompareAndSwapUint64(b.state, s, ns) {
			continue
		}
		var err error
		if c+1 == b.parties {
			err = b.release(ns)
		} else {
			err = b.await(ctx, b.gen(s))
		}
		if err != nil {
			return -1, err
		}
		return c, nil
	}
}

// await waits for generation g to end.
func (b *Barrier) await(ctx context.Context, g uint32) error {
	for {
		s := atomic.LoadUint64(b.state)
		if over, err := b.settled(s, g); over {
			return err
		}
		err := wait.Wait(ctx, b.word(), uint32(s), 0)
		if err == nil {
			continue
		}
		// ctx ended: break the barrier, unless it was released meanwhile.
		for {
			s := atomic.LoadUint64(b.state)
			if over, err := b.settled(s, g); over {
				return err
			}
			if atomic.CompareAndSwapUint64(b.state, s, b.pack(g, true, 0, b.hist(s))) {
				wait.Wake(b.word(), math.MaxInt32)
				return fmt.Errorf("%w: a waiting party's context ended: %w", ErrBrokenBarrier, err)
			}
		}
	}
}

// settled reports whether a waiter of generation g is done waiting, now
// that the state is s, and with what: g has ended, or is broken.
func (b *Barrier) settled(s uint64, g uint32) (over bool, err error) {
	switch {
	case b.gen(s) != g:
		return true, b.outcome(s, g)
	case s&barBroken != 0:
		return true, ErrBrokenBarrier
	}
	return false, nil
}

// outcome tells how generation g ended, now that the state is s.
func (b *Barrier) outcome(s uint64, g uint32) error {
	d := uint((b.gen(s) - g) & barGenMask)
	if d <= b.histBits() && b.hist(s)>>(d-1)&1 != 0 {
		return ErrBrokenBarrier
	}
	// Released; or so long ago (more than histBits generations, which
	// takes more goroutines than parties) that the history is gone, and
	// release is by far the likelier end.
	return nil
}

// release is the last party's part: run the action, then release the
// others. ns is the state with all parties arrived.
func (b *Barrier) release(ns uint64) error {
	b.hb.Add(1) // after every party's arrival, for the race detector
	if err := b.runAction(); err != nil {
		b.breakGen(b.gen(ns))
		return err
	}
	b.hb.Add(1) // what the action wrote, for the race detector
	if !atomic.CompareAndSwapUint64(b.state, ns, b.next(ns, false)) {
		// Only Abort, Reset or a waiter's ended ctx change a full
		// round's state.
		return fmt.Errorf("%w: broken or reset while its action ran", ErrBrokenBarrier)
	}
	wait.Wake(b.word(), math.MaxInt32)
	return nil
}

// breakGen breaks the barrier if generation g is still current.
func (b *Barrier) breakGen(g uint32) {
	for {
		s := atomic.LoadUint64(b.state)
		if b.gen(s) != g || s&barBroken != 0 {
			return
		}
		if atomic.CompareAndSwapUint64(b.state, s, b.pack(g, true, 0, b.hist(s))) {
			wait.Wake(b.word(), math.MaxInt32)
			return
		}
	}
}

func (b *Barrier) runAction() (err error) {
	if atomic.LoadUint32(b.h.u32(barHasAct)) == 0 {
		return nil
	}
	if f, ok := barActions.Load(b.h.off); ok {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: the barrier's action panicked: %v", ErrBrokenBarrier, r)
			}
		}()
		f.(func())()
		return nil
	}
	n := min(int(atomic.LoadUint32(b.h.u32(barNameLen))), barMaxName)
	name := string(barBytes(b.h, barName, n))
	t, ok := lookupName(name)
	if !ok {
		return fmt.Errorf("%w: %w: the barrier's action %s cannot run in process %d, the last party to arrive (register it with mp.Register to run it in any process)",
			ErrBrokenBarrier, ErrNotRegistered, name, os.Getpid())
	}
	if _, cerr := t.call(context.Background(), reflect.Value{}, nil); cerr != nil {
		if cerr.Panicked {
			return fmt.Errorf("%w: the barrier's action panicked: %s", ErrBrokenBarrier, cerr.Message)
		}
		return fmt.Errorf("%w: the barrier's action failed: %s", ErrBrokenBarrier, cerr.Message)
	}
	return nil
}

// Abort breaks the barrier: the parties waiting get ErrBrokenBarrier, and
// so does every Wait until Reset.
func (b *Barrier) Abort() {
	b.check()
	for {
		s := atomic.LoadUint64(b.state)
		if s&barBroken != 0 {
			return
		}
		if atomic.CompareAndSwapUint64(b.state, s, b.pack(b.gen(s), true, 0, b.hist(s))) {
			wait.Wake(b.word(), math.MaxInt32)
			return
		}
	}
}

// Reset returns the barrier to its initial state, not broken, with no
// party arrived. Parties waiting get ErrBrokenBarrier.
func (b *Barrier) Reset() {
	b.check()
	for {
		s := atomic.LoadUint64(b.state)
		if atomic.CompareAndSwapUint64(b.state, s, b.next(s, true)) {
			wait.Wake(b.word(), math.MaxInt32)
			return
		}
	}
}

// Broken reports whether the barrier is broken: a snapshot.
func (b *Barrier) Broken() bool {
	b.check()
	return atomic.LoadUint64(b.state)&barBroken != 0
}

// NWaiting returns the number of parties that have arrived in the current
// round (during the action of a full round, all of them), as Python's
// n_waiting: a snapshot. It is 0 when the barrier is broken.
func (b *Barrier) NWaiting() int {
	b.check()
	s := atomic.LoadUint64(b.state)
	if s&barBroken != 0 {
		return 0
	}
	return b.count(s)
}

// Parties returns the number of parties the barrier was made for.
func (b *Barrier) Parties() int {
	b.check()
	return b.parties
}

func (b *Barrier) check() {
	if !b.h.valid() {
		panic(fmt.Errorf("%w: a Barrier must be made with NewBarrier", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the barrier's handle.
func (b *Barrier) MarshalBinary() ([]byte, error) { return b.h.marshal() }

// UnmarshalBinary makes b refer to the Barrier that data encodes.
func (b *Barrier) UnmarshalBinary(data []byte) error {
	var h handle
	if err := h.unmarshal(kindBarrier, data); err != nil {
		return err
	}
	*b = *openBarrier(h)
	return nil
}

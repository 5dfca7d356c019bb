package ring

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/shm"
)

// FuzzRingCellCorruption overwrites the len, flags, ool and payload of a
// READY cell with fuzz bytes, then takes it: TryGet must return exactly
// what the documented validation gives (an error wrapping ErrCorrupt, the
// cell's bytes, or a skip), never panic or hang, never free a block it
// refused, and leave the ring working. TestCorruptCells has the fixed
// cases; this explores around them.
//
//	go test -run '^$' -fuzz FuzzRingCellCorruption -fuzztime 30s ./internal/ring
//
// what selects the corruption:
//
//	bit 0    len   = n
//	bit 1    flags = flags
//	bit 2    ool   = a value chosen by bits 4-5 from ool
//	bit 3    payload overwritten with payload
//	bits 4-5 ool: 0 the value itself, 1 the victim block's offset plus
//	         int32(ool), 2 the message's own block (the victim's if it has
//	         none) plus int32(ool), 3 the ring's block plus int32(ool)
//	bits 6-7 messages put and taken before, so the cell is another one
func FuzzRingCellCorruption(f *testing.F) {
	const (
		setLen = 1 << iota
		setFlags
		setOOL
		setPayload
	)
	mode := func(m int) uint8 { return uint8(m << 4) }
	f.Add(uint8(0), uint16(10), uint32(0), uint32(0), uint64(0), []byte(nil))  // untouched, inline
	f.Add(uint8(0), uint16(500), uint32(0), uint32(0), uint64(0), []byte(nil)) // untouched, out of line
	f.Add(uint8(setPayload), uint16(50), uint32(0), uint32(0), uint64(0), []byte("altered payload"))
	f.Add(uint8(setLen), uint16(10), uint32(1<<31), uint32(0), uint64(0), []byte(nil))
	f.Add(uint8(setLen), uint16(10), uint32(DefaultInline+1), uint32(0), uint64(0), []byte(nil))
	f.Add(uint8(setLen), uint16(10), uint32(DefaultInline), uint32(0), uint64(0), []byte(nil))
	f.Add(uint8(setFlags), uint16(10), uint32(0), uint32(77), uint64(0), []byte(nil))
	f.Add(uint8(setFlags), uint16(10), uint32(0), uint32(flagSkip), uint64(0), []byte(nil))
	f.Add(uint8(setFlags), uint16(500), uint32(0), uint32(flagSkip), uint64(0), []byte(nil))
	f.Add(uint8(setFlags), uint16(500), uint32(0), uint32(0), uint64(0), []byte(nil)) // out of line read as inline
	f.Add(uint8(setFlags|setLen), uint16(10), uint32(5), uint32(flagOOL|flagSkip), uint64(0), []byte(nil))
	f.Add(uint8(setFlags|setLen), uint16(10), uint32(1<<31), uint32(flagOOL), uint64(0), []byte(nil))
	f.Add(uint8(setOOL), uint16(500), uint32(0), uint32(0), uint64(0xdeadbeef00), []byte(nil))
	f.Add(uint8(setOOL|mode(1)), uint16(500), uint32(0), uint32(0), uint64(64), []byte(nil))
	f.Add(uint8(setOOL|mode(1)), uint16(500), uint32(0), uint32(0), uint64(0), []byte(nil)) // the victim itself
	f.Add(uint8(setOOL|setLen|mode(1)), uint16(500), uint32(1e8), uint32(0), uint64(0), []byte(nil))
	f.Add(uint8(setOOL|setLen|mode(1)), uint16(500), uint32(1e6), uint32(0), uint64(0), []byte(nil))
	f.Add(uint8(setOOL|setLen|mode(2)), uint16(500), uint32(0), uint32(0), uint64(0), []byte(nil))
	f.Add(uint8(setOOL|mode(2)), uint16(500), uint32(0), uint32(0), uint64(1<<32-64), []byte(nil))
	f.Add(uint8(setOOL|mode(3)), uint16(500), uint32(0), uint32(0), uint64(hdrSize), []byte(nil))
	f.Add(uint8(setOOL|setFlags|setLen|mode(1)), uint16(10), uint32(100), uint32(flagOOL), uint64(0), []byte(nil))
	f.Add(uint8(setOOL|setFlags|mode(0)|3<<6), uint16(10), uint32(0), uint32(flagOOL), uint64(0), []byte(nil))

	f.Fuzz(func(t *testing.T, what uint8, size uint16, n, flags uint32, ool uint64, payload []byte) {
		a := newArena(t, 4<<20)
		r := newRing(t, a, 4, DefaultInline)
		victim, err := a.Alloc(4096)
		if err != nil {
			t.Fatal(err)
		}
		for i, b := 0, a.Bytes(victim, 4096); i < len(b); i++ {
			b[i] = byte(i * 13)
		}
		for i := range int(what >> 6) {
			if err := r.TryPut([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			if _, err := r.TryGet(nil); err != nil {
				t.Fatal(err)
			}
		}
		msg := makeMsg(nil, 1, 1, int(size)%(8<<10))
		sentinel := makeMsg(nil, 2, 2, 30)
		if err := r.TryPut(msg); err != nil {
			t.Fatal(err)
		}
		if err := r.TryPut(sentinel); err != nil {
			t.Fatal(err)
		}

		c := r.root.cell(atomic.LoadUint64(r.root.head))
		own := shm.Offset(c.ool) // the message's own block, or 0
		if what&setLen != 0 {
			c.len = n
		}
		if what&setFlags != 0 {
			c.flags = flags
		}
		if what&setOOL != 0 {
			delta := uint64(int64(int32(ool)))
			switch (what >> 4) & 3 {
			case 0:
				c.ool = ool
			case 1:
				c.ool = uint64(victim) + delta
			case 2:
				base := own
				if base == 0 {
					base = victim
				}
				c.ool = uint64(base) + delta
			case 3:
				c.ool = uint64(r.Offset()) + delta
			}
		}
		if what&setPayload != 0 {
			copy(r.root.payload(c), payload)
		}

		// What the validation documented in read must give.
		n, flags, target := c.len, c.flags, shm.Offset(c.ool)
		var want []byte // the message expected, if not an error
		wantErr := false
		skip := false
		freed := shm.Offset(0) // the block the get must free
		switch flags {
		case 0:
			if int64(n) > int64(r.Inline()) {
				wantErr = true
			} else {
				want = bytes.Clone(r.root.payload(c)[:n])
			}
		case flagSkip:
			skip = true
		case flagOOL:
			size, err := a.BlockSize(target)
			if n > MaxMessage || err != nil || size < int(n) || n == 0 {
				wantErr = true
				break
			}
			if target == r.Offset() {
				// The cell names the ring's own block as its message:
				// a corrupt cell that looks valid is delivered and its
				// block freed, which here would destroy the ring. No
				// validation can tell; nothing to test.
				t.Skip("ool names the ring's block")
			}
			want = bytes.Clone(a.Bytes(target, int(n)))
			freed = target
		default:
			wantErr = true
		}
		allocs := a.Stats().Allocs

		got, err := tryGetWithin(t, r)
		switch {
		case skip:
			// The cell is passed over: the sentinel comes next.
			if err != nil || !bytes.Equal(got, sentinel) {
				t.Fatalf("skip cell: got %d bytes, %v; want the sentinel", len(got), err)
			}
		case wantErr:
			if !errors.Is(err, ErrCorrupt) || got != nil {
				t.Fatalf("len %d flags %#x ool %#x: got %d bytes, %v; want ErrCorrupt", n, flags, uint64(target), len(got), err)
			}
		default:
			if err != nil || got == nil || !bytes.Equal(got, want) {
				t.Fatalf("len %d flags %#x ool %#x: got %d bytes (nil %v), %v; want the cell's %d bytes",
					n, flags, uint64(target), len(got), got == nil, err, len(want))
			}
		}
		if freed != victim {
			if _, err := a.BlockSize(victim); err != nil {
				t.Fatalf("the victim block was freed: %v", err)
			}
		}
		if !skip {
			// The sentinel is still there, intact, and then nothing.
			if got, err := tryGetWithin(t, r); err != nil || !bytes.Equal(got, sentinel) {
				t.Fatalf("after the corrupt cell: got %d bytes, %v; want the sentinel", len(got), err)
			}
		}
		if _, err := r.TryGet(nil); err != ErrEmpty {
			t.Fatalf("after the sentinel: %v, want ErrEmpty", err)
		}
		checkWorks(t, r)
		if r.Lost() != 0 || r.Skipped() != 0 {
			t.Fatalf("lost %d skipped %d", r.Lost(), r.Skipped())
		}
		// Every block is accounted for: the ring, the victim unless it was
		// delivered, and the message's own block unless it was delivered
		// (a block the corruption made the ring forget leaks, as
		// documented). A ring that keeps delivered blocks for reuse must
		// give them all back when trimmed.
		if tr, ok := any(r).(interface{ Trim() }); ok {
			tr.Trim()
		}
		if freed != 0 {
			allocs--
			if _, err := a.BlockSize(freed); err == nil {
				t.Fatalf("the block %#x of a delivered message was never freed", uint64(freed))
			}
		}
		if got := a.Stats().Allocs; got != allocs {
			t.Fatalf("%d allocations after more laps, want %d", got, allocs)
		}
	})
}

// tryGetWithin is TryGet, failing the test if it does not return within
// ten seconds (a TryGet never waits).
func tryGetWithin(t *testing.T, r *Ring) ([]byte, error) {
	t.Helper()
	type result struct {
		msg []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := r.TryGet(nil)
		ch <- result{m, err}
	}()
	select {
	case res := <-ch:
		return res.msg, res.err
	case <-time.After(10 * time.Second):
		t.Fatal("TryGet did not return within 10 s")
		return nil, nil
	}
}

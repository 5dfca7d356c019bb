package shm

import (
	"errors"
	"sync/atomic"
	"testing"
)

// TestTxnCommitAndRollback: a transaction's stores stay when its function
// returns nil, and are undone when it fails or panics.
func TestTxnCommitAndRollback(t *testing.T) {
	a, err := New(MinSize)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := a.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	w := a.Uint64(b)
	if err := a.Update(func(x *Txn) error { x.Store(b, 7); return nil }); err != nil || *w != 7 {
		t.Fatalf("committed: %v, word %d", err, *w)
	}
	boom := errors.New("boom")
	if err := a.Update(func(x *Txn) error { x.Store(b, 8); return boom }); err != boom || *w != 7 {
		t.Fatalf("failed: %v, word %d", err, *w)
	}
	func() {
		defer func() { recover() }()
		a.Update(func(x *Txn) error { x.Store(b, 9); panic("in the transaction") })
	}()
	if *w != 7 {
		t.Fatalf("after a panic: word %d", *w)
	}
	err = a.Update(func(x *Txn) error {
		for i := 0; i <= TxnMaxStores; i++ {
			x.Store(b, uint64(100+i))
		}
		return nil
	})
	if !errors.Is(err, ErrTxnTooBig) || *w != 7 {
		t.Fatalf("too big: %v, word %d", err, *w)
	}
	if err := a.check(); err != nil {
		t.Fatal(err)
	}
}

// TestJournalLengthScribbledMidTransaction: another process writing the
// journal length while this one is in a transaction cannot make it write
// past the journal (it panicked with a journal overflow).
func TestJournalLengthScribbledMidTransaction(t *testing.T) {
	a, err := New(MinSize)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := a.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	err = a.Update(func(x *Txn) error {
		for i := 0; i < 10; i++ {
			atomic.StoreUint64(a.word(hdrJournalLen), journalCap+uint64(i))
			x.Store(b+Offset(8*i), uint64(i+1))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := *a.Uint64(b + 72); got != 10 {
		t.Fatalf("last store: %d", got)
	}
	if err := a.check(); err != nil {
		t.Fatal(err)
	}
}

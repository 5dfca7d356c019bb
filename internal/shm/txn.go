package shm

import "fmt"

// Txn is a change to words in the heap that is atomic with respect to the
// death of the process making it: a process killed at any instruction of
// Update leaves either all of the transaction's stores done or none. It
// rides on the allocator's own lock and undo journal, so a transaction is
// serialised with every allocation and free of every process, and the next
// holder of the lock rolls back a transaction whose process died.
//
// A Txn is valid only inside the function passed to Update.
type Txn struct {
	a     *Arena
	limit uint64 // journal length at which Set refuses more stores
}

// TxnMaxStores is the number of distinct word stores one transaction may
// make. It leaves room in the journal for the allocator's own operations.
const TxnMaxStores = 256

// ErrTxnTooBig is returned by Update when its function made more than
// TxnMaxStores stores; the transaction is rolled back.
var ErrTxnTooBig = fmt.Errorf("shm: transaction of more than %d stores", TxnMaxStores)

// Update runs f with the allocator lock held and makes its stores
// permanent if f returns nil; if f returns an error or panics, its stores
// are rolled back and the error (or panic) is passed on. f must not call
// other methods of the Arena: the lock is not reentrant.
func (a *Arena) Update(f func(t *Txn) error) (err error) {
	if err := a.lock(); err != nil {
		return err
	}
	t := &Txn{a: a, limit: TxnMaxStores}
	done := false
	defer func() {
		if !done {
			// f panicked: undo what it did, then let the panic go on.
			a.rollback()
			a.unlock()
		}
	}()
	err = f(t)
	if err == nil && t.limit == 0 {
		err = ErrTxnTooBig
	}
	if err != nil {
		if rerr := a.rollback(); rerr != nil {
			err = rerr
		}
	} else {
		a.commit()
	}
	done = true
	a.unlock()
	return err
}

// Load returns the word at off, which must be 8-byte aligned and inside
// the heap.
func (t *Txn) Load(off Offset) uint64 {
	t.a.checkWord(off)
	return t.a.get(uint64(off))
}

// Store sets the word at off to v, recording its old value in the journal
// first. A transaction that already made TxnMaxStores stores ignores the
// rest and fails at the end with ErrTxnTooBig.
func (t *Txn) Store(off Offset, v uint64) {
	t.a.checkWord(off)
	if t.limit == 0 {
		return
	}
	if t.a.get(uint64(off)) == v {
		return
	}
	t.limit--
	t.a.set(uint64(off), v)
}

// checkWord panics if off is not an aligned word of the heap: a
// transaction only ever touches words of blocks its caller owns.
func (a *Arena) checkWord(off Offset) {
	if uint64(off) < a.heapOff || uint64(off)-a.heapOff > a.heapSize-8 || off%8 != 0 {
		panic(fmt.Sprintf("shm: transaction word %#x is not an aligned heap word", uint64(off)))
	}
}

// SetCrashHook makes f run before every store to the arena's metadata and
// journaled words, and after each commit, so that tests of packages built on
// the arena can kill a process at each point a kill could happen. nil
// removes it. It is for tests only: it is not synchronised.
func SetCrashHook(f func()) { crashHook = f }

// Check verifies the allocator's invariants (see check), for tests of
// packages built on the arena: nil, or every violation found.
func (a *Arena) Check() error { return a.check() }

package mp_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/multiproc/mp"
)

// deposit adds amount to a counter shared with the parent, n times.
func deposit(balance *mp.Value[int], amount, n int) error {
	for range n {
		balance.Add(amount)
	}
	return nil
}

// squareAll squares every element of a, all under the Array's lock.
func squareAll(a *mp.Array[int]) error {
	return a.Update(func(s []int) {
		for i, x := range s {
			s[i] = x * x
		}
	})
}

// transfer moves amount from account from to account to, and counts the
// transfer: three changes that the lock shared by the Array and the Value
// makes one.
func transfer(accounts *mp.Array[int], count *mp.Value[int], from, to, amount int) error {
	accounts.Lock()
	defer accounts.Unlock()
	accounts.Set(from, accounts.At(from)-amount)
	accounts.Set(to, accounts.At(to)+amount)
	count.Add(1)
	return nil
}

// sign attaches to the SharedMemory called name and writes into it.
func sign(name string) error {
	m, err := mp.AttachSharedMemory(name)
	if err != nil {
		return err
	}
	defer m.Close()
	copy(m.Bytes(), "signed by the child")
	return nil
}

func init() { mp.Register(deposit, squareAll, transfer, sign) }

// runAndJoin starts fn(args...) in a child process and waits for it.
func runAndJoin(fn any, args ...any) error {
	p := mp.NewProcess(fn, args...)
	if err := p.Start(); err != nil {
		return err
	}
	return p.Join(context.Background())
}

// A Value is a counter that every process of the tree updates in place:
// Add is atomic across processes, so no update is lost and no lock is
// needed.
func ExampleNewValue() {
	balance, err := mp.NewValue(0)
	if err != nil {
		fmt.Println(err)
		return
	}
	var ps []*mp.Process
	for range 4 {
		p := mp.NewProcess(deposit, balance, 10, 100)
		if err := p.Start(); err != nil {
			fmt.Println(err)
			return
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		p.Join(context.Background())
	}
	fmt.Println(balance.Load())
	// Output: 4000
}

// An update that reads and then writes needs the Value's lock, as in
// Python's `with v.get_lock(): v.value *= 2`; and a process killed holding
// it leaves it to the next Acquire, with ErrOwnerDied.
func ExampleValue_Lock() {
	v, _ := mp.NewValue(21.0)
	v.Lock()
	v.Store(v.Load() * 2)
	v.Unlock()
	fmt.Println(v.Load())

	if err := v.Acquire(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	v.Store(v.Load() + 0.5)
	v.Release()
	fmt.Println(v.Load())
	// Output:
	// 42
	// 42.5
}

// A child process changes the elements of an Array in place; Update holds
// the Array's lock for the whole read-modify-write.
func ExampleNewArray() {
	a, err := mp.NewArray[int](5)
	if err != nil {
		fmt.Println(err)
		return
	}
	a.CopyFrom([]int{0, 1, 2, 3, 4})
	if err := runAndJoin(squareAll, a); err != nil {
		fmt.Println(err)
		return
	}
	out := make([]int, a.Len())
	a.CopyTo(out)
	fmt.Println(out, a.At(4))
	// Output: [0 1 4 9 16] 16
}

// Values and Arrays made with the same Lock are changed together under it:
// Python's Value('i', 0, lock=lock). Here every transfer keeps the total.
func ExampleWithLock() {
	lock, _ := mp.NewLock()
	accounts, _ := mp.NewArray[int](2, mp.WithLock(lock))
	count, _ := mp.NewValue(0, mp.WithLock(lock))
	accounts.CopyFrom([]int{100, 0})
	for _, amount := range []int{30, 20, 5} {
		if err := runAndJoin(transfer, accounts, count, 0, 1, amount); err != nil {
			fmt.Println(err)
			return
		}
	}
	lock.Lock()
	fmt.Println(accounts.At(0), accounts.At(1), count.Load())
	lock.Unlock()
	// Output: 45 55 3
}

// A SharedMemory is found by name, by any process of the user: here a
// child process; it could be a program that is not in the tree at all.
func ExampleNewSharedMemory() {
	m, err := mp.NewSharedMemory(64)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	if err := runAndJoin(sign, m.Name()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s\n", m.Bytes()[:19])
	// Output: signed by the child
}

// The creator owns the memory: once it has closed it, the name attaches no
// more, although processes that attached before keep their mapping.
func ExampleAttachSharedMemory() {
	m, _ := mp.NewSharedMemory(4096)
	early, _ := mp.AttachSharedMemory(m.Name())
	defer early.Close()
	m.Close()

	_, err := mp.AttachSharedMemory(m.Name())
	fmt.Println(errors.Is(err, fs.ErrNotExist))
	early.Bytes()[0] = 1 // still mapped
	fmt.Println(early.Bytes()[0], early.Size())
	// Output:
	// true
	// 1 4096
}

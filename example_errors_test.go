package mp_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/multiproc/mp"
)

// OverdrawnError is an error type with fields, which a task returns in a
// worker process.
type OverdrawnError struct {
	Account string
	Short   int
}

func (e *OverdrawnError) Error() string {
	return fmt.Sprintf("account %s is short of %d", e.Account, e.Short)
}

func withdraw(account string, amount int) (int, error) {
	const balance = 30
	if amount > balance {
		return 0, fmt.Errorf("withdraw %d: %w", amount, &OverdrawnError{Account: account, Short: amount - balance})
	}
	return balance - amount, nil
}

func init() {
	mp.Register(withdraw)
	mp.RegisterErrorType[*OverdrawnError]()
}

// A registered error type keeps its type and fields on the way back from
// a worker process, so errors.As finds it.
func ExampleRegisterErrorType() {
	pool := mp.Must(mp.NewPool(1))
	defer pool.Join(context.Background())
	defer pool.Close()

	_, err := mp.Apply[int](context.Background(), pool, withdraw, "alice", 100)
	fmt.Println(err)
	var oe *OverdrawnError
	if errors.As(err, &oe) {
		fmt.Println(oe.Account, oe.Short)
	}
	// Output:
	// withdraw 100: account alice is short of 70
	// alice 70
}

// Python's threading.current_thread().
func ExampleCurrentThread() {
	t := mp.NewThread(func() { fmt.Println("in the thread:", mp.CurrentThread().Name) })
	t.Name = "downloader"
	if err := t.Start(); err != nil {
		fmt.Println(err)
	}
	t.Join(context.Background())
	fmt.Println("outside:", mp.CurrentThread().Name)
	// Output:
	// in the thread: downloader
	// outside: MainThread
}

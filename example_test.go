package mp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/multiproc/mp"
)

// cube writes x³ to a file: a child process's output that the parent can
// read back (its stdout is the parent's, but examples check only the
// parent's own printing).
func cube(path string, x int) error {
	return os.WriteFile(path, fmt.Appendf(nil, "%d", x*x*x), 0o644)
}

func init() { mp.Register(cube) }

func ExampleNewProcess() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "cube")

	p := mp.NewProcess(cube, out, 3)
	if err := p.Start(); err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Join(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	b, _ := os.ReadFile(out)
	code, _ := p.ExitCode()
	fmt.Printf("the child computed %s and exited with %d\n", b, code)
	// Output: the child computed 27 and exited with 0
}

func ExampleProcess_Join_timeout() {
	p := mp.NewProcess(blockForever)
	p.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err := p.Join(ctx)
	fmt.Println(err, p.IsAlive())

	p.Terminate()
	err = p.Join(context.Background())
	code, _ := p.ExitCode()
	fmt.Println(code, p.IsAlive())
	var pe *mp.ProcessError
	fmt.Println(errors.As(err, &pe))
	// Output:
	// context deadline exceeded true
	// -15 false
	// true
}

func ExampleProcessError() {
	p := mp.NewProcess(fail, "no tickets left")
	p.Start()
	err := p.Join(context.Background())
	var pe *mp.ProcessError
	if errors.As(err, &pe) {
		fmt.Println(pe.Message, pe.ExitCode)
	}
	// Output: no tickets left 1
}

func ExampleRegister_unregistered() {
	err := mp.NewProcess(unregistered).Start()
	fmt.Println(errors.Is(err, mp.ErrNotRegistered))
	// Output: true
}

func ExampleNewThread() {
	total := 0
	t := mp.NewThread(func(xs ...int) {
		for _, x := range xs {
			total += x
		}
	}, 1, 2, 3)
	t.Start()
	t.Join(context.Background())
	fmt.Println(total)
	// Output: 6
}

func ExampleCPUCount() {
	fmt.Println(mp.CPUCount() >= 1)
	// Output: true
}

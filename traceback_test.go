package mp_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/multiproc/mp"
)

func init() {
	mp.Register(panicLoudly, failLoudly, panicInTask)
	scenarios["child tracebacks"] = func(dir string) error {
		mp.Init()
		defer mp.Shutdown()
		ctx := context.Background()
		run := func(name string, quiet bool, fn any, arg string) error {
			p := mp.NewProcess(fn, arg)
			p.Name, p.QuietErrors = name, quiet
			if err := p.Start(); err != nil {
				return err
			}
			if err := p.Join(ctx); err == nil {
				return fmt.Errorf("%s succeeded", name)
			}
			return nil
		}
		for _, err := range []error{
			run("Loud-1", false, panicLoudly, "marker-panic"),
			run("Loud-2", false, failLoudly, "marker-error"),
			run("Quiet-3", true, failLoudly, "marker-quiet"),
		} {
			if err != nil {
				return err
			}
		}
		pool, err := mp.NewPool(1)
		if err != nil {
			return err
		}
		defer pool.Terminate()
		if _, err := mp.Apply[int](ctx, pool, panicInTask, "marker-task-panic"); err == nil {
			return errors.New("the panicking task succeeded")
		}
		if _, err := mp.Apply[int](ctx, pool, failLoudly, "marker-task-error"); err == nil {
			return errors.New("the failing task succeeded")
		}
		pool.Close()
		return pool.Join(ctx)
	}
}

func panicLoudly(msg string) { panic(msg) }

func failLoudly(msg string) (int, error) { return 0, errors.New(msg) }

func panicInTask(msg string) int { panic(msg) }

// TestChildPrintsItsTraceback: a child whose function panics or fails
// prints "Process <name>:" and the panic with its stack, or the error, on
// its stderr, as Python prints a child's traceback; QuietErrors silences
// it; a pool's tasks print nothing (their errors go to the caller).
func TestChildPrintsItsTraceback(t *testing.T) {
	res, stderr := runScenario(t, "child tracebacks", t.TempDir(), nil)
	if res != "ok" {
		t.Fatalf("scenario: %q\nstderr:\n%s", res, stderr)
	}
	panicAt := strings.Index(stderr, "Process Loud-1:\npanic: marker-panic\n")
	if panicAt < 0 || !strings.Contains(stderr[panicAt:], "panicLoudly") {
		t.Errorf("no traceback of the panicking child, with its stack; stderr:\n%s", stderr)
	}
	if !strings.Contains(stderr, "Process Loud-2:\nerror: marker-error\n") {
		t.Errorf("no report of the failing child; stderr:\n%s", stderr)
	}
	for _, quiet := range []string{"marker-quiet", "marker-task-panic", "marker-task-error"} {
		if strings.Contains(stderr, quiet) {
			t.Errorf("%s was printed; stderr:\n%s", quiet, stderr)
		}
	}
}

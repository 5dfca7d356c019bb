package mp

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// killMidLoop starts fn(args..., started) in a child, waits until the
// child sets started (its loop is running), SIGKILLs it at a random point
// up to 2 ms later, and checks that the kill is what ended it.
func killMidLoop(t *testing.T, round int, fn any, args ...any) {
	t.Helper()
	started, err := NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	p := NewProcess(fn, append(args, started)...)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := started.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // a random point of the loop
	p.Kill()
	err = p.Join(ctx)
	var pe *ProcessError
	if !errors.As(err, &pe) || pe.ExitCode != -9 {
		t.Fatalf("round %d: the child ended by itself: %v", round, err)
	}
}

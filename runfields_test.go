package mp_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/multiproc/mp"
)

// sender is a Run type whose pipe end travels in a field.
type sender struct {
	Out *mp.Conn
}

func (s sender) Run() error { return s.Out.Send("hello") }

func init() { mp.Register(sender{}) }

// TestPipeEndInRunField: a pipe end in a field of a Run type is handed to
// the child at Start like one passed as an argument: the child's message
// arrives, and a child killed before it ran is a peer gone (io.EOF), not
// a peer that may still send.
func TestPipeEndInRunField(t *testing.T) {
	ctx := context.Background()
	for _, kill := range []bool{false, true} {
		in, out, err := mp.Pipe(false)
		if err != nil {
			t.Fatal(err)
		}
		p := mp.NewProcess(sender{Out: out})
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if kill {
			p.Kill()
		}
		p.Join(ctx)
		var got string
		err = in.Recv(within(t), &got)
		switch {
		case kill && err != nil && !errors.Is(err, io.EOF):
			t.Fatalf("killed sender: Recv = %v, want io.EOF (or its message, if it ran)", err)
		case !kill && (err != nil || got != "hello"):
			t.Fatalf("Recv = %q, %v", got, err)
		}
		in.Close()
		out.Close()
	}
}

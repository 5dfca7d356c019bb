package altbench

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// roleEnv names the role a re-executed test binary plays; its
// arguments come in argsEnv.
const (
	roleEnv = "ALTBENCH_ROLE"
	argsEnv = "ALTBENCH_ARGS"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := serve(role, os.Getenv(argsEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "altbench worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// start re-executes the test binary as role, with stdin and stdout piped
// to the caller when pipes is set.
func start(tb testing.TB, role, args string, pipes bool) (*exec.Cmd, io.WriteCloser, io.ReadCloser) {
	tb.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), roleEnv+"="+role, argsEnv+"="+args)
	cmd.Stderr = os.Stderr
	var in io.WriteCloser
	var out io.ReadCloser
	if pipes {
		var err error
		if in, err = cmd.StdinPipe(); err != nil {
			tb.Fatal(err)
		}
		if out, err = cmd.StdoutPipe(); err != nil {
			tb.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if in != nil {
			in.Close()
		}
		if err := cmd.Wait(); err != nil {
			tb.Errorf("worker %s: %v", role, err)
		}
	})
	return cmd, in, out
}

// socketPath is a fresh Unix socket path for one benchmark.
func socketPath(tb testing.TB) string {
	return filepath.Join(tb.TempDir(), "s")
}

func serve(role, args string) error {
	switch role {
	case "json":
		return serveJSON(os.Stdin, os.Stdout)
	case "rpc":
		return serveRPC(args)
	case "gob-produce":
		return gobProduce(args)
	case "gob-echo":
		return gobEcho(args)
	}
	return fmt.Errorf("unknown role %q", role)
}

// task and result are the JSON lines of the hand-rolled pool.
type task struct {
	ID int `json:"id"`
	X  int `json:"x"`
}

type result struct {
	ID int `json:"id"`
	R  int `json:"r"`
}

func identity(x int) int { return x }

// serveJSON answers each task line with its result line, flushing when no
// more input is waiting.
func serveJSON(r io.Reader, w io.Writer) error {
	in := bufio.NewReader(r)
	out := bufio.NewWriter(w)
	dec := json.NewDecoder(in)
	enc := json.NewEncoder(out)
	for {
		var t task
		if err := dec.Decode(&t); err == io.EOF {
			return out.Flush()
		} else if err != nil {
			return err
		}
		if err := enc.Encode(result{t.ID, identity(t.X)}); err != nil {
			return err
		}
		if !pending(dec) && in.Buffered() == 0 {
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
}

// Worker is the net/rpc service.
type Worker struct{}

// Identity returns its argument.
func (Worker) Identity(x int, r *int) error {
	*r = identity(x)
	return nil
}

func serveRPC(path string) error {
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	defer l.Close()
	s := rpc.NewServer()
	if err := s.Register(Worker{}); err != nil {
		return err
	}
	fmt.Println("ready")
	c, err := l.Accept()
	if err != nil {
		return err
	}
	s.ServeConn(c)
	return nil
}

// gobProduce connects to the socket at args' path and sends n items of
// size bytes, gob-encoded.
func gobProduce(args string) error {
	var path string
	var n, size int
	if _, err := fmt.Sscan(args, &path, &n, &size); err != nil {
		return err
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	defer c.Close()
	w := bufio.NewWriter(c)
	enc := gob.NewEncoder(w)
	item := make([]byte, size)
	for i := range n {
		item[0] = byte(i)
		if err := enc.Encode(item); err != nil {
			return err
		}
	}
	return w.Flush()
}

// gobEcho connects to the socket at path and sends back every message.
func gobEcho(args string) error {
	var path string
	if _, err := fmt.Sscan(args, &path); err != nil {
		return err
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	defer c.Close()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	dec, enc := gob.NewDecoder(r), gob.NewEncoder(w)
	for {
		var msg []byte
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := enc.Encode(msg); err != nil {
			return err
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// pending reports whether dec holds input it has not decoded yet, other
// than the newline after the last value.
func pending(dec *json.Decoder) bool {
	rest, _ := io.ReadAll(dec.Buffered()) // a view of dec's buffer: reading it consumes nothing
	return len(bytes.TrimSpace(rest)) > 0
}

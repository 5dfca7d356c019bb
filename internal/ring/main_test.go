package ring

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/leakcheck"
	"github.com/multiproc/mp/internal/shm"
)

// The test binary doubles as the child processes of the multi-process
// tests: TestMain runs a child role instead of the tests when roleEnv is
// set. The arena arrives as fd 3 (the first of exec.Cmd.ExtraFiles).
const (
	roleEnv = "RING_TEST_ROLE"
	argEnv  = "RING_TEST_ARG"
	arenaFd = 3
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(childMain(role, os.Getenv(argEnv)))
	}
	os.Exit(leakcheck.Run(m))
}

// Test messages: id (4 bytes), seq (8), filler derived from both, FNV-64a
// of everything before it (8). At least msgMin bytes.
const msgMin = 20

func makeMsg(buf []byte, id uint32, seq uint64, size int) []byte {
	size = max(size, msgMin)
	buf = append(buf[:0], make([]byte, size)...)
	binary.LittleEndian.PutUint32(buf, id)
	binary.LittleEndian.PutUint64(buf[4:], seq)
	for i := 12; i < size-8; i++ {
		buf[i] = byte(uint64(i)*31 + seq + uint64(id))
	}
	h := fnv.New64a()
	h.Write(buf[:size-8])
	binary.LittleEndian.PutUint64(buf[size-8:], h.Sum64())
	return buf
}

func checkMsg(m []byte) (uint32, uint64, error) {
	if len(m) < msgMin {
		return 0, 0, fmt.Errorf("message of %d bytes", len(m))
	}
	h := fnv.New64a()
	h.Write(m[:len(m)-8])
	if h.Sum64() != binary.LittleEndian.Uint64(m[len(m)-8:]) {
		return 0, 0, fmt.Errorf("bad checksum in a %d-byte message", len(m))
	}
	id, seq := binary.LittleEndian.Uint32(m), binary.LittleEndian.Uint64(m[4:])
	for i := 12; i < len(m)-8; i++ {
		if m[i] != byte(uint64(i)*31+seq+uint64(id)) {
			return 0, 0, fmt.Errorf("bad filler byte %d in a %d-byte message", i, len(m))
		}
	}
	return id, seq, nil
}

// msgSize is the size of message seq for a size mode: mode 0 small
// (8..40), 1 mixed around the default inline limit and well beyond it,
// 2 up to 8 KiB; msgMin and more: that size.
func msgSize(mode int, seq uint64) int {
	switch {
	case mode >= msgMin:
		return mode
	case mode == 1:
		sizes := []int{20, 95, 96, 97, 128, 300, 1000, 4096}
		return sizes[seq%uint64(len(sizes))]
	case mode == 2:
		return 20 + int(seq*2654435761%8192)
	}
	return 8 + int(seq%33)
}

// killAt makes the hook SIGKILL this process at the n-th time it reaches
// point p.
func killAt(p hookPoint, n int) {
	count := 0
	testHook = func(q hookPoint) {
		if q != p {
			return
		}
		if count++; count == n {
			unix.Kill(os.Getpid(), unix.SIGKILL)
			for {
				time.Sleep(time.Hour)
			}
		}
	}
}

func childMain(role, arg string) int {
	a, err := shm.Attach(arenaFd)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "child %d (%s %s): %v\n", os.Getpid(), role, arg, err)
		return 3
	}
	var off shm.Offset
	var id uint32
	var count, mode, point, nth int
	fmt.Sscan(arg, &off, &id, &count, &mode, &point, &nth)
	r, err := Open(a, off)
	if err != nil {
		return fail(err)
	}
	if role == "destroy" { // off src(0: Destroy) 0 0 0 nth: killed at the nth Destroy hook
		killAtDestroy(nth)
		os.Stdout.Write([]byte{'r'})
		if count != 0 {
			err = DestroyFrom(a, shm.Offset(count))
		} else {
			err = Destroy(a, off)
		}
		if err != nil {
			return fail(err)
		}
		return 0
	}
	if point != 0 {
		killAt(hookPoint(point), nth)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	os.Stdout.Write([]byte{'r'})   // ready: the parent may kill us now
	os.Stdin.Read(make([]byte, 1)) // wait for the parent's go, if it gives one
	switch role {
	case "produce": // off id count(0: forever) mode point nth
		var buf []byte
		for seq := uint64(0); count == 0 || seq < uint64(count); seq++ {
			buf = makeMsg(buf, id, seq, msgSize(mode, seq))
			if err := r.Put(ctx, buf); err != nil {
				if errors.Is(err, ErrClosed) {
					break
				}
				return fail(err)
			}
		}
	case "consume", "consume-batch": // off id count(0: until closed) mode point nth
		// Reports (id, seq) of every message, 12 bytes each, on stdout:
		// one write per message (a pipe write of 12 bytes is atomic, so a
		// kill leaves whole records), or batched.
		var out io.Writer = os.Stdout
		var bw *bytes.Buffer
		if role == "consume-batch" {
			bw = &bytes.Buffer{}
			out = bw
		}
		var buf []byte
		var rec [12]byte
		for n := 0; count == 0 || n < count; n++ {
			m, err := r.Get(ctx, buf)
			if errors.Is(err, ErrClosed) {
				break
			}
			if err != nil {
				return fail(err)
			}
			buf = m
			// Report first, check after: a kill between Get and the report
			// is the one way a message goes missing unaccounted.
			copy(rec[:], m)
			out.Write(rec[:])
			if _, _, err := checkMsg(m); err != nil {
				return fail(err)
			}
		}
		if bw != nil {
			os.Stdout.Write(bw.Bytes())
		}
	case "bench-produce": // off id count mode(size in bytes)
		msg := make([]byte, mode)
		for range count {
			if err := r.Put(ctx, msg); err != nil {
				return fail(err)
			}
		}
	case "bench-consume": // off id count
		var buf []byte
		for range count {
			if buf, err = r.Get(ctx, buf); err != nil {
				return fail(err)
			}
		}
	default:
		return fail(errors.New("unknown role"))
	}
	if err := a.Close(); err != nil {
		return fail(err)
	}
	return 0
}

type child struct {
	*exec.Cmd
	mu     sync.Mutex
	out    []byte
	ready  chan struct{}
	once   sync.Once
	stderr bytes.Buffer
	stdin  *os.File // write end of the go pipe
}

func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, p...)
	c.mu.Unlock()
	c.once.Do(func() { close(c.ready) })
	return len(p), nil
}

// output returns what the child wrote after its ready byte.
func (c *child) output() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.out) == 0 {
		return nil
	}
	return append([]byte(nil), c.out[1:]...)
}

// start starts a child running role with arg, handing it the arena, and
// waits until it is ready. If hold, the child then waits for go() before
// it starts working. The child is killed and waited for at the end of the
// test if the test has not waited for it.
func start(t testing.TB, a *shm.Arena, role, arg string, hold bool) *child {
	t.Helper()
	fd, err := unix.FcntlInt(uintptr(a.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "arena")
	defer f.Close()
	c := &child{Cmd: exec.Command(os.Args[0]), ready: make(chan struct{})}
	c.Env = append(os.Environ(), roleEnv+"="+role, argEnv+"="+arg)
	c.ExtraFiles = []*os.File{f}
	c.Stdout, c.Stderr = c, &c.stderr
	if hold {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		c.Stdin, c.stdin = r, w
		defer r.Close()
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.stdin != nil {
			c.stdin.Close()
		}
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	})
	exited := make(chan struct{})
	go func() {
		// Not c.Wait: only notice an early exit.
		var info unix.Siginfo
		unix.Waitid(unix.P_PID, c.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		close(exited)
	}()
	select {
	case <-c.ready:
	case <-exited:
		// The child may have written its ready byte and died at once (a
		// kill point right after it): the byte is then still on its way
		// through the pipe, which the child's exit has closed, so it
		// arrives promptly if it was written at all.
		select {
		case <-c.ready:
		case <-time.After(10 * time.Second):
			c.Wait()
			t.Fatalf("child %s %s exited before it was ready: %s", role, arg, c.stderr.Bytes())
		}
	}
	return c
}

// goAhead lets a held child start working.
func (c *child) goAhead() {
	if c.stdin != nil {
		c.stdin.Close()
		c.stdin = nil
	}
}

// wait waits for the child and reports whether SIGKILL ended it; any other
// end than SIGKILL or a clean exit fails the test.
func (c *child) wait(t testing.TB) (killed bool) {
	t.Helper()
	err := c.Wait()
	if ws := c.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return true
	}
	if err != nil {
		t.Fatalf("child %s: %v\n%s", c.Env[len(c.Env)-2:], err, c.stderr.Bytes())
	}
	return false
}

// records parses a consumer's (id, seq) reports.
func records(b []byte) [][2]uint64 {
	var rs [][2]uint64
	for len(b) >= 12 {
		rs = append(rs, [2]uint64{uint64(binary.LittleEndian.Uint32(b)), binary.LittleEndian.Uint64(b[4:])})
		b = b[12:]
	}
	return rs
}

func newArena(t testing.TB, size int) *shm.Arena {
	t.Helper()
	a, err := shm.New(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return a
}

func newRing(t testing.TB, a *shm.Arena, capacity, inline int) *Ring {
	t.Helper()
	off, err := NewSized(a, capacity, inline)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(a, off)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func timeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

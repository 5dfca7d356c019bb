package mp_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// Targets for isolated children.

// hoard allocates and keeps memory until the runtime gives up.
func hoard() error {
	var kept [][]byte
	for i := 0; i < 1<<16; i++ {
		b := make([]byte, 16<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		kept = append(kept, b)
	}
	return nil
}

// spin burns CPU forever.
func spin() {
	x := 0
	for {
		x++
	}
}

// openMany opens files until it cannot and returns why.
func openMany() error {
	var fs []*os.File
	defer func() {
		for _, f := range fs {
			f.Close()
		}
	}()
	for i := 0; i < 1<<20; i++ {
		f, err := os.Open("/dev/null")
		if err != nil {
			return err
		}
		fs = append(fs, f)
	}
	return nil
}

// noNewPrivs records the child's NoNewPrivs flag.
func noNewPrivs(out string) error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "NoNewPrivs:") {
			return writeFile(out, strings.TrimSpace(strings.TrimPrefix(line, "NoNewPrivs:")))
		}
	}
	return writeFile(out, "?")
}

// hostileReport writes, as its report, a frame that claims a gigabyte.
func hostileReport() {
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], 1<<30-1)
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "socket:") {
			fd, _ := strconv.Atoi(e.Name())
			syscall.Write(fd, hdr[:])
			syscall.Write(fd, []byte("not what was promised"))
		}
	}
	os.Exit(0)
}

// longReport fails with an enormous message.
func longReport() error { return errors.New(strings.Repeat("x", 4<<20)) }

type lockHolder struct{ L *mp.Lock }

type isolatedRun struct{ Path string }

func (r isolatedRun) Run() error { return writeFile(r.Path, "ran") }

func init() {
	mp.Register(hoard, spin, openMany, noNewPrivs, hostileReport, longReport, isolatedRun{})
}

func isolated(fn any, args ...any) *mp.Process {
	p := mp.NewProcess(fn, args...)
	p.Isolated = true
	return p
}

func TestIsolatedChildDoesNotMapTheArena(t *testing.T) {
	if _, err := mp.NewLock(); err != nil { // the tree's arena exists
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := isolated(listFds, filepath.Join(dir, "fds"))
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "fds")); strings.Contains(got, "multiproc-arena") {
		t.Fatalf("an isolated child has the tree's arena:\n%s", got)
	}
	p = isolated(isolatedRun{Path: filepath.Join(dir, "run")})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil || readFile(t, filepath.Join(dir, "run")) != "ran" {
		t.Fatalf("Join = %v", err)
	}
}

func TestIsolatedRefusesPrimitives(t *testing.T) {
	l, err := mp.NewLock()
	if err != nil {
		t.Fatal(err)
	}
	v, err := mp.NewValue[int64](0)
	if err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]any{
		"lock":            {l},
		"value":           {v},
		"in a struct":     {lockHolder{L: l}},
		"in a slice":      {[]any{1, "a", v}},
		"in a map":        {map[string]any{"k": []*mp.Lock{l}}},
		"through pointer": {&lockHolder{L: l}},
	} {
		p := isolated(takesAny, args...)
		if err := p.Start(); !errors.Is(err, mp.ErrIsolated) {
			if err == nil {
				join(t, p)
			}
			t.Errorf("%s: Start = %v, want ErrIsolated", name, err)
		}
	}
	p := mp.NewProcess(openMany)
	p.Limits.OpenFiles = 100
	if err := p.Start(); !errors.Is(err, mp.ErrBadArguments) {
		t.Errorf("Limits without Isolated: Start = %v, want ErrBadArguments", err)
	}
}

func TestIsolatedMemoryLimit(t *testing.T) {
	p := isolated(hoard)
	p.Limits.Memory = 256 << 20
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := join(t, p)
	var le *mp.LimitError
	var pe *mp.ProcessError
	if !errors.Is(err, mp.ErrMemoryLimit) || !errors.As(err, &le) || le.Limit != "memory" || !errors.As(err, &pe) {
		t.Fatalf("Join = %v, want a memory *LimitError", err)
	}
}

func TestIsolatedCPULimit(t *testing.T) {
	p := isolated(spin)
	p.Limits.CPUTime = time.Second
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := join(t, p)
	var le *mp.LimitError
	if !errors.Is(err, mp.ErrCPULimit) || !errors.As(err, &le) || le.Value != 1 {
		t.Fatalf("Join = %v, want a CPU time *LimitError", err)
	}
}

func TestIsolatedOpenFilesLimit(t *testing.T) {
	p := isolated(openMany)
	p.Limits.OpenFiles = 40
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := join(t, p)
	if !errors.Is(err, mp.ErrOpenFilesLimit) || !strings.Contains(err.Error(), "open files limit (40)") {
		t.Fatalf("Join = %v, want an open files *LimitError", err)
	}
}

func TestIsolatedProcessLimit(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("RLIMIT_NPROC does not apply to root")
	}
	p := isolated(runHelper, t.TempDir(), false)
	p.Limits.Processes = 1
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); !errors.Is(err, mp.ErrProcessLimit) {
		t.Fatalf("Join = %v, want a processes *LimitError", err)
	}
}

func TestIsolatedChildCannotGainPrivileges(t *testing.T) {
	out := filepath.Join(t.TempDir(), "nnp")
	p := isolated(noNewPrivs, out)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, out); got != "1" {
		t.Fatalf("NoNewPrivs = %q in an isolated child", got)
	}
	// An ordinary child is not affected.
	p = mp.NewProcess(noNewPrivs, out)
	p.Start()
	join(t, p)
	if got := readFile(t, out); got != "0" {
		t.Fatalf("NoNewPrivs = %q in an ordinary child", got)
	}
}

func TestIsolatedReportIsUntrusted(t *testing.T) {
	p := isolated(hostileReport)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	var pe *mp.ProcessError
	if err := join(t, p); !errors.As(err, &pe) || !strings.Contains(pe.Message, "limit") {
		t.Fatalf("Join = %v, want the oversized report refused", err)
	}
	p = isolated(longReport)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := join(t, p); !errors.As(err, &pe) || len(pe.Message) > 128<<10 {
		t.Fatalf("Join = %.200v (%d bytes), want the report refused or trimmed", err, len(pe.Message))
	}
}

// cpuTime returns the CPU time pid has used, from /proc.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// A child that this process kills is not taken for one the kernel killed
// at its CPU limit, however much CPU time it used.
func TestIsolatedKillIsNotACPULimit(t *testing.T) {
	p := isolated(spin)
	p.Limits.CPUTime = 2 * time.Second
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	for cpuTime(t, p.Pid()) < 1200*time.Millisecond && p.IsAlive() {
		time.Sleep(10 * time.Millisecond)
	}
	p.Kill()
	if err := join(t, p); errors.Is(err, mp.ErrCPULimit) || !strings.Contains(err.Error(), "SIGKILL") {
		t.Fatalf("Join after Kill = %v, want a plain SIGKILL", err)
	}
}

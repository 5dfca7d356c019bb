package mp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp"
)

// shmOutlive checks what its parent wrote, says it is attached, and once
// the parent has closed its SharedMemory writes a reply into the memory it
// still maps, and checks that the name no longer attaches.
func shmOutlive(m *mp.SharedMemory, attached, closed *mp.Event) error {
	defer m.Close()
	if got := string(m.Bytes()[:5]); got != "hello" {
		return fmt.Errorf("the child read %q", got)
	}
	attached.Set()
	if err := closed.Wait(context.Background()); err != nil {
		return err
	}
	copy(m.Bytes(), "still here")
	if _, err := mp.AttachSharedMemory(m.Name()); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("attach after the creator's Close: %v", err)
	}
	return nil
}

// shmByName attaches to name, writes into it, and sends the SharedMemory
// back through q.
func shmByName(name string, q *mp.Queue[*mp.SharedMemory]) error {
	m, err := mp.AttachSharedMemory(name)
	if err != nil {
		return err
	}
	defer m.Close()
	copy(m.Bytes()[8:], "by name")
	return q.Put(context.Background(), m)
}

func init() { mp.Register(shmOutlive, shmByName) }

// shmMappings counts this process's mappings of SharedMemory.
func shmMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "/memfd:multiproc-shm ")
}

func TestSharedMemoryBasics(t *testing.T) {
	before := shmMappings(t)
	m, err := mp.NewSharedMemory(10000)
	if err != nil {
		t.Fatal(err)
	}
	if m.Size() != 10000 || len(m.Bytes()) != 10000 || !bytes.Equal(m.Bytes(), make([]byte, 10000)) {
		t.Fatalf("a new SharedMemory: Size %d, %d bytes, not all zero", m.Size(), len(m.Bytes()))
	}
	prefix := "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/"
	fd, ok := strings.CutPrefix(m.Name(), prefix)
	if !ok {
		t.Fatalf("Name = %q, want %s<fd>", m.Name(), prefix)
	}
	if target, _ := os.Readlink("/proc/self/fd/" + fd); !strings.HasPrefix(target, "/memfd:multiproc-shm") {
		t.Fatalf("descriptor %s is %q", fd, target)
	}

	a, err := mp.AttachSharedMemory(m.Name())
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Bytes(), "hello")
	if a.Size() != 10000 || a.Name() != m.Name() || string(a.Bytes()[:5]) != "hello" {
		t.Fatalf("attached: Size %d, Name %q, %q", a.Size(), a.Name(), a.Bytes()[:5])
	}
	a.Bytes()[9999] = 1
	if m.Bytes()[9999] != 1 {
		t.Fatal("a write through the attached mapping is not seen by the creator's")
	}
	if got := shmMappings(t) - before; got != 2 {
		t.Fatalf("%d mappings, want 2", got)
	}

	// The size is sealed: no process can shrink the memory under the
	// others' mappings.
	f, err := os.OpenFile(m.Name(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100); !errors.Is(err, unix.EPERM) {
		t.Errorf("Truncate of a SharedMemory = %v, want EPERM", err)
	}
	f.Close()

	for range 2 {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if m.Bytes() != nil || m.Size() != 10000 || !strings.HasPrefix(m.Name(), prefix) {
		t.Fatalf("after Close: %d bytes, Size %d, Name %q", len(m.Bytes()), m.Size(), m.Name())
	}
	if target, _ := os.Readlink("/proc/self/fd/" + fd); strings.HasPrefix(target, "/memfd:multiproc-shm") {
		t.Fatal("Close left the descriptor open")
	}
	if _, err := mp.AttachSharedMemory(m.Name()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("attach after the creator's Close: %v, want ErrNotExist", err)
	}
	if _, err := m.MarshalBinary(); err == nil {
		t.Fatal("MarshalBinary of a closed SharedMemory succeeded")
	}
	// Attached before the Close: the memory is still there.
	a.Bytes()[0] = 'j'
	if string(a.Bytes()[:5]) != "jello" {
		t.Fatalf("the attached mapping holds %q after the creator's Close", a.Bytes()[:5])
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := shmMappings(t) - before; got != 0 {
		t.Fatalf("%d mappings left after Close", got)
	}
}

func TestSharedMemoryBadArguments(t *testing.T) {
	for _, n := range []int{0, -1} {
		if _, err := mp.NewSharedMemory(n); !errors.Is(err, mp.ErrBadArguments) {
			t.Errorf("NewSharedMemory(%d) = %v, want ErrBadArguments", n, err)
		}
	}
	if _, err := mp.NewSharedMemory(math.MaxInt); err == nil {
		t.Error("NewSharedMemory(math.MaxInt) succeeded")
	}
	for _, name := range []string{"", "psm_21467_46075", "/dev/shm/x", "/proc/self/fd/3", "/proc/1/fd/", "/proc/1/fd/x", "/proc/1/fd/3/..", "/etc/passwd"} {
		if _, err := mp.AttachSharedMemory(name); !errors.Is(err, mp.ErrBadArguments) {
			t.Errorf("AttachSharedMemory(%q) = %v, want ErrBadArguments", name, err)
		}
	}
	pid := strconv.Itoa(os.Getpid())
	mp.Must(mp.NewLock()) // so that the tree's arena exists
	arena := ""
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, e := range fds {
		if target, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(target, "/memfd:multiproc-arena") {
			arena = e.Name()
		}
	}
	if arena == "" {
		t.Fatal("no arena among this process's descriptors")
	}
	file, err := os.Create(t.TempDir() + "/file")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	file.Truncate(4096)
	for _, name := range []string{
		"/proc/" + pid + "/fd/999999",                          // no such descriptor
		"/proc/" + pid + "/fd/" + strconv.Itoa(int(file.Fd())), // a regular file
		"/proc/" + pid + "/fd/" + arena,                        // a memfd, not a SharedMemory
	} {
		if _, err := mp.AttachSharedMemory(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("AttachSharedMemory(%q) = %v, want ErrNotExist", name, err)
		}
	}
}

// TestSharedMemoryInTree: a child that received a SharedMemory keeps it
// after the creator closes it; one that attaches by name can send it back.
func TestSharedMemoryInTree(t *testing.T) {
	m := mp.Must(mp.NewSharedMemory(64))
	defer m.Close()
	copy(m.Bytes(), "hello")
	attached, closed := mp.Must(mp.NewEvent()), mp.Must(mp.NewEvent())
	p := mp.NewProcess(shmOutlive, m, attached, closed)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := attached.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	mine := mp.Must(mp.AttachSharedMemory(m.Name()))
	defer mine.Close()
	m.Close()
	closed.Set()
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if got := string(mine.Bytes()[:10]); got != "still here" {
		t.Fatalf("the child's write after the creator's Close: %q", got)
	}

	m2 := mp.Must(mp.NewSharedMemory(64))
	defer m2.Close()
	q := mp.Must(mp.NewQueue[*mp.SharedMemory](1))
	p = mp.NewProcess(shmByName, m2.Name(), q)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	back, err := q.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if err := join(t, p); err != nil {
		t.Fatal(err)
	}
	if back.Name() != m2.Name() || string(back.Bytes()[8:15]) != "by name" || string(m2.Bytes()[8:15]) != "by name" {
		t.Fatalf("sent back: %q, %q", back.Name(), back.Bytes()[8:15])
	}
	if err := back.UnmarshalBinary([]byte(m2.Name())); !errors.Is(err, mp.ErrBadArguments) {
		t.Fatalf("UnmarshalBinary into an open SharedMemory: %v", err)
	}
}

// TestSharedMemoryOutsideTree: a process that is not in the tree attaches
// by name, through this package (the test binary, run again with the name
// in its environment) and without it (sh reading the path).
func TestSharedMemoryOutsideTree(t *testing.T) {
	if name := os.Getenv("MP_TEST_SHM_NAME"); name != "" {
		attachFromOutside(t, name)
		return
	}
	m := mp.Must(mp.NewSharedMemory(4096))
	defer m.Close()
	copy(m.Bytes(), "from the creator")

	out, err := exec.Command("sh", "-c", `head -c 16 "$0"`, m.Name()).Output()
	if err != nil || string(out) != "from the creator" {
		t.Fatalf("sh read %q: %v", out, err)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestSharedMemoryOutsideTree$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MP_TEST_SHM_NAME="+m.Name())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the outside process: %v\n%s", err, out)
	}
	if got := string(m.Bytes()[100:112]); got != "from outside" {
		t.Fatalf("the outside process wrote %q", got)
	}
}

func attachFromOutside(t *testing.T, name string) {
	m, err := mp.AttachSharedMemory(name)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Size() != 4096 || string(m.Bytes()[:16]) != "from the creator" {
		t.Fatalf("attached %d bytes: %q", m.Size(), m.Bytes()[:16])
	}
	copy(m.Bytes()[100:], "from outside")
}

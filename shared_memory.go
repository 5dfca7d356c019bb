package mp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/fdutil"
)

// SharedMemory is a block of bytes that processes map by name: Python's
// multiprocessing.shared_memory.SharedMemory. Unlike Value and Array it is
// not in the tree's arena, so any process of the same user can attach to
// it, also one outside the tree, and its size is not bounded by the arena.
//
// The creator owns the memory: its name is /proc/<creator's pid>/fd/<fd>,
// a path to the creator's descriptor of an anonymous file (a memfd). Other
// processes attach to it by opening that path, which any program can do
// (`cat /proc/1234/fd/7` reads it). Nothing is ever created in /dev/shm or
// elsewhere in the file system, so nothing can leak there and there is
// nothing to unlink: the memory is freed when the creator has closed it (or
// exited) and the last process that attached has closed it (or exited).
// That is what Python's resource tracker tries to approximate, and gets
// wrong when it unlinks memory that other processes still use
// (cpython#82300).
//
// Once the creator has closed it, the name no longer attaches: processes
// already attached keep their mapping, and new attaches fail with an error
// wrapping fs.ErrNotExist. The creator's descriptor number may then be
// reused, by a later SharedMemory of the same process too, so a stale name
// may name another SharedMemory, as a recycled pid names another process;
// it never names an unrelated file, since Attach accepts only a memfd with
// the name and the seals that NewSharedMemory gives its own. The size is
// sealed at creation, so that no process can shrink the memory under
// another's mapping (which would make its accesses fault).
//
// The bytes are plain memory shared with other processes, with no
// synchronisation: guard them with a Lock, or use sync/atomic on aligned
// words in them. The methods may be called from any goroutine. A
// SharedMemory may be passed to child processes as an argument, inside a
// struct or through a queue: it travels as its name, and the receiver
// attaches to it; the receiver should Close it when done (its mapping
// otherwise lasts until it exits).
//
// The zero SharedMemory is not usable: make one with NewSharedMemory or
// AttachSharedMemory. Its methods panic with an error wrapping
// ErrInvalidHandle, Close included.
type SharedMemory struct {
	name  string
	size  int
	owner bool // made by NewSharedMemory: Close closes fd

	mu  sync.Mutex
	mem []byte // nil after Close
	fd  int
}

const shmNamePrefix = "multiproc-shm" // the memfd's name, which Attach checks

// NewSharedMemory creates size bytes of zeroed shared memory, owned by the
// calling process until it calls Close or exits. It fails with an error
// wrapping ErrBadArguments if size is not positive, and with the system's
// error if the memory cannot be created (too big for the memory limits, or
// for the address space).
func NewSharedMemory(size int) (*SharedMemory, error) {
	if size <= 0 {
		return nil, fmt.Errorf("%w: NewSharedMemory of %d bytes: the size must be positive", ErrBadArguments, size)
	}
	fd, err := unix.MemfdCreate(shmNamePrefix, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) { // before Linux 6.3, which brought MFD_NOEXEC_SEAL
		fd, err = unix.MemfdCreate(shmNamePrefix, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err == nil {
		fd, err = fdutil.Above2(fd) // never where a closed stdio was
	}
	if err != nil {
		return nil, fmt.Errorf("mp: NewSharedMemory: memfd_create: %w", err)
	}
	mem, err := func() ([]byte, error) {
		if err := unix.Ftruncate(fd, int64(size)); err != nil {
			return nil, fmt.Errorf("size it to %d bytes: %w", size, err)
		}
		// Sealed, the size can change no more: a process that shrank the
		// memory would make every other process's access past the new end
		// a SIGBUS.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
			return nil, fmt.Errorf("seal its size: %w", err)
		}
		return unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	}()
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mp: NewSharedMemory of %d bytes: %w", size, err)
	}
	return &SharedMemory{
		name:  "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(fd),
		size:  size,
		owner: true,
		mem:   mem,
		fd:    fd,
	}, nil
}

// AttachSharedMemory maps the SharedMemory called name, made by
// NewSharedMemory in this process or another. It fails with an error
// wrapping ErrBadArguments if name is not of the form of Name's, and with
// one wrapping fs.ErrNotExist if there is no such SharedMemory: its
// creator closed it or exited, or the name is of something else. Attaching
// by name takes the right to read the creator's /proc entries: a process of
// the same user, in the same pid namespace.
//
// The mapping lasts until Close, even after the creator has closed the
// memory; the attached SharedMemory holds no file descriptor.
func AttachSharedMemory(name string) (*SharedMemory, error) {
	if !validShmName(name) {
		return nil, fmt.Errorf("%w: %q is not the name of a SharedMemory (/proc/<pid>/fd/<fd>)", ErrBadArguments, name)
	}
	fd, err := unix.Open(name, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("mp: no SharedMemory %s (its creator closed it, or exited): %w", name, fs.ErrNotExist)
		case errors.Is(err, unix.ENXIO): // a socket
			return nil, fmt.Errorf("mp: no SharedMemory %s (it names something else): %w", name, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("mp: attach SharedMemory %s: %w", name, err)
	}
	// The mapping keeps the memory alive: the descriptor is not needed past
	// this function.
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("mp: attach SharedMemory %s: %w", name, err)
	}
	if !isSharedMemory(fd, &st) {
		return nil, fmt.Errorf("mp: no SharedMemory %s (it names something else): %w", name, fs.ErrNotExist)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mp: attach SharedMemory %s of %d bytes: %w", name, st.Size, err)
	}
	return &SharedMemory{name: name, size: int(st.Size), mem: mem, fd: -1}, nil
}

func validShmName(name string) bool {
	rest, ok := strings.CutPrefix(name, "/proc/")
	if !ok {
		return false
	}
	pid, fd, ok := strings.Cut(rest, "/fd/")
	return ok && isDecimal(pid) && isDecimal(fd)
}

func isDecimal(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isSharedMemory reports whether fd is a memfd that NewSharedMemory made:
// one of its name, with its size sealed. That keeps a stale name from
// mapping an unrelated file of the creator's, or one that could shrink
// under the mapping.
func isSharedMemory(fd int, st *unix.Stat_t) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size <= 0 {
		return false
	}
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !strings.HasPrefix(target, "/memfd:"+shmNamePrefix+" ") {
		return false
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	const want = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	return err == nil && seals&want == want
}

// Name returns the name other processes attach by: the path of the
// creator's descriptor, /proc/<pid>/fd/<fd>. It stays the same after Close.
func (m *SharedMemory) Name() string {
	m.check()
	return m.name
}

// Size returns the size of the memory in bytes, as given to
// NewSharedMemory. It stays the same after Close.
func (m *SharedMemory) Size() int {
	m.check()
	return m.size
}

// Bytes returns the memory, Size bytes that every attached process sees
// and changes, or nil after Close. The slice must not be used after Close:
// the memory is no longer mapped, and an access is a fatal fault.
func (m *SharedMemory) Bytes() []byte {
	m.check()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mem
}

// Close unmaps the memory from this process; the creator's Close also ends
// the name, so that no process can attach any more. Processes attached
// already keep the memory, which is freed when the last of them closes it.
// Close is idempotent; it returns an error only if the system refused to
// unmap the memory or close its descriptor.
func (m *SharedMemory) Close() error {
	m.check()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mem == nil {
		return nil
	}
	err := unix.Munmap(m.mem)
	m.mem = nil
	if m.owner {
		if cerr := unix.Close(m.fd); err == nil {
			err = cerr
		}
		m.fd = -1
	}
	if err != nil {
		return fmt.Errorf("mp: close SharedMemory %s: %w", m.name, err)
	}
	return nil
}

func (m *SharedMemory) check() {
	if m.name == "" {
		panic(fmt.Errorf("%w: a SharedMemory must be made with NewSharedMemory or AttachSharedMemory", ErrInvalidHandle))
	}
}

// MarshalBinary encodes the SharedMemory as its name, so that it can travel
// to another process, which attaches to it when it decodes it. It fails
// for a SharedMemory closed in this process: if this is the creator, the
// receiver could not attach, and if not, the name may be stale.
func (m *SharedMemory) MarshalBinary() ([]byte, error) {
	if m.name == "" {
		return nil, fmt.Errorf("%w: zero value", ErrInvalidHandle)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mem == nil {
		return nil, fmt.Errorf("mp: SharedMemory %s is closed", m.name)
	}
	return []byte(m.name), nil
}

// UnmarshalBinary attaches m to the SharedMemory whose name data is, as
// AttachSharedMemory does, with its errors. m must be a zero SharedMemory
// (as the decoder of a process's arguments or a queue's items makes), or a
// closed one: an open one would lose its mapping.
func (m *SharedMemory) UnmarshalBinary(data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mem != nil {
		return fmt.Errorf("%w: UnmarshalBinary into the open SharedMemory %s", ErrBadArguments, m.name)
	}
	a, err := AttachSharedMemory(string(data))
	if err != nil {
		return err
	}
	m.name, m.size, m.owner, m.mem, m.fd = a.name, a.size, a.owner, a.mem, a.fd
	return nil
}

package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp/internal/errs"
	"github.com/multiproc/mp/internal/fdutil"
)

// Offset locates a block inside an arena. It is the same number in every
// process of the tree, so it is what handles encode. The zero Offset is never
// a valid block and can serve as a nil handle.
type Offset uint64

// ErrNoSpace is returned, wrapped with the requested and free sizes, when an
// allocation cannot be satisfied.
var ErrNoSpace = errs.NoSpace

// ErrBadOffset is returned, wrapped with the offset, by operations on an
// offset that is not the start of a live allocation: a double free, an
// offset into the middle of a block, or garbage.
var ErrBadOffset = errors.New("shm: offset is not a live allocation")

// ErrCorrupt is returned, wrapped with what was found, when shared memory
// that another process may have written holds what no correct process
// writes: the allocator's own metadata, or (for packages built on the
// arena) a structure's offsets and lengths.
var ErrCorrupt = errs.Corrupt

const (
	// MinSize is the smallest arena New creates; smaller sizes are rounded up.
	MinSize = 1 << 20
	// MaxSize is the largest arena New creates.
	MaxSize = 1 << 40

	minOrder = 6 // 64-byte blocks: a cache line, and the alignment promised
	minBlock = 1 << minOrder

	magic   = 0x31414e4552504d6d // "mMPRENA1", little-endian
	version = 2

	// Header fields, as byte offsets of 8-byte words in the memfd.
	hdrMagic      = 0
	hdrVersion    = 8
	hdrHeapOff    = 16
	hdrHeapSize   = 24
	hdrLock       = 32 // owner pid (low 32 bits) | acquisition sequence (high 32)
	hdrJournalLen = 40
	hdrInUse      = 48
	hdrAllocs     = 56
	hdrRecoveries = 64
	hdrJournalTag = 72  // tag of the operation in progress's journal entries, 0 if none
	hdrRoot       = 120 // the library's root block (see RootWord)
	hdrHeads      = 128 // [64]uint64: free-list head (file offset, 0 = empty) by order
	hdrJournal    = 1024
	journalCap    = 512 // entries of (offset, old value); see doc.go for the bound
	hdrTags       = hdrJournal + journalCap*16

	heapAlign = 1 << 16 // keeps big blocks page-aligned in the file whatever the page size

	// Tag byte of the granule where a block starts.
	tagFree   = 0x40
	tagAlloc  = 0x80
	tagState  = 0xc0
	orderMask = 0x3f

	// punchMin is the smallest block Free clears by punching a hole in the
	// memfd rather than by writing zeros. Either way costs a page fault per
	// page: punching when the block's next owner writes it, writing zeros
	// when the block was not used (BenchmarkScrub). Small blocks are likely
	// used whole and soon reused, so zeros win; for big blocks the hole wins,
	// as it returns the memory and its cost is bounded by what was used
	// rather than by the block size.
	punchMin = 1 << 20
)

// heapOffset returns where the heap starts for a heap of size bytes.
func heapOffset(size uint64) uint64 {
	return (hdrTags + size/minBlock + heapAlign - 1) &^ (heapAlign - 1)
}

// Arena is a shared-memory arena mapped into this process. Its methods may be
// called concurrently by goroutines of this process and by other processes
// mapping the same arena.
type Arena struct {
	// mu serialises this process's goroutines before they compete for the
	// shared lock word, so a process contributes at most one waiter there and
	// the others park cheaply. It also guards held and Close.
	mu   sync.Mutex
	held uint64 // lock word value while this process holds the lock
	jn   uint64 // journal entries the present operation has written

	fd       int
	mem      []byte
	heapOff  uint64
	heapSize uint64
	maxOrder uint
	pid      uint32
	mapsKey  []byte // how /proc/<pid>/maps shows a mapping of the memfd
}

// Stats is a snapshot of an arena's allocator.
type Stats struct {
	Size       int // heap capacity in bytes
	InUse      int // bytes in allocated blocks (block sizes, not requested sizes)
	Free       int // bytes in free blocks: Size - InUse
	Allocs     int // number of live allocations
	Recoveries int // times a process took the lock over from one that died holding it
	Largest    int // size of the largest free block
}

// New creates an arena whose heap can hold size bytes, rounded up to a power
// of two and to at least MinSize. The memfd is sparse: memory is only
// committed as blocks are used, so a large size costs address space, not
// memory. The memfd is close-on-exec; pass Fd to children explicitly.
func New(size int) (*Arena, error) {
	if size <= 0 || size > MaxSize {
		return nil, fmt.Errorf("shm: arena size %d out of range (1 to %d)", size, MaxSize)
	}
	heapSize := uint64(max(size, MinSize))
	heapSize = 1 << bits.Len64(heapSize-1)
	heapOff := heapOffset(heapSize)

	fd, err := unix.MemfdCreate("multiproc-arena", unix.MFD_CLOEXEC)
	if err == nil {
		fd, err = fdutil.Above2(fd) // never where a closed stdio was
	}
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(heapOff+heapSize)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: size arena to %d bytes: %w", heapOff+heapSize, err)
	}
	a, err := mapArena(fd, heapOff, heapSize)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Nobody else can see the memfd yet, so no journal is needed; the heap
	// starts as one free block of the full size.
	*a.word(hdrVersion) = version
	*a.word(hdrHeapOff) = heapOff
	*a.word(hdrHeapSize) = heapSize
	*a.word(hdrHeads + 8*uint64(a.maxOrder)) = heapOff
	a.mem[hdrTags] = tagFree | byte(a.maxOrder)
	*a.word(hdrMagic) = magic
	return a, nil
}

// Attach maps an arena created by New in an ancestor process, whose memfd
// was inherited as fd. On success the Arena owns fd and Close closes it; on
// error fd is left open.
func Attach(fd int) (*Arena, error) {
	if fd < 0 {
		return nil, fmt.Errorf("shm: attach: invalid file descriptor %d", fd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("shm: attach fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("shm: attach fd %d: not an arena (not a regular file)", fd)
	}
	var hdr [32]byte
	if n, err := unix.Pread(fd, hdr[:], 0); err != nil {
		return nil, fmt.Errorf("shm: attach fd %d: read header: %w", fd, err)
	} else if n < len(hdr) {
		return nil, fmt.Errorf("shm: attach fd %d: not an arena (%d bytes)", fd, st.Size)
	}
	word := func(off int) uint64 { return binary.NativeEndian.Uint64(hdr[off:]) }
	if word(hdrMagic) != magic {
		return nil, fmt.Errorf("shm: attach fd %d: not an arena (bad magic)", fd)
	}
	if v := word(hdrVersion); v != version {
		return nil, fmt.Errorf("shm: attach fd %d: arena version %d, want %d", fd, v, version)
	}
	heapOff, heapSize := word(hdrHeapOff), word(hdrHeapSize)
	if heapSize < MinSize || heapSize > MaxSize || heapSize&(heapSize-1) != 0 ||
		heapOff != heapOffset(heapSize) || uint64(st.Size) != heapOff+heapSize {
		return nil, fmt.Errorf("shm: attach fd %d: corrupt arena header (heap %d bytes at %d, file %d bytes)",
			fd, heapSize, heapOff, st.Size)
	}
	return mapArena(fd, heapOff, heapSize)
}

func mapArena(fd int, heapOff, heapSize uint64) (*Arena, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("shm: stat arena: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, int(heapOff+heapSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm: map arena of %d bytes: %w", heapOff+heapSize, err)
	}
	return &Arena{
		mapsKey:  mapsKey(unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino),
		fd:       fd,
		mem:      mem,
		heapOff:  heapOff,
		heapSize: heapSize,
		maxOrder: uint(bits.TrailingZeros64(heapSize)),
		pid:      uint32(os.Getpid()),
	}, nil
}

// RootWord returns the offset of a header word that the arena's users may
// use, through AllocTo, to record the block from which the rest of their
// state is found. It is zero in a new arena.
func (a *Arena) RootWord() Offset { return hdrRoot }

// Root returns the block recorded in the root word, 0 if none.
func (a *Arena) Root() Offset { return Offset(a.get(hdrRoot)) }

// Fd returns the memfd of the arena, to be passed to child processes, or -1
// after Close.
func (a *Arena) Fd() int { return a.fd }

// Size returns the capacity of the heap in bytes, a power of two. The memfd
// is slightly larger: the allocator's metadata precedes the heap.
func (a *Arena) Size() int { return int(a.heapSize) }

// Close unmaps the arena and closes its memfd. It is idempotent. Using the
// arena, or slices and pointers obtained from it, after Close is a bug; the
// shared memory itself lives on while other processes map it.
func (a *Arena) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mem == nil {
		return nil
	}
	err := unix.Munmap(a.mem)
	if cerr := unix.Close(a.fd); err == nil {
		err = cerr
	}
	a.mem, a.fd = nil, -1
	if err != nil {
		return fmt.Errorf("shm: close arena: %w", err)
	}
	return nil
}

// Bytes returns the n bytes at off as a slice into the shared mapping. Like
// slicing, it panics if the range is outside the heap.
func (a *Arena) Bytes(off Offset, n int) []byte {
	if uint64(off) < a.heapOff {
		panic(fmt.Sprintf("shm: offset %#x is outside the heap", uint64(off)))
	}
	return a.mem[off : uint64(off)+uint64(n) : uint64(off)+uint64(n)]
}

// Contains reports whether the n bytes at off lie inside the heap, which
// is what Bytes requires. It is for validating offsets and lengths read
// from shared memory before using them.
func (a *Arena) Contains(off Offset, n int) bool {
	return uint64(off) >= a.heapOff && n >= 0 && uint64(n) <= a.heapSize &&
		uint64(off)-a.heapOff <= a.heapSize-uint64(n)
}

// Load64 returns the 8-byte word at off, read atomically, and whether off
// is an 8-byte aligned offset whose word lies in the heap: a cheap checked
// read of an offset that came from shared memory.
func (a *Arena) Load64(off Offset) (uint64, bool) {
	b := uint64(off)
	if b < a.heapOff || b-a.heapOff > a.heapSize-8 || b%8 != 0 {
		return 0, false
	}
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&a.mem[b]))), true
}

// OwnedSize returns the usable size of the live allocation at off, as
// BlockSize does, but without taking the allocator lock: the answer is only
// stable for a block that the caller owns (that no other process can free
// meanwhile). It is for validating an offset read from shared memory on a
// fast path; ok is false if off is not the start of a live allocation.
func (a *Arena) OwnedSize(off Offset) (size int, ok bool) {
	b := uint64(off)
	if b < a.heapOff || b-a.heapOff >= a.heapSize || b%minBlock != 0 {
		return 0, false
	}
	// The tag is read with an atomic load of the aligned word around it,
	// since the allocator may be rewriting a neighbouring tag.
	i := a.tagIndex(b)
	t := byte(atomic.LoadUint32((*uint32)(unsafe.Pointer(&a.mem[i&^3]))) >> (8 * (i & 3)))
	order := uint(t & orderMask)
	if t&tagState != tagAlloc || order < minOrder || order > a.maxOrder || (b-a.heapOff)&(1<<order-1) != 0 {
		return 0, false
	}
	return 1 << order, true
}

// Uint32 returns a pointer to the 4-byte word at off, for use with
// sync/atomic or as a futex word. off must be a multiple of 4.
func (a *Arena) Uint32(off Offset) *uint32 {
	if off%4 != 0 {
		panic(fmt.Sprintf("shm: Uint32 at unaligned offset %#x", uint64(off)))
	}
	return (*uint32)(unsafe.Pointer(&a.Bytes(off, 4)[0]))
}

// Uint64 returns a pointer to the 8-byte word at off, for use with
// sync/atomic. off must be a multiple of 8.
func (a *Arena) Uint64(off Offset) *uint64 {
	if off%8 != 0 {
		panic(fmt.Sprintf("shm: Uint64 at unaligned offset %#x", uint64(off)))
	}
	return (*uint64)(unsafe.Pointer(&a.Bytes(off, 8)[0]))
}

// word returns the metadata word at file offset off, which may lie in the
// header or, for free-list links, in the heap.
func (a *Arena) word(off uint64) *uint64 {
	return (*uint64)(unsafe.Pointer(&a.mem[off : off+8][0]))
}

func (a *Arena) get(off uint64) uint64 { return atomic.LoadUint64(a.word(off)) }

// put stores a metadata word without journaling: only for words outside the
// allocator state proper (lock, journal, counters) or before the arena is
// shared.
func (a *Arena) put(off, v uint64) {
	if crashHook != nil {
		crashHook()
	}
	atomic.StoreUint64(a.word(off), v)
}

// crashHook, when set by a test, runs before every store on the journaled
// path and during recovery, so a test can kill the process at each one.
var crashHook func()

// Package futex wraps the Linux futex system calls on 32-bit words in
// memory shared between processes (no FUTEX_PRIVATE_FLAG: the words live in
// a MAP_SHARED mapping, possibly at different addresses in each process).
//
// A thread blocked here is an OS thread blocked in the kernel: callers that
// may have many waiters use package wait, which multiplexes them.
package futex

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	opWait    = 0   // FUTEX_WAIT
	opWake    = 1   // FUTEX_WAKE
	opPrivate = 128 // FUTEX_PRIVATE_FLAG

	// Size flag for futex_waitv entries (FUTEX2_SIZE_U32).
	size32 = 2
	// futex_waitv's limit on the number of words in one call.
	MaxWaitv = 128
)

// Wait blocks while *addr == val, until a Wake on addr, a signal, or the
// timeout (if positive). It returns nil when woken or when *addr != val
// already, and unix.ETIMEDOUT on timeout; EINTR and EAGAIN are folded into
// nil, as a spurious wake-up that the caller's loop absorbs.
func Wait(addr *uint32, val uint32, timeout time.Duration) error {
	var ts *unix.Timespec
	if timeout > 0 {
		t := unix.NsecToTimespec(int64(timeout))
		ts = &t
	}
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), opWait, uintptr(val), uintptr(unsafe.Pointer(ts)), 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EINTR:
		return nil
	default:
		return e
	}
}

// WaitPrivate is Wait without a timeout on a word private to this process.
func WaitPrivate(addr *uint32, val uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), opWait|opPrivate, uintptr(val), 0, 0, 0)
}

// Wake wakes up to n threads waiting on addr, in any process, and returns
// how many it woke.
func Wake(addr *uint32, n int) int {
	r, _, _ := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), opWake, uintptr(n), 0, 0, 0)
	return int(r)
}

// WakePrivate wakes up to n threads of this process waiting on a word
// registered as private (see Waiter.Set). Private and shared waits on the
// same word do not see each other's wakes: the kernel keys them apart.
func WakePrivate(addr *uint32, n int) int {
	r, _, _ := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), opWake|opPrivate, uintptr(n), 0, 0, 0)
	return int(r)
}

// Waiter is one word of a WaitV call, laid out as the kernel's struct
// futex_waitv.
type Waiter struct {
	Val      uint64
	Addr     uint64
	Flags    uint32
	reserved uint32
}

// Set makes w wait on addr while it holds val. private is for words that
// live in this process only (the waker is in this process).
func (w *Waiter) Set(addr *uint32, val uint32, private bool) {
	w.Val, w.Addr, w.Flags = uint64(val), uint64(uintptr(unsafe.Pointer(addr))), size32
	if private {
		w.Flags |= opPrivate
	}
}

// WaitV blocks until one of the words is woken, or until one no longer
// holds its value (Linux 5.16's futex_waitv). It returns the index of the
// word that was woken, or -1 if it returned because a word differed already
// or a signal interrupted it: the caller then checks every word. Other
// errors (ENOSYS on older kernels) are returned.
func WaitV(ws []Waiter) (int, error) {
	if len(ws) == 0 || len(ws) > MaxWaitv {
		return -1, unix.EINVAL
	}
	r, _, e := unix.Syscall6(unix.SYS_FUTEX_WAITV, uintptr(unsafe.Pointer(&ws[0])), uintptr(len(ws)), 0, 0, 0, 0)
	switch e {
	case 0:
		return int(r), nil
	case unix.EAGAIN, unix.EINTR:
		return -1, nil
	default:
		return -1, e
	}
}

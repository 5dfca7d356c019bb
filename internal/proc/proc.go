// Package proc tells whether a process of the tree is still alive, in a way
// that survives pid reuse: a process is identified by its pid and its start
// time, which a later process with the same pid cannot share.
package proc

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// ID identifies a process for as long as the machine runs.
type ID struct {
	Pid   int
	Start uint64 // start time in clock ticks after boot (/proc/<pid>/stat field 22)
}

var self struct {
	once sync.Once
	id   ID
}

// Self returns this process's ID.
func Self() ID {
	self.once.Do(func() {
		pid := os.Getpid()
		st, _, _ := stat(pid)
		self.id = ID{Pid: pid, Start: st}
	})
	return self.id
}

// Alive reports whether the process id names can still run. A zombie (exited,
// not yet reaped) is dead: it will never run again, and its parent may be
// the very process asking. A process with the same pid but another start time
// is a different process, so id's is dead. A start time of 0 is not checked.
func Alive(id ID) bool {
	start, ok := running(id.Pid)
	return ok && (id.Start == 0 || start == 0 || start == id.Start)
}

// AliveStart32 is Alive for an owner recorded as its pid and the low 32
// bits of its start time, as primitives store it beside a 32-bit futex word.
func AliveStart32(pid int, start32 uint32) bool { return AliveStartBits(pid, uint64(start32), 32) }

// AliveStartBits is Alive for an owner recorded as its pid and the low bits
// bits of its start time; low == 0 is not checked.
func AliveStartBits(pid int, low uint64, bits uint) bool {
	start, ok := running(pid)
	return ok && (low == 0 || start == 0 || start&(1<<bits-1) == low)
}

// running reports whether pid exists and is not a zombie, with its start
// time (0 if unknown), from one read of /proc.
func running(pid int) (start uint64, ok bool) {
	if pid <= 0 {
		return 0, false
	}
	if err := unix.Kill(pid, 0); err == unix.ESRCH {
		return 0, false
	}
	start, state, err := stat(pid)
	if err != nil {
		// Gone since kill, or /proc unreadable: only the first is death.
		return 0, !errors.Is(err, fs.ErrNotExist)
	}
	return start, state != 'Z' && state != 'X'
}

// stat reads the start time and state of pid from /proc.
func stat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may itself hold spaces and
	// parentheses: fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, nil
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) < 20 {
		return 0, 0, nil
	}
	state = fields[0][0]
	// fields[0] is field 3 (state); start time is field 22.
	start, _ = strconv.ParseUint(string(fields[19]), 10, 64)
	return start, state, nil
}

// StartTime returns pid's start time in clock ticks after boot, and
// whether it could be read.
func StartTime(pid int) (uint64, bool) {
	start, _, err := stat(pid)
	return start, err == nil && start != 0
}

// pidMax is the largest pid the kernel hands out: /proc/sys/kernel/pid_max,
// or the kernel's hard limit (PID_MAX_LIMIT, 2^22) if that cannot be read.
var pidMax = sync.OnceValue(func() int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err == nil {
		if n, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && n > 0 {
			return n
		}
	}
	return 1 << 22
})

// Possible reports whether pid could name a process: positive and no
// greater than pid_max. It is for telling a lock word that was scribbled
// over from one a process wrote.
func Possible(pid int) bool { return pid > 0 && pid <= pidMax() }

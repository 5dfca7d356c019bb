package proc

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Info is what /proc tells of a process.
type Info struct {
	Pid, Parent int
	Comm        string // the kernel's name for it (15 bytes at most)
	Cmdline     []string
	State       byte // R, S, D, Z, T...
	Started     time.Time
	CPU         time.Duration // user and system time
	RSS         int64         // resident bytes
	Threads     int
}

// clock ticks per second: USER_HZ is 100 on every Linux ABI Go supports.
const userHZ = 100

var bootTime = sync.OnceValue(func() time.Time {
	b, _ := os.ReadFile("/proc/stat")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(s, 0)
			}
		}
	}
	return time.Time{}
})

// Read returns pid's Info; ok is false if the process is gone.
func Read(pid int) (info Info, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/"
	b, err := os.ReadFile(dir + "stat")
	if err != nil {
		return Info{}, false
	}
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return Info{}, false
	}
	fields := bytes.Fields(b[j+1:])
	if len(fields) < 22 {
		return Info{}, false
	}
	num := func(k int) int64 { n, _ := strconv.ParseInt(string(fields[k]), 10, 64); return n }
	// fields[0] is stat's field 3.
	info = Info{
		Pid:     pid,
		Parent:  int(num(1)),
		Comm:    string(b[i+1 : j]),
		State:   fields[0][0],
		CPU:     time.Duration(num(11)+num(12)) * time.Second / userHZ,
		Threads: int(num(17)),
		RSS:     num(21) * int64(os.Getpagesize()),
	}
	if bt := bootTime(); !bt.IsZero() {
		info.Started = bt.Add(time.Duration(num(19)) * time.Second / userHZ)
	}
	if c, err := os.ReadFile(dir + "cmdline"); err == nil {
		info.Cmdline = strings.Split(strings.TrimRight(string(c), "\x00"), "\x00")
	}
	return info, true
}

// Children lists pid's children.
func Children(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, _ := os.ReadDir(dir)
	var kids []int
	for _, t := range tasks {
		b, _ := os.ReadFile(dir + t.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

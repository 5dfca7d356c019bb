package mp

import (
	"bufio"
	"math"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CPUCount returns the number of CPUs this process may use: the CPUs in its
// affinity mask, further limited by a cgroup CPU quota if one is set (a
// container limited to 1.5 CPUs counts 2). It is the right default for the
// size of a pool. It never returns less than 1.
func CPUCount() int {
	n := 0
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		n = set.Count()
	}
	if n <= 0 {
		n = 1
	}
	if q := cgroupCPUs("/proc/self/cgroup", "/sys/fs/cgroup"); q > 0 && q < n {
		n = q
	}
	return n
}

// cgroupCPUs returns the CPU quota of the cgroup in which this process runs,
// rounded up, taking the tightest limit along the path to the root; 0 means
// no limit. Both cgroup v2 (cpu.max) and v1 (cpu.cfs_quota_us) are read.
func cgroupCPUs(procCgroup, mount string) int {
	f, err := os.Open(procCgroup)
	if err != nil {
		return 0
	}
	defer f.Close()
	best := 0
	tighter := func(q int) {
		if q > 0 && (best == 0 || q < best) {
			best = q
		}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		fields := strings.SplitN(sc.Text(), ":", 3)
		if len(fields) != 3 {
			continue
		}
		ctrls, dir := fields[1], fields[2]
		switch {
		case ctrls == "": // v2
			for d := dir; ; d = path.Dir(d) {
				tighter(readQuota(path.Join(mount, d, "cpu.max"), ""))
				if d == "/" || d == "." {
					break
				}
			}
		case hasController(ctrls, "cpu"): // v1
			base := path.Join(mount, ctrls)
			for d := dir; ; d = path.Dir(d) {
				tighter(readQuota(path.Join(base, d, "cpu.cfs_quota_us"), path.Join(base, d, "cpu.cfs_period_us")))
				if d == "/" || d == "." {
					break
				}
			}
		}
	}
	return best
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// readQuota reads a quota as "quota period" from one file (v2), or as two
// files (v1), returning ceil(quota/period), or 0 when unlimited or unreadable.
func readQuota(quotaFile, periodFile string) int {
	b, err := os.ReadFile(quotaFile)
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if periodFile != "" {
		p, err := os.ReadFile(periodFile)
		if err != nil {
			return 0
		}
		fields = append(fields, strings.TrimSpace(string(p)))
	}
	if len(fields) != 2 || fields[0] == "max" {
		return 0
	}
	quota, err1 := strconv.ParseFloat(fields[0], 64)
	period, err2 := strconv.ParseFloat(fields[1], 64)
	if err1 != nil || err2 != nil || quota <= 0 || period <= 0 {
		return 0
	}
	return int(math.Ceil(quota / period))
}

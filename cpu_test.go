package mp

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestCPUCount(t *testing.T) {
	n := CPUCount()
	if n < 1 || n > runtime.NumCPU() {
		t.Fatalf("CPUCount() = %d with %d CPUs", n, runtime.NumCPU())
	}
}

func TestCgroupQuota(t *testing.T) {
	root := t.TempDir()
	write := func(path, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proc := filepath.Join(root, "cgroup")
	mount := filepath.Join(root, "fs")

	write(proc, "0::/a/b\n")
	write(filepath.Join(mount, "a/b/cpu.max"), "max 100000\n")
	if got := cgroupCPUs(proc, mount); got != 0 {
		t.Fatalf("unlimited v2: got %d", got)
	}
	write(filepath.Join(mount, "a/cpu.max"), "150000 100000\n") // 1.5 CPUs on the parent
	if got := cgroupCPUs(proc, mount); got != 2 {
		t.Fatalf("v2 quota 1.5 on the parent: got %d, want 2", got)
	}
	write(filepath.Join(mount, "a/b/cpu.max"), "50000 100000\n")
	if got := cgroupCPUs(proc, mount); got != 1 {
		t.Fatalf("v2 quota 0.5: got %d, want 1", got)
	}

	write(proc, "4:cpu,cpuacct:/job\n3:memory:/job\n")
	write(filepath.Join(mount, "cpu,cpuacct/job/cpu.cfs_quota_us"), "300000\n")
	write(filepath.Join(mount, "cpu,cpuacct/job/cpu.cfs_period_us"), "100000\n")
	if got := cgroupCPUs(proc, mount); got != 3 {
		t.Fatalf("v1 quota 3: got %d", got)
	}
	write(filepath.Join(mount, "cpu,cpuacct/job/cpu.cfs_quota_us"), "-1\n")
	if got := cgroupCPUs(proc, mount); got != 0 {
		t.Fatalf("v1 unlimited: got %d", got)
	}
	if got := cgroupCPUs(filepath.Join(root, "missing"), mount); got != 0 {
		t.Fatalf("no cgroup file: got %d", got)
	}
}

func TestArenaSize(t *testing.T) {
	for in, want := range map[string]int{"": DefaultArenaSize, "4096": 4096, "64M": 64 << 20, "2g": 2 << 30, "8k": 8 << 10} {
		if got, err := arenaSize(in); err != nil || got != want {
			t.Errorf("arenaSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "-1", "0", "12Q"} {
		if _, err := arenaSize(bad); err == nil {
			t.Errorf("arenaSize(%q) accepted", bad)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// goOutput is recorded go test -bench output, from the commands mpbench
// runs (on a loaded 2-core machine), with three additions at the end:
// a result split from its name by what a child printed, a failed
// benchmark and a failed sub-benchmark. BenchmarkDictUpdate is absent, as
// it was before it was written.
const goOutput = `goos: linux
goarch: amd64
pkg: github.com/multiproc/mp
cpu: AMD EPYC
BenchmarkPoolMapChunk1-2      	  171520	      1772 ns/op	    564414 tasks/s
BenchmarkPoolMapChunk1-2      	  114200	      1935 ns/op	    516868 tasks/s
BenchmarkPoolMapChunk1-2      	  120000	      1800 ns/op	    530000 tasks/s
BenchmarkPoolMap-2            	 2098790	        97.68 ns/op	  10237149 tasks/s
BenchmarkPoolMap-2            	 2161182	       101.5 ns/op	   9853729 tasks/s
BenchmarkQueueSmall-2         	 2157636	       113.3 ns/op	   8823962 msgs/s
BenchmarkQueueSmall-2         	 2023375	       135.2 ns/op	   7397610 msgs/s
BenchmarkLockContended-2      	 8959910	        23.13 ns/op	         5.375 %held
BenchmarkLockContended-2      	11551170	        22.60 ns/op	         7.986 %held
BenchmarkProcessStartJoin-2   	      94	   2495884 ns/op
BenchmarkProcessStartJoin-2   	      96	   2491674 ns/op
PASS
ok  	github.com/multiproc/mp	4.776s

goos: linux
goarch: amd64
pkg: github.com/multiproc/mp
cpu: AMD EPYC
BenchmarkQueue4K/Get-2        	  123085	      1689 ns/op	2425.66 MB/s	    592209 msgs/s
BenchmarkQueue4K/Get-2        	  150081	      2019 ns/op	2028.30 MB/s	    495193 msgs/s
BenchmarkLockUncontended/AcquireRelease-2         	15515629	        16.17 ns/op
BenchmarkLockUncontended/AcquireRelease-2         	17505356	        13.64 ns/op
BenchmarkPipeRoundTrip/idle-2 	child says hello
  539378	       441.2 ns/op
BenchmarkPoolApplyAsync-2     	--- FAIL: BenchmarkPoolApplyAsync-2
    bench_pool_test.go:85: mp: worker lost
--- FAIL: BenchmarkQueue4K/GetInto
    bench_queue_test.go:101: item 3 has 0 bytes
--- FAIL: BenchmarkQueue4K
FAIL
exit status 1
FAIL	github.com/multiproc/mp	2.337s
`

func TestParseGo(t *testing.T) {
	g := parseGo(strings.NewReader(goOutput))
	if g.cpu != "AMD EPYC" {
		t.Errorf("cpu %q", g.cpu)
	}
	for _, c := range []struct {
		name, unit string
		want       []float64
	}{
		{"BenchmarkPoolMapChunk1", "tasks/s", []float64{564414, 516868, 530000}},
		{"BenchmarkPoolMapChunk1", "ns/op", []float64{1772, 1935, 1800}},
		{"BenchmarkPoolMap", "tasks/s", []float64{10237149, 9853729}},
		{"BenchmarkQueueSmall", "msgs/s", []float64{8823962, 7397610}},
		{"BenchmarkLockContended", "%held", []float64{5.375, 7.986}},
		{"BenchmarkProcessStartJoin", "ns/op", []float64{2495884, 2491674}},
		{"BenchmarkQueue4K/Get", "msgs/s", []float64{592209, 495193}},
		{"BenchmarkQueue4K/Get", "MB/s", []float64{2425.66, 2028.30}},
		{"BenchmarkLockUncontended/AcquireRelease", "ns/op", []float64{16.17, 13.64}},
		{"BenchmarkPipeRoundTrip/idle", "ns/op", []float64{441.2}},
	} {
		if got := g.samples[c.name][c.unit]; !slices.Equal(got, c.want) {
			t.Errorf("%s %s: %v, want %v", c.name, c.unit, got, c.want)
		}
	}
	for _, name := range []string{"BenchmarkDictUpdate", "BenchmarkPoolApplyAsync"} {
		if s, ok := g.samples[name]; ok {
			t.Errorf("%s: samples %v, want none", name, s)
		}
	}
	for name, want := range map[string]bool{
		"BenchmarkPoolApplyAsync": true, "BenchmarkQueue4K/GetInto": true, "BenchmarkQueue4K": true,
		"BenchmarkQueue4K/Get": false, "BenchmarkDictUpdate": false,
	} {
		if g.failed[name] != want {
			t.Errorf("%s failed: %v, want %v", name, g.failed[name], want)
		}
	}
}

func TestRows(t *testing.T) {
	g := parseGo(strings.NewReader(goOutput))
	py, err := parsePython(strings.NewReader(`python 3.11.7 cpus 2 start_method fork
process_start_fork 2.2e+06 ns/op
process_start_spawn 3.5e+07 ns/op
queue_small 250000 msgs/s
queue_small 200000 msgs/s
queue_small 300000 msgs/s
pool_apply_async 52800 tasks/s
dict_update 100000 ns/op
`))
	if err != nil {
		t.Fatal(err)
	}
	if py.version != "3.11.7" || py.startMethod != "fork" {
		t.Errorf("version %q, start method %q", py.version, py.startMethod)
	}
	byKey := map[string]Row{}
	for _, r := range rows(workloads, g, py.samples) {
		byKey[r.PyKey] = r
	}
	near := func(p *float64, want float64) bool { return p != nil && *p > want*0.999 && *p < want*1.001 }

	// A time: CPython's over ours. The median of an even count is the
	// mean of the middle two.
	if r := byKey["process_start_spawn"]; !near(r.Go, 2493779) || !near(r.Ratio, 3.5e7/2493779) {
		t.Errorf("process start: %+v", r)
	}
	// A rate: ours over CPython's, the median of three.
	if r := byKey["queue_small"]; !near(r.Go, (8823962+7397610)/2.0) || !near(r.Py, 250000) || !near(r.Ratio, (8823962+7397610)/2.0/250000) {
		t.Errorf("queue: %+v", r)
	}
	if r := byKey["pool_map_chunk1"]; !near(r.Go, 530000) || r.Py != nil || r.Ratio != nil {
		t.Errorf("pool map chunk 1, no CPython figure: %+v", r)
	}
	if r := byKey["dict_update"]; r.Go != nil || r.GoStatus != "n/a" || r.Ratio != nil || !near(r.Py, 100000) {
		t.Errorf("dict, no benchmark: %+v", r)
	}
	if r := byKey["pool_apply_async"]; r.Go != nil || r.GoStatus != "FAIL" || r.Ratio != nil {
		t.Errorf("apply_async, failed: %+v", r)
	}

	var out bytes.Buffer
	table(&out, rows(workloads, g, py.samples))
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2+len(workloads) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), 2+len(workloads), out.String())
	}
	cells := map[string][]string{} // by workload: the other three cells
	for _, l := range lines {
		f := strings.Split(l, "|")
		if len(f) != 6 || f[0] != "" || f[5] != "" {
			t.Fatalf("not a table row: %q", l)
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		cells[f[1]] = f[2:5]
	}
	for workload, want := range map[string][]string{
		"workload": {"multiproc", "CPython", "ratio"},
		"start + join a process (CPython: spawn)":     {"2.49 ms", "35.0 ms", "14×"},
		"Queue, small items, 1 producer → 1 consumer": {"8.11 M msgs/s", "250 k msgs/s", "32×"},
		"Pool(2) map, chunk size 1":                   {"530 k tasks/s", "n/a", "n/a"},
		"Pool(2) apply_async, then get":               {"FAIL", "52.8 k tasks/s", "n/a"},
		"Dict read-modify-write, 2 processes":         {"n/a", "100 µs", "n/a"},
	} {
		if got := cells[workload]; !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q\n%s", workload, got, want, out.String())
		}
	}
}

func TestParsePythonRejects(t *testing.T) {
	for _, in := range []string{"queue_small fast msgs/s\n", "Traceback (most recent call last):\n"} {
		if _, err := parsePython(strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestHuman(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{13.64, "ns/op", "13.6 ns"},
		{441.2, "ns/op", "441 ns"},
		{999.7, "ns/op", "1000 ns"},
		{56700, "ns/op", "56.7 µs"},
		{2495884, "ns/op", "2.50 ms"},
		{9.996, "ns/op", "10.0 ns"},
		{1.5e9, "ns/op", "1.50 s"},
		{8823962, "msgs/s", "8.82 M msgs/s"},
		{66600, "tasks/s", "66.6 k tasks/s"},
		{512, "tasks/s", "512 tasks/s"},
	} {
		if got := human(c.v, c.unit); got != c.want {
			t.Errorf("human(%v, %s) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
	if got := ratio(0.254); got != "0.25×" {
		t.Errorf("ratio(0.254) = %q", got)
	}
	if got := ratio(123.4); got != "123×" {
		t.Errorf("ratio(123.4) = %q", got)
	}
}

func TestPatterns(t *testing.T) {
	root, alt := benchNames()
	got := patterns(root)
	want := []string{
		"^(BenchmarkProcessStartJoin|BenchmarkLockContended|BenchmarkQueueSmall|BenchmarkPoolMapChunk1|BenchmarkPoolMap|BenchmarkPoolApplyAsync|BenchmarkDictUpdate|BenchmarkBareReexec|BenchmarkPoolApply)$",
		"^(BenchmarkLockUncontended|BenchmarkQueue4K|BenchmarkPipeRoundTrip|BenchmarkFutexPingPong)$/^(AcquireRelease|Get|idle|unlocked|busy)$",
	}
	if !slices.Equal(got, want) {
		t.Errorf("patterns:\n%q\nwant\n%q", got, want)
	}
	got = patterns(alt)
	want = []string{"^(BenchmarkExecJSON|BenchmarkNetRPC|BenchmarkGobSocket)$/^(ApplyAsync|RoundTrip|Small|4K)$"}
	if !slices.Equal(got, want) {
		t.Errorf("alternatives' patterns:\n%q\nwant\n%q", got, want)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := moduleRoot("go", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "mpbench", "main.go")); err != nil {
		t.Errorf("root %s: %v", root, err)
	}
	if _, err := moduleRoot("go", t.TempDir()); err == nil {
		t.Error("an empty directory taken for the module's root")
	}
}

// TestPythonWorkloads runs python_workloads.py --quick and checks that it
// measures every workload of the table, in the table's unit.
func TestPythonWorkloads(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "python_workloads.py", "--quick")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	py, err := parsePython(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if py.version == "" || py.startMethod == "" {
		t.Errorf("no header line:\n%s", out)
	}
	for _, w := range workloads {
		v := py.samples[w.py][w.unit]
		if len(v) != 1 || v[0] <= 0 {
			t.Errorf("%s: %v %s, want one positive figure:\n%s", w.py, v, w.unit, out)
		}
	}
	if !bytes.Equal(pythonWorkloads, mustRead(t, "python_workloads.py")) {
		t.Error("the embedded python_workloads.py is not the file's")
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCompare: the floor and alternatives tables, from recorded output.
func TestCompare(t *testing.T) {
	g := parseGo(strings.NewReader(`BenchmarkPipeRoundTrip/idle-2   	  539378	      1000 ns/op
BenchmarkFutexPingPong/unlocked-2   	  539378	      4000 ns/op
BenchmarkPipeRoundTrip/busy-2   	  539378	      30000 ns/op
BenchmarkFutexPingPong/busy-2   	  539378	      20000 ns/op
BenchmarkPoolApplyAsync-2     	  100000	      4000 ns/op	    250000 tasks/s
BenchmarkExecJSON/ApplyAsync-2     	  100000	      4000 ns/op	    200000 tasks/s
BenchmarkNetRPC/ApplyAsync-2     	  100000	      4000 ns/op	    100000 tasks/s
--- FAIL: BenchmarkGobSocket/RoundTrip
`))
	var out bytes.Buffer
	compare(&out, floorColumns, floors, g, true)
	compare(&out, altColumns, alts, g, false)
	rows := map[string]string{} // a row's cells, trimmed, joined by "|"
	for _, l := range strings.Split(out.String(), "\n") {
		f := strings.Split(strings.Trim(l, "|"), "|")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		rows[f[0]+"/"+strings.Join(f[1:], "|")] = ""
	}
	for _, want := range []string{
		"Pipe round trip, 64 bytes (floor: futex ping-pong)/1.00 µs|4.00 µs|0.25×",
		"the same, both cores busy/30.0 µs|20.0 µs|1.50×",
		"Pool(2) apply_async, then get/250 k tasks/s|200 k tasks/s|100 k tasks/s|—|1.25×",
		"Pipe round trip, 64 bytes/1.00 µs|—|—|FAIL|n/a",
	} {
		if _, ok := rows[want]; !ok {
			t.Errorf("no row %q in\n%s", want, out.String())
		}
	}
}

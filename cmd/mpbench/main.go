// Mpbench compares multiproc with CPython's multiprocessing on the same
// workloads, in one sitting: process start, Lock, Queue, Pipe, Pool and the
// shared dict. It runs the module's Go benchmarks for them with
//
//	go test -run '^$' -bench <names> -count N
//
// in the module's root, then, if python3 is there, python_workloads.py (the
// same workloads, written with multiprocessing; it is built into mpbench),
// and prints one table of medians: workload, multiproc, CPython, and how
// many times better multiproc is.
//
// Usage:
//
//	go run ./cmd/mpbench [-count 5] [-quick] [-python python3] [-dir root] [-json]
//
// Go's and Python's progress goes to stderr, the table to stdout. A
// benchmark that does not exist (yet) is "n/a" in the table; one that
// fails is "FAIL", and mpbench then exits with status 1 after the table.
package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

//go:embed python_workloads.py
var pythonWorkloads []byte

// modulePath is the module whose benchmarks mpbench runs.
const modulePath = "github.com/multiproc/mp"

// A workload is one row of the table: a Go benchmark and the workload of
// python_workloads.py defined the same way, compared on one metric.
type workload struct {
	title string
	bench string // as go test prints it, without the -GOMAXPROCS suffix
	py    string // the key in python_workloads.py
	unit  string // ns/op (lower is better), or a rate (higher is better)
}

var workloads = []workload{
	{"start + join a process (CPython: fork)", "BenchmarkProcessStartJoin", "process_start_fork", "ns/op"},
	{"start + join a process (CPython: spawn)", "BenchmarkProcessStartJoin", "process_start_spawn", "ns/op"},
	{"Lock acquire + release, uncontended", "BenchmarkLockUncontended/AcquireRelease", "lock_uncontended", "ns/op"},
	{"Lock, 2 processes contending, per acquire", "BenchmarkLockContended", "lock_contended", "ns/op"},
	{"Queue, small items, 1 producer → 1 consumer", "BenchmarkQueueSmall", "queue_small", "msgs/s"},
	{"Queue, 4 KiB items, 1 producer → 1 consumer", "BenchmarkQueue4K/Get", "queue_4k", "msgs/s"},
	{"Pipe round trip, 64 bytes", "BenchmarkPipeRoundTrip/idle", "pipe_rtt", "ns/op"},
	{"Pool(2) map, chunk size 1", "BenchmarkPoolMapChunk1", "pool_map_chunk1", "tasks/s"},
	{"Pool(2) map, default chunk size", "BenchmarkPoolMap", "pool_map", "tasks/s"},
	{"Pool(2) apply_async, then get", "BenchmarkPoolApplyAsync", "pool_apply_async", "tasks/s"},
	{"Dict read-modify-write, 2 processes", "BenchmarkDictUpdate", "dict_update", "ns/op"},
}

// A comparison is one row of the second and third tables: a multiproc
// benchmark beside the same workload done another way (the machine's floor,
// or what a Go programmer would write instead), each a benchmark of pkg.
type comparison struct {
	title  string
	unit   string
	bench  string   // multiproc's, in the module's root
	others []string // one per column; "" when that way has no such workload
}

// floorColumns and floors: multiproc against the bare mechanism it is
// built on, measured the same way (BenchmarkFutexPingPong is two
// processes passing a futex word back and forth).
var (
	floorColumns = []string{"floor"}
	floors       = []comparison{
		{"Pipe round trip, 64 bytes (floor: futex ping-pong)", "ns/op", "BenchmarkPipeRoundTrip/idle", []string{"BenchmarkFutexPingPong/unlocked"}},
		{"the same, both cores busy", "ns/op", "BenchmarkPipeRoundTrip/busy", []string{"BenchmarkFutexPingPong/busy"}},
		{"start + join a process (floor: bare re-exec)", "ns/op", "BenchmarkProcessStartJoin", []string{"BenchmarkBareReexec"}},
	}
)

// altPkg holds the benchmarks of the Go alternatives (see its doc).
const altPkg = "./internal/altbench"

var (
	altColumns = []string{"os/exec + JSON", "net/rpc", "gob, Unix socket"}
	alts       = []comparison{
		{"Pool(2) apply_async, then get", "tasks/s", "BenchmarkPoolApplyAsync", []string{"BenchmarkExecJSON/ApplyAsync", "BenchmarkNetRPC/ApplyAsync", ""}},
		{"one task, round trip", "ns/op", "BenchmarkPoolApply", []string{"BenchmarkExecJSON/RoundTrip", "BenchmarkNetRPC/RoundTrip", ""}},
		{"Queue, small items", "msgs/s", "BenchmarkQueueSmall", []string{"", "", "BenchmarkGobSocket/Small"}},
		{"Queue, 4 KiB items", "msgs/s", "BenchmarkQueue4K/Get", []string{"", "", "BenchmarkGobSocket/4K"}},
		{"Pipe round trip, 64 bytes", "ns/op", "BenchmarkPipeRoundTrip/idle", []string{"", "", "BenchmarkGobSocket/RoundTrip"}},
	}
)

// benchNames lists the benchmarks that workloads and comparisons need from
// the module's root and from altPkg.
func benchNames() (root, alt []string) {
	for _, w := range workloads {
		root = appendNew(root, w.bench)
	}
	for _, c := range floors {
		root = appendNew(root, c.bench)
		for _, o := range c.others {
			root = appendNew(root, o)
		}
	}
	for _, c := range alts {
		root = appendNew(root, c.bench)
		for _, o := range c.others {
			if o != "" {
				alt = appendNew(alt, o)
			}
		}
	}
	return root, alt
}

// compare writes a table of comparisons: multiproc's median, each other
// column's, and how many times better multiproc is than the best of them
// (or, against a floor, how many times the floor's cost it pays).
func compare(w io.Writer, columns []string, cs []comparison, g goResults, floor bool) {
	last := "multiproc ahead by"
	if floor {
		last = "× the floor"
	}
	head := append(append([]string{"workload", "multiproc"}, columns...), last)
	cells := [][]string{head}
	for _, c := range cs {
		row := []string{c.title, figure(g, c.bench, c.unit)}
		var best float64
		for _, o := range c.others {
			if o == "" {
				row = append(row, "—")
				continue
			}
			row = append(row, figure(g, o, c.unit))
			if v := g.samples[o][c.unit]; len(v) > 0 {
				m := median(v)
				if best == 0 || (lowerIsBetter(c.unit) && m < best) || (!lowerIsBetter(c.unit) && m > best) {
					best = m
				}
			}
		}
		r := "n/a"
		if v := g.samples[c.bench][c.unit]; len(v) > 0 && best > 0 {
			x := median(v) / best // multiproc's cost over the other's, for a time
			if !lowerIsBetter(c.unit) {
				x = 1 / x
			}
			if floor {
				r = ratio(x)
			} else {
				r = ratio(1 / x)
			}
		}
		cells = append(cells, append(row, r))
	}
	markdown(w, cells)
}

// figure is the median of a benchmark's samples in unit, for a table.
func figure(g goResults, bench, unit string) string {
	if v := g.samples[bench][unit]; len(v) > 0 {
		return human(median(v), unit)
	}
	return missing(g, bench)
}

// missing says why a benchmark has no figure: "FAIL" if it (or its
// parent) failed, else "n/a" (it does not exist).
func missing(g goResults, bench string) string {
	if parent, _, _ := strings.Cut(bench, "/"); g.failed[bench] || g.failed[parent] {
		return "FAIL"
	}
	return "n/a"
}

func lowerIsBetter(unit string) bool { return strings.HasSuffix(unit, "/op") }

// samples holds measurements by name (a benchmark or a Python key), then
// by unit.
type samples map[string]map[string][]float64

func (s samples) add(name, unit string, v float64) {
	if s[name] == nil {
		s[name] = map[string][]float64{}
	}
	s[name][unit] = append(s[name][unit], v)
}

var (
	// The result of a benchmark: iterations, then value-unit pairs, the
	// first of them always ns/op. It may follow other text on its line:
	// a benchmark's child processes share go test's stdout, and what they
	// print lands between the name and the result.
	resultRe = regexp.MustCompile(`(?:^|\s)(\d+)\s+(\d[\d.e+-]*\s+ns/op(?:\s+-?[\d.e+-]+\s+\S+)*)\s*$`)
	failRe   = regexp.MustCompile(`--- FAIL: (\S+)`)
	procsRe  = regexp.MustCompile(`-\d+$`)
	// Go prints a header line "cpu: ..." before the results.
	cpuRe = regexp.MustCompile(`^cpu: (.+)$`)
)

// goResults is what parseGo finds in go test's output.
type goResults struct {
	samples samples
	failed  map[string]bool // benchmarks with a --- FAIL line
	cpu     string
}

// parseGo reads the output of go test -bench: result lines and failures,
// names without their -GOMAXPROCS suffix. A result line whose name was
// printed on an earlier line (something wrote in between) is given that
// name.
func parseGo(r io.Reader) goResults {
	res := goResults{samples: samples{}, failed: map[string]bool{}}
	pending := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := failRe.FindStringSubmatch(line); m != nil {
			res.failed[procsRe.ReplaceAllString(m[1], "")] = true
			continue
		}
		if m := cpuRe.FindStringSubmatch(line); m != nil {
			res.cpu = strings.TrimSpace(m[1])
			continue
		}
		name := ""
		if strings.HasPrefix(line, "Benchmark") {
			name = procsRe.ReplaceAllString(strings.Fields(line)[0], "")
			pending = name
		}
		m := resultRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if name == "" {
			name = pending
		}
		pending = ""
		if name == "" {
			continue
		}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				res.samples.add(name, f[i+1], v)
			}
		}
	}
	return res
}

// pyResults is what parsePython finds in python_workloads.py's output.
type pyResults struct {
	samples     samples
	version     string
	startMethod string
}

// parsePython reads python_workloads.py's output: a header line, then
// "KEY VALUE UNIT" lines. Anything else is an error.
func parsePython(r io.Reader) (pyResults, error) {
	res := pyResults{samples: samples{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0:
		case f[0] == "python" && len(f) >= 2:
			res.version = f[1]
			if i := slices.Index(f, "start_method"); i > 0 && i+1 < len(f) {
				res.startMethod = f[i+1]
			}
		case len(f) == 3:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return res, fmt.Errorf("line %d: %q: %v", n, sc.Text(), err)
			}
			res.samples.add(f[0], f[2], v)
		default:
			return res, fmt.Errorf("line %d: unexpected %q", n, sc.Text())
		}
	}
	return res, sc.Err()
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// patterns returns the -bench patterns that select the benchmarks: one
// for top-level benchmarks and one for sub-benchmarks, since a pattern
// with a '/' reports nothing for a benchmark that has no sub-benchmarks.
func patterns(names []string) []string {
	var top, parents, subs []string
	for _, name := range names {
		parent, sub, ok := strings.Cut(name, "/")
		if !ok {
			top = appendNew(top, parent)
			continue
		}
		parents, subs = appendNew(parents, parent), appendNew(subs, sub)
	}
	var pats []string
	if len(top) > 0 {
		pats = append(pats, "^("+strings.Join(top, "|")+")$")
	}
	if len(parents) > 0 {
		pats = append(pats, "^("+strings.Join(parents, "|")+")$/^("+strings.Join(subs, "|")+")$")
	}
	return pats
}

func appendNew(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, regexp.QuoteMeta(v))
}

// Row is a line of the table, and of the -json output.
type Row struct {
	Workload  string    `json:"workload"`
	GoBench   string    `json:"go_benchmark"`
	PyKey     string    `json:"python_workload"`
	Unit      string    `json:"unit"`
	Go        *float64  `json:"multiproc,omitempty"` // medians
	Py        *float64  `json:"cpython,omitempty"`
	Ratio     *float64  `json:"ratio,omitempty"` // how many times better multiproc is
	GoSamples []float64 `json:"multiproc_samples,omitempty"`
	PySamples []float64 `json:"cpython_samples,omitempty"`
	GoStatus  string    `json:"multiproc_status,omitempty"` // "n/a" or "FAIL" when there is no figure
}

func rows(ws []workload, g goResults, py samples) []Row {
	var out []Row
	for _, w := range ws {
		r := Row{Workload: w.title, GoBench: w.bench, PyKey: w.py, Unit: w.unit}
		r.GoSamples = g.samples[w.bench][w.unit]
		r.PySamples = py[w.py][w.unit]
		if len(r.GoSamples) > 0 {
			r.Go = ptr(median(r.GoSamples))
		} else {
			r.GoStatus = missing(g, w.bench)
		}
		if len(r.PySamples) > 0 {
			r.Py = ptr(median(r.PySamples))
		}
		if r.Go != nil && r.Py != nil && *r.Go > 0 && *r.Py > 0 {
			if lowerIsBetter(w.unit) {
				r.Ratio = ptr(*r.Py / *r.Go)
			} else {
				r.Ratio = ptr(*r.Go / *r.Py)
			}
		}
		out = append(out, r)
	}
	return out
}

func ptr(v float64) *float64 { return &v }

// sig3 formats v with three significant digits, without an exponent.
func sig3(v float64) string {
	if v == 0 {
		return "0"
	}
	dec := max(0, 2-int(math.Floor(math.Log10(math.Abs(v)))))
	s := strconv.FormatFloat(v, 'f', dec, 64)
	if r, _ := strconv.ParseFloat(s, 64); dec > 0 && math.Abs(r) >= math.Pow(10, float64(3-dec)) {
		s = strconv.FormatFloat(v, 'f', dec-1, 64) // 9.996 rounds up to 10.00
	}
	return s
}

// human formats a figure in the unit a reader expects: a time per
// operation from ns to s, a rate in k or M per second.
func human(v float64, unit string) string {
	if lowerIsBetter(unit) {
		switch {
		case v < 1e3:
			return sig3(v) + " ns"
		case v < 1e6:
			return sig3(v/1e3) + " µs"
		case v < 1e9:
			return sig3(v/1e6) + " ms"
		}
		return sig3(v/1e9) + " s"
	}
	switch {
	case v >= 1e6:
		return sig3(v/1e6) + " M " + unit
	case v >= 1e3:
		return sig3(v/1e3) + " k " + unit
	}
	return sig3(v) + " " + unit
}

func ratio(r float64) string {
	if r >= 10 {
		return strconv.FormatFloat(r, 'f', 0, 64) + "×"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// table writes rows as a Markdown table padded to line up in a terminal.
func table(w io.Writer, rs []Row) {
	cells := [][]string{{"workload", "multiproc", "CPython", "ratio"}}
	for _, r := range rs {
		c := []string{r.Workload, r.GoStatus, "n/a", "n/a"}
		if r.Go != nil {
			c[1] = human(*r.Go, r.Unit)
		}
		if r.Py != nil {
			c[2] = human(*r.Py, r.Unit)
		}
		if r.Ratio != nil {
			c[3] = ratio(*r.Ratio)
		}
		cells = append(cells, c)
	}
	markdown(w, cells)
}

// markdown writes cells, a header row then the others, as a Markdown
// table: the first column left-aligned, the figures right-aligned.
func markdown(w io.Writer, cells [][]string) {
	width := make([]int, len(cells[0]))
	for _, c := range cells {
		for i, s := range c {
			width[i] = max(width[i], len([]rune(s)))
		}
	}
	line := func(c []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, s := range c {
			pad := strings.Repeat(" ", width[i]-len([]rune(s)))
			if i == 0 {
				b.WriteString(" " + s + pad + " |")
			} else {
				b.WriteString(" " + pad + s + " |")
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(cells[0])
	sep := make([]string, len(width))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i]-1) + ":"
	}
	sep[0] = strings.Repeat("-", width[0])
	line(sep)
	for _, c := range cells[1:] {
		line(c)
	}
}

// moduleRoot finds the root of modulePath: dir if given, else the module
// this source file was built from, else the module of the working
// directory.
func moduleRoot(goCmd, dir string) (string, error) {
	var tried []string
	try := func(d string) bool {
		tried = append(tried, d)
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		return err == nil && regexp.MustCompile(`(?m)^module\s+"?`+regexp.QuoteMeta(modulePath)+`"?\s*$`).Match(b)
	}
	if dir != "" {
		if try(dir) {
			return filepath.Abs(dir)
		}
		return "", fmt.Errorf("%s is not the root of %s", dir, modulePath)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if d := filepath.Join(filepath.Dir(file), "..", ".."); try(d) {
			return filepath.Clean(d), nil
		}
	}
	if out, err := exec.Command(goCmd, "env", "GOMOD").Output(); err == nil {
		if mod := strings.TrimSpace(string(out)); mod != "" && mod != os.DevNull {
			if d := filepath.Dir(mod); try(d) {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("cannot find the root of %s (tried %v); give it with -dir", modulePath, tried)
}

// runGo runs go test for the workloads' benchmarks, echoing its output
// to stderr, and parses what it printed. err is go test's failure, if any:
// the results it printed before are kept.
func runGo(goCmd, root, pkg string, names []string, count int, benchtime string) (goResults, []string, error) {
	var all bytes.Buffer
	var cmds []string
	var errs []error
	for _, pat := range patterns(names) {
		args := []string{"test", "-run", "^$", "-bench", pat, "-count", strconv.Itoa(count)}
		if benchtime != "" {
			args = append(args, "-benchtime", benchtime)
		}
		args = append(args, pkg)
		cmds = append(cmds, "go "+shellJoin(args))
		fmt.Fprintf(os.Stderr, "mpbench: in %s: go %s\n", root, shellJoin(args))
		cmd := exec.Command(goCmd, args...)
		cmd.Dir = root
		w := io.MultiWriter(os.Stderr, &all)
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("go %s: %w", shellJoin(args), err))
		}
		all.WriteString("\n") // a name left without its result does not carry over
	}
	return parseGo(&all), cmds, errors.Join(errs...)
}

// runPython runs the embedded python_workloads.py with the interpreter at
// path (called name on the command line), echoing its output to stderr.
func runPython(name, path string, count int, quick bool) (pyResults, string, error) {
	dir, err := os.MkdirTemp("", "mpbench")
	if err != nil {
		return pyResults{}, "", err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "python_workloads.py")
	if err := os.WriteFile(file, pythonWorkloads, 0o644); err != nil {
		return pyResults{}, "", err
	}
	args := []string{file, "--count", strconv.Itoa(count)}
	if quick {
		args = append(args, "--quick")
	}
	shown := name + " cmd/mpbench/python_workloads.py " + shellJoin(args[1:])
	fmt.Fprintf(os.Stderr, "mpbench: %s\n", shown)
	var out bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = io.MultiWriter(os.Stderr, &out), os.Stderr
	runErr := cmd.Run()
	res, err := parsePython(&out)
	if runErr != nil {
		err = fmt.Errorf("%s: %w", shown, runErr)
	}
	return res, shown, err
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " ^$|()*?[]'\"\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// machine describes where the figures were measured.
func machine(goCmd, cpu string) string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	goVersion, _ := exec.Command(goCmd, "env", "GOVERSION").Output()
	if cpu == "" {
		cpu = "unknown CPU"
	}
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s", runtime.NumCPU(), cpu,
		strings.TrimSpace(string(kernel)), strings.TrimSpace(string(goVersion)))
}

// loadAverage is the 1-minute load average: on a shared machine, the
// figures mean little without it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

func main() {
	count := flag.Int("count", 5, "runs of each benchmark and workload; the table shows medians")
	quick := flag.Bool("quick", false, "a smoke run: -benchtime 100ms, Python's workloads a tenth the size, -count 1 unless given")
	benchtime := flag.String("benchtime", "", "go test's -benchtime (default go test's own, 1s)")
	python := flag.String("python", "python3", "the Python interpreter; empty to measure Go only")
	dir := flag.String("dir", "", "the module's root (default: found from mpbench's source, or go env GOMOD)")
	asJSON := flag.Bool("json", false, "print the rows, with every sample, as JSON instead of a table")
	alternatives := flag.Bool("alternatives", true, "also measure what a Go programmer would use instead (os/exec with JSON, net/rpc, gob over a socket)")
	flag.Parse()
	if flag.NArg() > 0 || *count < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if *quick {
		countSet := false
		flag.Visit(func(f *flag.Flag) { countSet = countSet || f.Name == "count" })
		if !countSet {
			*count = 1
		}
		if *benchtime == "" {
			*benchtime = "100ms"
		}
	}

	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	root, err := moduleRoot(goCmd, *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mpbench:", err)
		os.Exit(2)
	}

	started, loadBefore := time.Now(), loadAverage()
	failed := false
	rootNames, altNames := benchNames()
	g, goCmds, err := runGo(goCmd, root, ".", rootNames, *count, *benchtime)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mpbench:", err)
		failed = true
	}
	if *alternatives {
		ga, altCmds, err := runGo(goCmd, root, altPkg, altNames, *count, *benchtime)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mpbench:", err)
			failed = true
		}
		goCmds = append(goCmds, altCmds...)
		for name, byUnit := range ga.samples {
			for unit, v := range byUnit {
				for _, x := range v {
					g.samples.add(name, unit, x)
				}
			}
		}
		for name := range ga.failed {
			g.failed[name] = true
		}
	}
	var py pyResults
	pyCmd := ""
	pyNote := "CPython: not measured (-python is empty)"
	if *python != "" {
		if path, lerr := exec.LookPath(*python); lerr != nil {
			pyNote = fmt.Sprintf("CPython: not measured (%s not found)", *python)
		} else {
			py, pyCmd, err = runPython(*python, path, *count, *quick)
			if err != nil {
				fmt.Fprintln(os.Stderr, "mpbench:", err)
				failed = true
			}
			pyNote = fmt.Sprintf("CPython %s multiprocessing (default start method %s): %s", py.version, py.startMethod, pyCmd)
		}
	}
	rs := rows(workloads, g, py.samples)
	load := loadBefore + " before, " + loadAverage() + " after"

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Date       string   `json:"date"`
			Machine    string   `json:"machine"`
			Count      int      `json:"count"`
			GoCommands []string `json:"go_commands"`
			Python     string   `json:"cpython"`
			Load       string   `json:"load_average"`
			Rows       []Row    `json:"rows"`
		}{started.Format(time.RFC3339), machine(goCmd, g.cpu), *count, goCmds, pyNote, load, rs})
	} else {
		fmt.Printf("%s, %s; load average %s\n", started.Format("2006-01-02 15:04 MST"), machine(goCmd, g.cpu), load)
		fmt.Printf("multiproc: %s\n", strings.Join(goCmds, "; "))
		fmt.Println(pyNote)
		fmt.Printf("medians of %d runs; ratio: how many times better multiproc is (CPython's time / multiproc's, or multiproc's rate / CPython's)\n\n", *count)
		table(os.Stdout, rs)
		fmt.Println("\nmultiproc against the machine's floor (the bare mechanism, measured the same way):")
		fmt.Println()
		compare(os.Stdout, floorColumns, floors, g, true)
		if *alternatives {
			fmt.Println("\nmultiproc against what a Go programmer would write instead (" + altPkg + "):")
			fmt.Println()
			compare(os.Stdout, altColumns, alts, g, false)
		}
	}
	if failed {
		os.Exit(1)
	}
}

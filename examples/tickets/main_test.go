package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

// run runs the example (exampletest.Run fails the test if it leaves a
// process behind).
func run(t *testing.T, args ...string) string {
	t.Helper()
	out := exampletest.Run(t, ".", args...)
	return out
}

var (
	headerLine = regexp.MustCompile(`^(\d+) buyers, (\d+) attempts? each, rush for (\d+) tickets; each sale takes \S+ \(in memory, after the reservation\); buyers in (\d+) processes$`)
	buyerLine  = regexp.MustCompile(`^buyer (\d+) \(pid (\d+)\) bought (\d+) of (\d+): (?:sold out|tickets? ([\d ]+))$`)
	tableHead  = regexp.MustCompile(`^strategy +buyers +tickets +sold +oversold +left in db +elapsed +attempts/s$`)
	tableRow   = regexp.MustCompile(`^(unsafe|lock|queue|memory) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\S+) +(\d+)$`)
	noteLine   = regexp.MustCompile(`^(unsafe|lock|queue|memory): (\d+) sold from a stock of (\d+) \((\d+) oversold\); (\d+) tickets? sold more than once \(ticket (\d+) to (\d+) buyers\); the database says (\d+) left: (-?\d+) of the (\d+) sales were overwritten$`)
)

// outcome is a buyer's -v line.
type outcome struct {
	buyer, pid, bought, attempts int
	tickets                      []int
}

// row is a strategy's line of the table; note its explanation, if any.
type row struct {
	buyers, tickets, sold, oversold, left int
	elapsed                               time.Duration
}

type note struct{ sold, stock, oversold, shared, worst, worstCount, left, overwritten, sales int }

// output is the example's output, parsed.
type output struct {
	buyers, attempts, tickets, procs int
	order                            []string             // strategies, in the table's order
	lines                            map[string][]outcome // -v lines, by strategy
	rows                             map[string]row
	notes                            map[string]note
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// parse parses everything the example prints and fails on anything else:
// the header, with -v a section of buyer lines per strategy, the table,
// and notes.
func parse(t *testing.T, out string) output {
	t.Helper()
	o := output{lines: map[string][]outcome{}, rows: map[string]row{}, notes: map[string]note{}}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	m := headerLine.FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("first line %q is not the header:\n%s", lines[0], out)
	}
	o.buyers, o.attempts, o.tickets, o.procs = atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3]), atoi(t, m[4])
	section := ""
	for i, l := range lines[1:] {
		switch name, ok := strings.CutSuffix(l, ":"); {
		case ok && slices.Contains(strategies, name):
			section = name
		case buyerLine.MatchString(l):
			m := buyerLine.FindStringSubmatch(l)
			if section == "" {
				t.Fatalf("line %d: %q before any strategy's section", i+2, l)
			}
			b := outcome{buyer: atoi(t, m[1]), pid: atoi(t, m[2]), bought: atoi(t, m[3]), attempts: atoi(t, m[4])}
			for _, f := range strings.Fields(m[5]) {
				b.tickets = append(b.tickets, atoi(t, f))
			}
			o.lines[section] = append(o.lines[section], b)
		case l == "" || tableHead.MatchString(l):
		case tableRow.MatchString(l):
			m := tableRow.FindStringSubmatch(l)
			o.order = append(o.order, m[1])
			el, err := time.ParseDuration(m[7])
			if err != nil {
				t.Fatalf("elapsed %q: %v", m[7], err)
			}
			o.rows[m[1]] = row{atoi(t, m[2]), atoi(t, m[3]), atoi(t, m[4]), atoi(t, m[5]), atoi(t, m[6]), el}
		case noteLine.MatchString(l):
			m := noteLine.FindStringSubmatch(l)
			var n [9]int
			for j := range n {
				n[j] = atoi(t, m[j+2])
			}
			o.notes[m[1]] = note{n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8]}
		default:
			t.Fatalf("line %d: unexpected %q:\n%s", i+2, l, out)
		}
	}
	return o
}

// check checks one strategy's lines, row and note against each other and
// against what the strategy promises. It returns the row.
func check(t *testing.T, o output, strategy string, verbose bool) row {
	t.Helper()
	r, ok := o.rows[strategy]
	if !ok {
		t.Fatalf("%s: no row in the table", strategy)
	}
	if r.buyers != o.buyers || r.tickets != o.tickets || r.oversold != max(r.sold-o.tickets, 0) || r.left < 0 || r.left > o.tickets {
		t.Errorf("%s: row %+v, with %d buyers and %d tickets", strategy, r, o.buyers, o.tickets)
	}
	safe := strategy != "unsafe"
	if want := min(o.buyers*o.attempts, o.tickets); safe && (r.sold != want || r.left != o.tickets-r.sold) {
		t.Errorf("%s: sold %d, %d left in the database; want %d sold, %d left", strategy, r.sold, r.left, want, o.tickets-want)
	}
	// Without coordination the database forgets sales, but every count it
	// holds was written by a buyer who read one more: going back from the
	// final count to the stock takes that many distinct sales. A refusal
	// means someone read 0: the stock had been sold at least once over.
	if !safe && r.sold < o.tickets-r.left {
		t.Errorf("%s: sold %d, but the database went from %d to %d", strategy, r.sold, o.tickets, r.left)
	}

	owners := map[int]int{} // ticket number -> buyers
	if verbose {
		lines := o.lines[strategy]
		seen := make([]bool, o.buyers)
		pids := map[int]bool{}
		sold, refused := 0, false
		for _, b := range lines {
			if b.buyer < 0 || b.buyer >= o.buyers || seen[b.buyer] {
				t.Errorf("%s: buyer %d out of range or reported twice", strategy, b.buyer)
				continue
			}
			seen[b.buyer] = true
			pids[b.pid] = true
			if b.attempts != o.attempts || b.bought != len(b.tickets) || b.bought > b.attempts {
				t.Errorf("%s: buyer %d: %+v, with %d attempts", strategy, b.buyer, b, o.attempts)
			}
			refused = refused || b.bought < b.attempts
			sold += b.bought
			for _, n := range b.tickets {
				if n < 1 || n > o.tickets {
					t.Errorf("%s: buyer %d bought ticket %d of %d", strategy, b.buyer, n, o.tickets)
				}
				owners[n]++
			}
		}
		if len(lines) != o.buyers {
			t.Errorf("%s: %d buyers reported, want %d", strategy, len(lines), o.buyers)
		}
		if len(pids) != o.procs {
			t.Errorf("%s: buyers ran in %d processes, the header says %d", strategy, len(pids), o.procs)
		}
		if sold != r.sold {
			t.Errorf("%s: the buyers' lines add up to %d sold, the table says %d", strategy, sold, r.sold)
		}
		if refused && r.sold < o.tickets {
			t.Errorf("%s: a buyer was refused, but only %d of %d tickets were sold", strategy, r.sold, o.tickets)
		}
		// Under coordination the tickets sold are numbered from the stock
		// down, each sold once.
		for n := o.tickets; safe && n > o.tickets-r.sold; n-- {
			if owners[n] != 1 {
				t.Errorf("%s: ticket %d sold to %d buyers", strategy, n, owners[n])
			}
		}
	}

	n, explained := o.notes[strategy]
	overwritten := r.sold - (o.tickets - r.left)
	if safe && explained {
		t.Errorf("%s: explained as if it went wrong: %+v", strategy, n)
	}
	if !safe && explained {
		if n.sold != r.sold || n.stock != o.tickets || n.oversold != r.oversold || n.left != r.left ||
			n.overwritten != overwritten || n.sales != r.sold {
			t.Errorf("%s: note %+v disagrees with row %+v", strategy, n, r)
		}
		if verbose {
			shared, worst, worstCount := 0, 0, 0
			for num, c := range owners {
				if c > 1 {
					shared++
				}
				if c > worstCount || c == worstCount && num > worst {
					worst, worstCount = num, c
				}
			}
			if n.shared != shared || n.worst != worst || n.worstCount != worstCount {
				t.Errorf("%s: note says %d tickets sold more than once, ticket %d to %d; the lines say %d, ticket %d to %d",
					strategy, n.shared, n.worst, n.worstCount, shared, worst, worstCount)
			}
		}
	}
	if !safe && !explained && overwritten != 0 {
		t.Errorf("%s: %d sales overwritten and no note", strategy, overwritten)
	}
	if !safe {
		t.Logf("%s: %d sold from %d, %d oversold, %d overwritten (not checked: it depends on timing)", strategy, r.sold, o.tickets, r.oversold, overwritten)
	}
	return r
}

// dbCount reads the count in the database file.
func dbCount(t *testing.T, path string) int {
	t.Helper()
	n, err := readDB(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStrategies runs each strategy on its own with many buyers for few
// tickets, in fewer processes than buyers, and checks every buyer's line,
// the table and the database file.
func TestStrategies(t *testing.T) {
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "ticket.json")
			out := run(t, "-strategy="+strategy, "-buyers=40", "-tickets=10", "-latency=1ms-5ms", "-procs=4", "-v", "-db="+db)
			o := parse(t, out)
			if o.buyers != 40 || o.tickets != 10 || o.attempts != 1 || o.procs != 4 || !slices.Equal(o.order, []string{strategy}) {
				t.Fatalf("not the run asked for:\n%s", out)
			}
			r := check(t, o, strategy, true)
			if got := dbCount(t, db); got != r.left {
				t.Errorf("the database says %d left, the table %d", got, r.left)
			}
		})
	}
}

// TestAll runs the four strategies in one program, with several attempts
// per buyer: more attempts than tickets, then fewer (everyone gets what
// they asked for), with buyers spread unevenly over processes.
func TestAll(t *testing.T) {
	for _, c := range []struct{ buyers, attempts, tickets, procs int }{
		{40, 3, 100, 6},
		{25, 2, 100, 7},
	} {
		t.Run(fmt.Sprintf("%dx%d-for-%d", c.buyers, c.attempts, c.tickets), func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "ticket.json")
			out := run(t, fmt.Sprint("-buyers=", c.buyers), fmt.Sprint("-attempts=", c.attempts), fmt.Sprint("-tickets=", c.tickets),
				fmt.Sprint("-procs=", c.procs), "-latency=1ms-3ms", "-v", "-db="+db)
			o := parse(t, out)
			if !slices.Equal(o.order, strategies) || o.procs != c.procs {
				t.Fatalf("want a row per strategy, in order, and %d processes:\n%s", c.procs, out)
			}
			for _, s := range strategies {
				check(t, o, s, true)
			}
			// The database is left as the last strategy, memory, left it.
			if got, want := dbCount(t, db), o.rows["memory"].left; got != want {
				t.Errorf("the database says %d left, memory's row %d", got, want)
			}
		})
	}
}

// TestDefault is `go run ./examples/tickets` with a shorter latency: the
// four strategies, ten buyers, five tickets, and nothing on stdout but the
// header, the table and notes (no progress line: stderr is not a terminal).
func TestDefault(t *testing.T) {
	out := run(t, "-latency=1ms-5ms")
	o := parse(t, out)
	if o.buyers != 10 || o.tickets != 5 || o.attempts != 1 || !slices.Equal(o.order, strategies) {
		t.Fatalf("not the default run:\n%s", out)
	}
	for _, s := range strategies {
		check(t, o, s, false)
	}
}

// TestScale is the memory strategy's rush at scale: 1,000 buyers making
// 100 attempts each, 100,000 purchases for 60,000 tickets, with no
// simulated latency. Every ticket is sold exactly once and every buyer
// reports.
func TestScale(t *testing.T) {
	db := filepath.Join(t.TempDir(), "ticket.json")
	out := run(t, "-strategy=memory", "-buyers=1000", "-attempts=100", "-tickets=60000", "-latency=0", "-v", "-db="+db)
	o := parse(t, out)
	if o.buyers != 1000 || o.attempts != 100 || o.tickets != 60000 {
		t.Fatalf("not the run asked for:\n%.2000s", out)
	}
	if r := check(t, o, "memory", true); r.sold != 60000 || r.left != 0 {
		t.Errorf("sold %d, %d left", r.sold, r.left)
	}
	if got := dbCount(t, db); got != 0 {
		t.Errorf("the database says %d left", got)
	}
}

// TestBadFlags: a mistake on the command line is an error, not a rush.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-strategy=optimistic"}, {"-buyers=0"}, {"-latency=5ms-1ms"}} {
		out, err := exampletest.RunStatus(t, ".", args...)
		if err == nil || out != "" {
			t.Errorf("%v: exit %v, stdout %q; want a failure and no output", args, err, out)
		}
	}
}

// TestInterrupted: Ctrl-C or SIGTERM in the middle of the memory strategy's
// rush stops the buyers, and the writer still writes the count back: the
// database holds the stock less what was sold. The program exits with the
// conventional status and leaves no process behind.
func TestInterrupted(t *testing.T) {
	bin := exampletest.Build(t, ".")
	for _, c := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(c.sig.String(), func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "ticket.json")
			// Far more tickets and attempts than can be sold before the
			// signal: it comes in the middle of the rush.
			const tickets = 100_000_000
			cmd := exec.Command(bin, "-strategy", "memory", "-buyers", "4", "-procs", "4",
				"-tickets", strconv.Itoa(tickets), "-attempts", "25000000", "-latency", "0", "-db", db)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			waited := false
			defer func() {
				if !waited {
					cmd.Process.Kill()
					<-done
					exampletest.CheckLeftBehind(t)
				}
			}()
			awaitSelling(t, cmd.Process.Pid, 4)
			cmd.Process.Signal(c.sig)
			select {
			case <-done:
				waited = true
			case <-time.After(time.Minute):
				t.Fatal("the example did not exit within a minute of the signal")
			}
			exampletest.CheckLeftBehind(t)
			if stderr.Len() > 0 {
				t.Logf("stderr:\n%s", stderr.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != c.code {
				t.Errorf("exit status %d, want %d\n%s", code, c.code, stdout.String())
			}
			m := regexp.MustCompile(`(?m)^memory: interrupted \(mp: \w+ signal received\): (\d+) sold; the database says (\d+) left$`).FindStringSubmatch(stdout.String())
			if m == nil {
				t.Fatalf("no interruption line in:\n%s", stdout.String())
			}
			sold, left := atoi(t, m[1]), atoi(t, m[2])
			if sold == 0 || sold >= tickets {
				t.Errorf("%d sold: the signal did not come in the middle of the rush", sold)
			}
			if got := dbCount(t, db); got != left || left != tickets-sold {
				t.Errorf("the database holds %d, the example says %d left of %d after %d sold", got, left, tickets, sold)
			}
		})
	}
}

// awaitSelling waits until the n children of pid have used half a second
// of CPU time between them: buyers use none while they wait for sales to
// open, and start-up takes a few milliseconds.
func awaitSelling(t *testing.T, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		// Children are the children of the thread that forked them.
		var kids []string
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			kids = append(kids, strings.Fields(string(b))...)
		}
		ticks := 0
		for _, k := range kids {
			st, _ := os.ReadFile("/proc/" + k + "/stat")
			s := string(st)
			if i := strings.LastIndexByte(s, ')'); i >= 0 {
				f := strings.Fields(s[i+1:])
				if len(f) > 13 {
					u, _ := strconv.Atoi(f[11])
					sy, _ := strconv.Atoi(f[12])
					ticks += u + sy
				}
			}
		}
		if len(kids) >= n && ticks >= 50 { // USER_HZ is 100
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the buyers did not start selling within a minute")
}

// TestSameLatency: every strategy pays the latency for each sale, so that
// the table compares where they pay it, not whether: each rush takes at
// least one latency, and the lock's and the queue's, which pay it inside
// their critical section, at least one per ticket sold. (Lower bounds that
// sleeping guarantees, whatever the machine's load.)
func TestSameLatency(t *testing.T) {
	const latency = 40 * time.Millisecond
	out := run(t, "-buyers=6", "-tickets=3", "-procs=3", "-latency="+latency.String())
	o := parse(t, out)
	for _, s := range strategies {
		r := o.rows[s]
		least := latency
		if s == "lock" || s == "queue" {
			least = time.Duration(r.sold) * latency
		}
		if r.sold == 0 || r.elapsed < least {
			t.Errorf("%s: %d sold in %v, want at least %v: a sale did not pay the latency", s, r.sold, r.elapsed, least)
		}
	}
}

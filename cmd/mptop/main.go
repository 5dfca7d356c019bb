// Command mptop shows the status of a running multiproc program in a
// terminal, refreshed in place: its process tree, pools, queues, pipes,
// locks and semaphores, as its status page does in a browser.
//
//	MULTIPROC_STATUS=127.0.0.1:6060 ./myprogram &
//	go run github.com/multiproc/mp/cmd/mptop -addr 127.0.0.1:6060
//
// It reads the program's /json (mp.StatusHandler, which MULTIPROC_STATUS
// serves). With -once, or when its output is not a terminal, it prints the
// view once and exits.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/multiproc/mp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6060", "the program's status address (MULTIPROC_STATUS), or a URL where StatusHandler is mounted")
	interval := flag.Duration("interval", time.Second, "refresh interval")
	once := flag.Bool("once", false, "print once and exit")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	_, err := unix.IoctlGetTermios(int(os.Stdout.Fd()), unix.TCGETS)
	tty := err == nil
	if err := run(ctx, statusURL(*addr), *interval, *once || !tty, tty, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mptop:", err)
		os.Exit(1)
	}
}

// statusURL makes the /json address of addr.
func statusURL(addr string) string {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimSuffix(addr, "/") + "/json"
}

func run(ctx context.Context, url string, interval time.Duration, once, clear bool, out io.Writer) error {
	for {
		st, err := fetch(ctx, url)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var b strings.Builder
		if clear {
			b.WriteString("\x1b[H\x1b[2J")
		}
		render(&b, st)
		io.WriteString(out, b.String())
		if once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func fetch(ctx context.Context, url string) (mp.Status, error) {
	var st mp.Status
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func render(w io.Writer, st mp.Status) {
	a := st.Arena
	fmt.Fprintf(w, "multiproc  %s  arena %s of %s, %d primitives\n\n", st.Time.Format("15:04:05"),
		bytes(int64(a.InUse)), bytes(int64(a.Size)), a.Objects)

	fmt.Fprintln(w, "PROCESSES")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tPID\tSTATE\tCPU\tRSS")
	depth := map[int]int{}
	for _, p := range st.Processes {
		d, ok := depth[p.Parent]
		if ok {
			d++
		}
		depth[p.Pid] = d
		fmt.Fprintf(tw, "  %s%s\t%d\t%s\t%s\t%s\n", strings.Repeat("  ", d), p.Name, p.Pid, p.State, p.CPU.Round(10*time.Millisecond), bytes(p.RSS))
	}
	tw.Flush()
	if n := len(st.Ended); n > 0 {
		fmt.Fprintln(w, "  recently ended:")
		for _, p := range st.Ended[max(0, n-5):] {
			fmt.Fprintf(w, "    %s (pid %d) %s at %s\n", p.Name, p.Pid, p.Exit, p.Ended.Format("15:04:05"))
		}
	}

	for _, p := range st.Pools {
		kind := "process"
		if p.Threads {
			kind = "thread"
		}
		fmt.Fprintf(w, "\nPOOL %s (%s pool of %d)\n", p.Name, kind, p.Size)
		fmt.Fprintf(w, "  queued %d  running %d  done %d  failed %d  timed out %d  retried %d  lost %d  restarts %d\n",
			p.Queued, p.Running, p.Done, p.Failed, p.TimedOut, p.Retried, p.Lost, p.Restarts)
		if p.Latency.Count > 0 {
			fmt.Fprintf(w, "  latency p50 %v  p90 %v  p99 %v  max %v (%d tasks)\n", p.Latency.P50, p.Latency.P90, p.Latency.P99, p.Latency.Max, p.Latency.Count)
		}
		if p.LastRestart != "" {
			fmt.Fprintf(w, "  last restart: %s\n", p.LastRestart)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, wk := range p.Workers {
			task := "idle"
			if wk.Task != "" {
				task = fmt.Sprintf("%s for %v", wk.Task[strings.LastIndex(wk.Task, "/")+1:], wk.TaskAge.Round(time.Millisecond))
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\n", wk.Name, wk.Pid, task)
		}
		tw.Flush()
	}

	if len(st.Queues) > 0 {
		fmt.Fprintln(w, "\nQUEUES AND PIPES")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "NAME\tKIND\tLEN\tCAP\tPUTS\tGETS\tBLOCKED\tLOST\t")
		for _, q := range st.Queues {
			capacity := "-"
			if q.Cap > 0 {
				capacity = fmt.Sprint(q.Cap)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d/%d\t%d\t\n", q.Label(), q.Kind, q.Len, capacity, q.Puts, q.Gets, q.BlockedGets, q.BlockedPuts, q.Lost)
		}
		tw.Flush()
	}

	if len(st.Locks)+len(st.Semaphores) > 0 {
		fmt.Fprintln(w, "\nLOCKS AND SEMAPHORES")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, l := range st.Locks {
			state := "free"
			if l.Held {
				state = fmt.Sprintf("held by %s (pid %d)", cmp.Or(l.HolderName, "?"), l.HolderPid)
				if l.Waiting {
					state += ", contended"
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\trecovered %d\n", l.Label(), l.Kind, state, l.Recovered)
		}
		for _, s := range st.Semaphores {
			var held []string
			for pid, n := range s.HeldBy {
				held = append(held, fmt.Sprintf("%d by %d", n, pid))
			}
			slices.Sort(held)
			fmt.Fprintf(tw, "  %s\t%s\t%d free, %d waiting\t%s\n", s.Label(), s.Kind, s.Value, s.Waiting, strings.Join(held, ", "))
		}
		tw.Flush()
	}
	if len(st.Collections) > 0 {
		fmt.Fprintln(w, "\nDICTS AND LISTS")
		for _, c := range st.Collections {
			fmt.Fprintf(w, "  %s\t%s\t%d entries\n", c.Label(), c.Kind, c.Len)
		}
	}
}

func bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}

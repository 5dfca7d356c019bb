// Heartbeat is seed 001's monitored host, made real. A daemonic process
// reports "I am OK" every -interval on a Queue while the main work (packing
// the server logs, an ordinary child) runs; it ends with the main work, as
// a daemon does. A monitor in the main process counts the beats, and
// declares the host dead once -misses beats in a row have not come.
//
// With -kill-after n, the reporting process is killed with SIGKILL
// (Process.Kill) once the monitor has heard n beats, and the monitor is
// seen noticing: one "missed" line per beat that does not come, then the
// verdict.
//
// The transport is a Queue rather than a Pipe on purpose: a Pipe reports
// the death of its holder by itself (io.EOF), but a heartbeat is there to
// catch hosts that hang as well as hosts that die, and only the missing
// beats reveal a hang.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/multiproc/mp"
)

// Beat is one "I am OK" from a host.
type Beat struct {
	Host int
	Seq  int // 1, 2, ...: a gap would show a lost beat
	Pid  int
	Msg  string
}

// report is the daemonic reporter: it beats until it is terminated with
// its parent's main work, or killed.
func report(beats *mp.Queue[Beat], host int, every time.Duration) error {
	ctx := context.Background()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		// Put waits if the monitor is 64 beats behind: a beat is never
		// dropped, so the monitor can number what it hears.
		if err := beats.Put(ctx, Beat{Host: host, Seq: seq, Pid: os.Getpid(), Msg: "I am OK"}); err != nil {
			return err
		}
		<-tick.C
	}
}

// work is the main work of seed 001: it runs as long as it runs, and the
// reporter lives exactly as long.
func work(d time.Duration) {
	fmt.Printf("work: packing the server logs into a file (%v)\n", d)
	time.Sleep(d)
	fmt.Println("work: logs packed")
}

func init() { mp.Register(report, work) }

// monitor listens for beats until ctx ends or the host is declared dead;
// it returns the number of beats heard and whether the host was declared
// dead.
//
// A beat is due an interval after the last one, and counted missed half an
// interval after it was due; each further interval without a beat is one
// more miss. Misses are counted one per wait that found the queue empty,
// never computed from elapsed time, so a monitor that is itself held up
// finds the beats that came meanwhile instead of counting them missed, and
// never counts two misses for one wait.
func monitor(ctx context.Context, beats *mp.Queue[Beat], host int, interval time.Duration, misses int, onBeat func(Beat)) (heard int, dead bool) {
	var last time.Time // when the last beat was heard; zero until the first
	var lastSeq int
	missed := 0
	for {
		wait, cancel := ctx, context.CancelFunc(func() {})
		if !last.IsZero() {
			// Before the first beat the host is starting, not dead: the
			// main process watches the reporter's start instead.
			wait, cancel = context.WithDeadline(ctx, last.Add(interval/2+time.Duration(missed+1)*interval))
		}
		b, err := beats.Get(wait)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// Beats that came while this goroutine was not running are
			// not missed beats.
			b, err = beats.TryGet()
			if errors.Is(err, mp.ErrEmpty) {
				missed++
				fmt.Printf("missed beat %d of %d from host %d (last heard: beat %d)\n", missed, misses, host, lastSeq)
				if missed == misses {
					fmt.Printf("host %d declared dead: %d beats missed in a row, last heard %v ago\n",
						host, misses, time.Since(last).Round(time.Millisecond))
					return heard, true
				}
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return heard, false
			}
			fmt.Fprintln(os.Stderr, "heartbeat: monitor:", err)
			os.Exit(1)
		}
		heard++
		last, lastSeq = time.Now(), b.Seq
		if missed > 0 {
			fmt.Printf("host %d is back after %d missed beats\n", host, missed)
			missed = 0
		}
		fmt.Printf("beat %d: host %d (pid %d) ... %s\n", b.Seq, b.Host, b.Pid, b.Msg)
		onBeat(b)
	}
}

func main() {
	mp.Init()
	interval := flag.Duration("interval", 800*time.Millisecond, "time between the host's beats")
	misses := flag.Int("misses", 3, "beats missed in a row after which the monitor declares the host dead")
	length := flag.Duration("work", 3*time.Second, "how long the main work runs")
	killAfter := flag.Int("kill-after", 0, "kill the reporting process with SIGKILL once this many beats were heard (0: never)")
	flag.Parse()
	if *interval <= 0 || *misses < 1 || *length < 0 || *killAfter < 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "heartbeat: -interval must be positive, -misses at least 1, -work and -kill-after not negative; no arguments")
		os.Exit(2)
	}
	const host = 1
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "heartbeat:", err)
		mp.Shutdown()
		os.Exit(1)
	}

	fmt.Printf("host %d beats every %v; the monitor declares it dead after %d missed beats", host, *interval, *misses)
	if *killAfter > 0 {
		fmt.Printf("; its reporter is killed after %d beats", *killAfter)
	}
	fmt.Println()

	beats, err := mp.NewQueue[Beat](64)
	if err != nil {
		fail(err)
	}
	reporter := mp.NewProcess(report, beats, host, *interval)
	reporter.Daemon = true
	if err := reporter.Start(); err != nil {
		fail(err)
	}

	up := make(chan struct{})
	killed := false
	onBeat := func(b Beat) {
		if b.Seq == 1 {
			close(up)
		}
		if b.Seq == *killAfter {
			fmt.Printf("killing host %d's reporter (pid %d) with SIGKILL after %d beats\n", host, reporter.Pid(), b.Seq)
			if err := reporter.Kill(); err != nil {
				fail(err)
			}
			// Reaped, it can send nothing more: every beat heard from
			// here on was sent before the kill.
			reporter.Join(context.Background())
			killed = true
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	type verdict struct {
		heard int
		dead  bool
	}
	done := make(chan verdict, 1)
	go func() {
		heard, dead := monitor(ctx, beats, host, *interval, *misses, onBeat)
		done <- verdict{heard, dead}
	}()

	// The main work starts once the host is up, so that it is monitored
	// from its first moment however slowly the reporter starts.
	reporterEnded := make(chan error, 1)
	go func() { reporterEnded <- reporter.Join(context.Background()) }()
	select {
	case <-up:
	case err := <-reporterEnded:
		stop()
		fail(fmt.Errorf("the reporter ended before its first beat: %v", err))
	}
	worker := mp.NewProcess(work, *length)
	if err := worker.Start(); err != nil {
		fail(err)
	}
	if err := worker.Join(context.Background()); err != nil {
		fail(err)
	}

	// A kill is a demonstration of the monitor: wait for its verdict even
	// if the main work ended first. Otherwise the monitor ends with the
	// main work, and so does the daemon.
	var v verdict
	if *killAfter > 0 {
		v = <-done
	} else {
		stop()
		v = <-done
	}
	stop()
	state := "alive"
	if v.dead {
		state = "declared dead"
	}
	fmt.Printf("main work done: %d beats heard, host %d %s\n", v.heard, host, state)

	// What a deferred mp.Shutdown() does at the end of main, made explicit
	// so that the reporter's end can be printed: a daemon still running is
	// terminated.
	mp.Shutdown()
	code, _ := reporter.ExitCode()
	how := "terminated by Shutdown: a daemon ends with the main work"
	if killed {
		how = "killed"
	}
	fmt.Printf("reporter %s exit code %d (%s)\n", reporter.Name, code, how)
}

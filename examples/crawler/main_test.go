package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

var (
	mainLine = regexp.MustCompile(`^(\d+) main process, serving (http://127\.0\.0\.1:\d+)$`)
	pidLine  = regexp.MustCompile(`^(\d+) (worker ready|GET|done|PARSE|FAILED)(?: (\S+?))?(?:: (.*))?$`)
)

// TestCrawler checks the crawl from the program's own records: db.txt
// holds exactly the good pages, each parsed in the main process after a
// worker fetched it; the 404 and the slow page are reported by the error
// callback; the worker stuck on the slow page is killed (it never prints
// again) and replaced while pages are left. The program closes the pool
// right after submitting, as the seed does.
func TestCrawler(t *testing.T) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprint("workers=", workers), func(t *testing.T) {
			dbPath := filepath.Join(t.TempDir(), "db.txt")
			// What a previous run left must not survive.
			if err := os.WriteFile(dbPath, []byte("stale\tline\t0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out := exampletest.Run(t, ".", "-db="+dbPath, fmt.Sprint("-workers=", workers), "-work=10ms", "-timeout=1s")
			base := checkOutput(t, out, workers, dbPath)
			if base != "" {
				checkDB(t, dbPath, base)
			}
		})
	}
}

// checkOutput checks the program's lines and returns the site's base URL.
func checkOutput(t *testing.T, out string, workers int, dbPath string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	m := mainLine.FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("first line %q, want the main process's:\n%s", lines[0], out)
	}
	mainPid, base := m[1], m[2]
	slowURL, missingURL := base+slowPath, base+missingPath
	if want := fmt.Sprintf("%d pages recorded in %s, 2 failed", len(site), dbPath); lines[len(lines)-1] != want {
		t.Errorf("last line %q, want %q:\n%s", lines[len(lines)-1], want, out)
	}

	var ready []string               // worker pids, in the order they started
	fetchedBy := map[string]string{} // url -> pid of its GET
	done := map[string]bool{}        // url -> its worker finished it
	parsed := map[string]bool{}
	failures := map[string]string{} // url -> error
	slowPid, afterSlow := "", ""    // the worker on the slow page; a line it printed after that
	readyAt := map[string]int{}     // worker pid -> index of its ready line
	slowAt := -1                    // index of the slow page's GET line
	for i, l := range lines[1 : len(lines)-1] {
		m := pidLine.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("line %d: unexpected %q", i+2, l)
			continue
		}
		pid, what, url, msg := m[1], m[2], m[3], m[4]
		if slowPid != "" && pid == slowPid {
			afterSlow = l
		}
		inMain := what == "PARSE" || what == "FAILED"
		if (pid == mainPid) != inMain {
			t.Errorf("line %d: %q: %s should run in the main process (%s): %v", i+2, l, what, mainPid, inMain)
		}
		switch what {
		case "worker ready":
			if slices.Contains(ready, pid) {
				t.Errorf("worker %s started twice", pid)
			}
			ready = append(ready, pid)
			readyAt[pid] = i
		case "GET":
			if !slices.Contains(ready, pid) {
				t.Errorf("line %d: %q: worker %s fetched before it was ready", i+2, l, pid)
			}
			if _, dup := fetchedBy[url]; dup {
				t.Errorf("%s fetched twice", url)
			}
			fetchedBy[url] = pid
			if url == slowURL {
				slowPid, slowAt = pid, i
			}
		case "done":
			if fetchedBy[url] != pid || done[url] {
				t.Errorf("line %d: %q: fetched by %q, done already: %v", i+2, l, fetchedBy[url], done[url])
			}
			done[url] = true
		case "PARSE":
			// The callback gets the page after its worker is done with it.
			if !done[url] || parsed[url] {
				t.Errorf("line %d: %q: done %v, parsed already %v", i+2, l, done[url], parsed[url])
			}
			parsed[url] = true
		case "FAILED":
			if _, dup := failures[url]; dup {
				t.Errorf("%s failed twice", url)
			}
			failures[url] = msg
		}
	}

	for path := range site {
		if url := base + path; !parsed[url] {
			t.Errorf("%s was not parsed", url)
		}
	}
	if len(parsed) != len(site) {
		t.Errorf("%d pages parsed, want %d", len(parsed), len(site))
	}
	if len(failures) != 2 {
		t.Errorf("failures %q, want the missing and the slow page", failures)
	}
	if msg, ok := failures[missingURL]; !ok || msg != "the server answered 404 Not Found" {
		t.Errorf("%s failed with %q (reported: %v), want the 404", missingURL, msg, ok)
	}
	if msg, ok := failures[slowURL]; !ok || msg != "timed out, worker killed: context deadline exceeded" {
		t.Errorf("%s failed with %q (reported: %v), want the timeout", slowURL, msg, ok)
	}
	switch {
	case slowPid == "":
		t.Errorf("nobody fetched %s", slowURL)
	case done[slowURL]:
		t.Errorf("%s was done", slowURL)
	case afterSlow != "":
		t.Errorf("worker %s was not killed on %s: it printed %q", slowPid, slowURL, afterSlow)
	}
	// The replacement: a worker started after the slow fetch began, in
	// place of the killed one, which was one of the originals. It is
	// needed when pages are left to fetch: always with one worker (the
	// pages after the slow one wait in its pipe); with more, the others
	// are usually done by then, and a closed pool with nothing left
	// starts no worker.
	switch {
	case len(ready) < workers || len(ready) > workers+1:
		t.Errorf("workers started: %v, want the pool's %d and at most one in place of the killed one", ready, workers)
	case workers == 1 && len(ready) != 2:
		t.Errorf("workers started: %v, want a second one for the pages after the slow one", ready)
	case len(ready) == workers+1:
		if slowPid != "" && !slices.Contains(ready[:workers], slowPid) {
			t.Errorf("the worker killed on the slow page (%s) is not one of the pool's first %d: %v", slowPid, workers, ready)
		}
		if readyAt[ready[workers]] < slowAt {
			t.Errorf("worker %s started before the slow fetch, not in place of its worker", ready[workers])
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
	return base
}

// checkDB checks that db.txt holds exactly the good pages, with their
// titles and lengths, in any order.
func checkDB(t *testing.T, dbPath, base string) {
	t.Helper()
	b, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for path, title := range site {
		want = append(want, fmt.Sprintf("%s\t%s\t%s", base+path, title, strconv.Itoa(len(page(title)))))
	}
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("db.txt holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Crawler is the seeds' crawler (seed 003): pool workers fetch pages, and
// a callback in the main process parses each page as soon as it arrives
// and appends a line for it (URL, title, length) to a db.txt file. The
// slow part, waiting for the network, is done in the pool; the main
// process only handles results, one at a time, in the order they come in.
//
// There is no internet here, so the main process serves a small site on
// 127.0.0.1 itself. Two of its URLs go wrong, to show what Python's pool
// leaves to the programmer: one answers 404, so its task returns an error
// and the error callback reports it; the other never answers, and the
// pool's task timeout kills the worker stuck on it, fails the task with
// context.DeadlineExceeded and, if pages are left to fetch, starts a new
// worker in its place. As in the seed, the main process submits every
// page, then closes the pool and joins it: Close means no new work, and
// what was submitted is still fetched and parsed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/multiproc/mp"
)

// site is what the local server serves: path -> title. Each page's body
// is page(title).
var site = map[string]string{
	"/":         "Home",
	"/about":    "About us",
	"/blog":     "The blog",
	"/docs":     "Documentation",
	"/download": "Downloads",
}

const (
	missingPath = "/missing" // answers 404 Not Found
	slowPath    = "/slow"    // never answers
)

func page(title string) string {
	return fmt.Sprintf("<html><head><title>%s</title></head><body><h1>%s</h1><p>Welcome to %s.</p></body></html>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(title))
}

// Page is a fetched page, as it travels from a worker to the main
// process.
type Page struct {
	URL  string
	Body string
}

// client is the worker's own HTTP client, made by setup.
var client *http.Client

// setup runs once in each worker before its first task (Python's
// initializer). It prints, so that the output shows the pool starting a
// worker in place of the one it killed.
func setup() {
	// Like the seed's requests.get, a fetch has no timeout of its own: the
	// pool's task timeout is what ends a fetch that never finishes.
	client = &http.Client{}
	fmt.Printf("%d worker ready\n", os.Getpid())
}

// fetch runs in a worker: it downloads url, taking d over it as a real
// site would.
func fetch(url string, d time.Duration) (Page, error) {
	pid := os.Getpid()
	fmt.Printf("%d GET %s\n", pid, url)
	resp, err := client.Get(url)
	if err != nil {
		return Page{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Page{}, fmt.Errorf("reading the page: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Page{}, fmt.Errorf("the server answered %s", resp.Status)
	}
	time.Sleep(d)
	fmt.Printf("%d done %s\n", pid, url)
	return Page{URL: url, Body: string(body)}, nil
}

func init() { mp.Register(setup, fetch) }

var titleRe = regexp.MustCompile(`(?is)<title>(.*?)</title>`)

// db is the file the callback writes to. Callbacks run one at a time, so
// it needs no lock of its own.
type db struct {
	f     *os.File
	pages int
	err   error // the first write error
}

// parse is the callback: it runs in the main process.
func (d *db) parse(p Page) {
	fmt.Printf("%d PARSE %s\n", os.Getpid(), p.URL)
	title := "(no title)"
	if m := titleRe.FindStringSubmatch(p.Body); m != nil {
		title = html.UnescapeString(m[1])
	}
	if _, err := fmt.Fprintf(d.f, "%s\t%s\t%d\n", p.URL, title, len(p.Body)); err != nil {
		if d.err == nil {
			d.err = err
		}
		return
	}
	d.pages++
}

// serve starts the site on a free port of 127.0.0.1 and returns its base
// URL and a function that stops it.
func serve() (base string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	// Closed before the server is, so that a request to the slow page
	// still waiting then ends too.
	quit := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		title, ok := site[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, page(title))
	})
	mux.HandleFunc(slowPath, func(w http.ResponseWriter, r *http.Request) {
		// Holds the request until the client goes away, as the worker
		// does when it is killed.
		select {
		case <-r.Context().Done():
		case <-quit:
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	return "http://" + ln.Addr().String(), func() {
		close(quit)
		srv.Close()
		wg.Wait()
	}, nil
}

// fail reports err and exits with status 1, killing the pool first so
// that nothing is left waiting for its workers.
func fail(pool *mp.Pool, err error) {
	fmt.Fprintln(os.Stderr, "crawler:", err)
	if pool != nil {
		pool.Terminate()
	}
	mp.Shutdown()
	os.Exit(1)
}

func main() {
	mp.Init()
	defer mp.Shutdown()
	dbPath := flag.String("db", filepath.Join(os.TempDir(), "crawler-db.txt"), "file the pages are recorded in (truncated first)")
	workers := flag.Int("workers", 2, "worker processes in the pool")
	taskTimeout := flag.Duration("timeout", time.Second, "longest a fetch may take before its worker is killed")
	d := flag.Duration("work", 100*time.Millisecond, "extra time each fetch takes")
	flag.Parse()
	if *workers < 1 || *taskTimeout <= 0 || *d < 0 {
		fail(nil, errors.New("-workers and -timeout must be positive, -work must not be negative"))
	}
	// Every wait below is bounded: a bug shows up as an error, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+*taskTimeout)
	defer cancel()

	// Started here, after mp.Init, and not in init: every worker runs this
	// same binary, and only the main process must serve the site.
	base, stop, err := serve()
	if err != nil {
		fail(nil, err)
	}
	defer stop()
	f, err := os.Create(*dbPath)
	if err != nil {
		fail(nil, err)
	}
	defer f.Close()
	out := &db{f: f}
	// Printed before the pool exists: its workers start printing at once.
	fmt.Printf("%d main process, serving %s\n", os.Getpid(), base)

	pool, err := mp.NewPool(*workers, mp.WithInitializer(setup), mp.WithTaskTimeout(*taskTimeout))
	if err != nil {
		fail(nil, err)
	}

	// The slow page is in the middle: the pages after it are fetched by
	// the other workers, or, with one worker, by the one the pool starts
	// in place of the one it kills.
	paths := []string{"/", "/about", missingPath, slowPath, "/blog", "/docs", "/download"}
	var failed []string
	results := make([]*mp.AsyncResult[Page], len(paths))
	for i, path := range paths {
		url := base + path
		results[i] = mp.ApplyAsync[Page](pool, fetch, []any{url, *d},
			mp.WithCallback(out.parse),
			mp.WithErrorCallback(func(err error) {
				// A timed-out task's error is the context's alone: which
				// URL it was is known here, from the closure.
				if errors.Is(err, context.DeadlineExceeded) {
					fmt.Printf("%d FAILED %s: timed out, worker killed: %v\n", os.Getpid(), url, err)
				} else {
					fmt.Printf("%d FAILED %s: %v\n", os.Getpid(), url, err)
				}
				failed = append(failed, url)
			}))
	}
	// As in the seed: no more work, then wait for the pool to finish what
	// it was given. Join returns once every task is done and every
	// callback has run.
	pool.Close()
	if err := pool.Join(ctx); err != nil {
		fail(pool, err)
	}
	for _, r := range results {
		if !r.Ready() {
			fail(pool, errors.New("a task was not done when Join returned"))
		}
	}
	if out.err != nil {
		fail(nil, fmt.Errorf("%s: %w", *dbPath, out.err))
	}
	if err := f.Close(); err != nil {
		fail(nil, err)
	}
	fmt.Printf("%d pages recorded in %s, %d failed\n", out.pages, *dbPath, len(failed))
}

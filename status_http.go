package mp

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/multiproc/mp/internal/spawn"
	"github.com/multiproc/mp/internal/statushook"
)

//go:embed web/status.html
var statusPage []byte

// StatusHandler returns an http.Handler that shows the tree live, for a
// program to mount on a server of its own:
//
//	http.Handle("/mp/", http.StripPrefix("/mp", mp.StatusHandler()))
//
// It serves, below where it is mounted:
//
//   - / an HTML page (self-contained: no external scripts, styles or
//     fonts) showing the process tree, every pool, queue, pipe, lock,
//     semaphore, dict and list, with a time series per pool (calls
//     finished per second, calls queued) and per queue (length), updated
//     every second;
//   - /json the current Status (ReadStatus), as JSON: durations in
//     nanoseconds, times in RFC 3339;
//   - /events the same as server-sent events, one "status" event a second
//     (what the page listens to);
//   - /metrics the Status in the Prometheus text format, if the program
//     imports github.com/multiproc/mp/metrics (which keeps the Prometheus
//     client library out of programs that do not); 404 otherwise.
//
// The handler reads the tree in the process it runs in (see ReadStatus:
// its descendants and its pools). It has no access control: mount it where
// only those who may see the program's internals can reach it.
func StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(statusPage)
	})
	mux.HandleFunc("GET /json", func(w http.ResponseWriter, r *http.Request) {
		st, err := ReadStatus()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(st)
	})
	mux.HandleFunc("GET /events", serveEvents)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		h := statushook.Metrics()
		if h == nil {
			http.Error(w, "mp: /metrics needs the program to import github.com/multiproc/mp/metrics", http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	})
	return mux
}

// statusInterval is how often /events sends the status.
const statusInterval = time.Second

func serveEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "mp: streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	tick := time.NewTicker(statusInterval)
	defer tick.Stop()
	for {
		st, err := ReadStatus()
		if err != nil {
			fmt.Fprintf(w, "event: failure\ndata: %q\n\n", err.Error())
			flusher.Flush()
			return
		}
		b, _ := json.Marshal(st)
		if _, err := fmt.Fprintf(w, "event: status\ndata: %s\n\n", b); err != nil {
			return
		}
		flusher.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// statusAddr is the address MULTIPROC_STATUS asks for: a port, or host:port;
// an empty host means loopback, so that the page is not exposed by accident.
func statusAddr(v string) string {
	if !strings.Contains(v, ":") {
		return net.JoinHostPort("127.0.0.1", v)
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return v
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// The environment variable MULTIPROC_STATUS ("127.0.0.1:6060", or "6060")
// serves StatusHandler for any program, in the root process of the tree
// only (children inherit the variable).
func init() {
	v := os.Getenv("MULTIPROC_STATUS")
	if v == "" {
		return
	}
	if _, child, _ := spawn.ChildFiles(); child {
		return
	}
	ln, err := net.Listen("tcp", statusAddr(v))
	if err != nil {
		fmt.Fprintf(os.Stderr, "mp: MULTIPROC_STATUS: %v\n", err)
		return
	}
	fmt.Fprintf(os.Stderr, "mp: status page at http://%s/\n", ln.Addr())
	srv := &http.Server{Handler: StatusHandler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
}

package mp_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/multiproc/mp"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestStatusHandler(t *testing.T) {
	q := mp.Must(mp.NewQueue[string](0))
	defer q.Close()
	q.SetName("http-orders")
	q.Put(within(t), "a")
	q.Put(within(t), "b")
	srv := httptest.NewServer(http.StripPrefix("/mp", mp.StatusHandler()))
	defer srv.Close()

	code, page := get(t, srv.URL+"/mp/")
	if code != 200 || !strings.Contains(page, "<title>multiproc status</title>") {
		t.Fatalf("page: %d %.200s", code, page)
	}
	// Self-contained: nothing is loaded from elsewhere.
	if m := regexp.MustCompile(`(src|href)=["']?(https?:)?//`).FindString(page); m != "" {
		t.Fatalf("the page loads %q from elsewhere", m)
	}

	code, body := get(t, srv.URL+"/mp/json")
	var st mp.Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("json: %d %v", code, err)
	}
	if s := queueNamed(t, st, "http-orders"); s.Len != 2 || s.Puts != 2 {
		t.Fatalf("queue in /json: %+v", s)
	}
	if len(st.Processes) == 0 || st.Processes[0].Pid != os.Getpid() {
		t.Fatalf("processes in /json: %+v", st.Processes)
	}

	// /events streams the same, as server-sent events.
	resp, err := http.Get(srv.URL + "/mp/events")
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	event, _ := r.ReadString('\n')
	data, _ := r.ReadString('\n')
	resp.Body.Close()
	if event != "event: status\n" || !strings.HasPrefix(data, "data: {") {
		t.Fatalf("first event %q %.100q", event, data)
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &st); err != nil {
		t.Fatal(err)
	}
	queueNamed(t, st, "http-orders")

	// Without the metrics package, /metrics says how to get it.
	if code, body := get(t, srv.URL+"/mp/metrics"); code != 404 || !strings.Contains(body, "github.com/multiproc/mp/metrics") {
		t.Fatalf("metrics without the package: %d %q", code, body)
	}
}

// TestStatusEnvServes runs this test binary with MULTIPROC_STATUS: the
// program serves the status page without a line of code for it.
func TestStatusEnvServes(t *testing.T) {
	if os.Getenv("MP_TEST_STATUS_CHILD") == "1" {
		io.Copy(io.Discard, os.Stdin) // serve until the parent is done
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestStatusEnvServes$")
	cmd.Env = append(os.Environ(), "MULTIPROC_STATUS=:0", "MP_TEST_STATUS_CHILD=1", "GORACE=atexit_sleep_ms=0")
	stdin, _ := cmd.StdinPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(stderr)
	line, err := br.ReadString('\n')
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, br); close(drained) }()
	defer func() {
		stdin.Close()
		<-drained
		cmd.Wait()
	}()
	if err != nil {
		t.Fatalf("no line from the child: %v", err)
	}
	m := regexp.MustCompile(`^mp: status page at (http://127\.0\.0\.1:\d+/)\n$`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("child said %q, want the page's loopback address", line)
	}
	code, body := get(t, m[1]+"json")
	var st mp.Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || len(st.Processes) == 0 || st.Processes[0].Pid != cmd.Process.Pid {
		t.Fatalf("child's /json: %d %v %.200s", code, err, body)
	}
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/multiproc/mp/internal/exampletest"
)

func TestMain(m *testing.M) { os.Exit(exampletest.Main(m)) }

// chromium finds the browser, or skips the test saying how to get it.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("Chromium is not installed (apt-get install chromium; .ci/run installs it): the status page is not tested in a browser")
	return ""
}

// startExample builds and starts the example, and returns its page's
// address.
func startExample(t *testing.T) (*exec.Cmd, string) {
	bin := filepath.Join(t.TempDir(), "example")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-status", "127.0.0.1:0", "-workers", "3", "-duration", "5m")
	cmd.Stderr = os.Stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the example ended with %v", err)
			}
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Error("the example did not stop on SIGINT")
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	m := regexp.MustCompile(`^status page at (http://\S+/)\n$`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("the example said %q (%v)", line, err)
	}
	go func() { bufio.NewReader(stdout).WriteTo(discard{}) }()
	return cmd, m[1]
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// TestStatusPageInBrowser opens the status page of the example at work in
// headless Chromium and checks what it shows: the process tree, the pool's
// figures moving, and a worker killed from outside shown as restarted.
func TestStatusPageInBrowser(t *testing.T) {
	browser := chromium(t)
	_, url := startExample(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 1100), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}

	eval := func(expr string, v any) {
		t.Helper()
		switch v := v.(type) {
		case *bool:
			*v = evaluate[bool](t, bctx, expr)
		case *int:
			*v = evaluate[int](t, bctx, expr)
		case *string:
			*v = evaluate[string](t, bctx, expr)
		}
	}
	// await waits for a JavaScript expression to be true.
	await := func(what, expr string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			var ok bool
			eval("!!("+expr+")", &ok)
			if ok {
				return
			}
			if time.Now().After(deadline) {
				var html string
				eval("document.querySelector('main').innerText", &html)
				t.Fatalf("the page never showed %s; it shows:\n%s", what, html)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	const pool = `document.querySelector('.pool[data-name="squares"]')`
	poolFig := func(class string) int {
		t.Helper()
		var n int
		eval(fmt.Sprintf(`Number(%s.querySelector('b.%s').textContent)`, pool, class), &n)
		return n
	}

	// The tree: the main process, and below it the producer, the consumer
	// and the pool's three workers.
	await("the process tree", `document.querySelectorAll('#tree > li[data-name="MainProcess"] > ul > li').length >= 5 &&
		document.querySelectorAll('#tree > li[data-name="MainProcess"] li[data-name^="PoolWorker-"]').length === 3`)
	await("the orders queue and the ledger lock", `document.querySelector('#queues tr[data-name="orders"]') &&
		document.querySelector('#locks tr[data-name="ledger"]')`)

	// The pool's figures move from one moment to the next.
	await("the pool", pool+` && Number(`+pool+`.querySelector('b.done').textContent) > 0`)
	first := poolFig("done")
	await("more calls done", fmt.Sprintf(`Number(%s.querySelector('b.done').textContent) > %d`, pool, first))
	if second := poolFig("done"); second <= first {
		t.Fatalf("calls done went from %d to %d", first, second)
	}
	// Its time series have points to draw by now.
	await("two updates", `Number(document.body.dataset.updates) >= 3`)

	if os.Getenv("MP_UPDATE_SCREENSHOT") != "" {
		await("a minute of plots", `Number(document.body.dataset.updates) >= 40`)
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "status.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A worker killed from outside shows as restarted, and as ended.
	if n := poolFig("restarts"); n != 0 {
		t.Fatalf("%d restarts before any worker was killed", n)
	}
	var victim int
	eval(`Number(`+pool+`.querySelector('table.workers tr[data-pid]').dataset.pid)`, &victim)
	if victim <= 0 {
		t.Fatal("no worker pid on the page")
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	await("the restart", pool+`.querySelector('b.restarts').textContent === "1" &&
		`+pool+`.querySelector('.restart-reasons').textContent.includes("killed by signal 9")`)
	await("the killed worker gone from the pool", fmt.Sprintf(`!%s.querySelector('table.workers tr[data-pid="%d"]') &&
		%s.querySelectorAll('table.workers tr[data-pid]').length === 3`, pool, victim, pool))
	await("the killed worker among the ended", fmt.Sprintf(`[...document.querySelectorAll('#ended tbody tr')].some(r =>
		r.cells[1].textContent === "%d" && r.cells[2].textContent.includes("SIGKILL"))`, victim))
}

// evaluate runs a JavaScript expression in the page and returns its value.
func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

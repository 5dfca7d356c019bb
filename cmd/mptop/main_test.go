package main

import (
	"context"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

func TestMain(m *testing.M) {
	mp.Init()
	code := m.Run()
	mp.Shutdown()
	os.Exit(code)
}

func TestMptopOnce(t *testing.T) {
	ctx := context.Background()
	q := mp.Must(mp.NewQueue[int](5))
	defer q.Close()
	q.SetName("top-orders")
	q.Put(ctx, 1)
	q.Put(ctx, 2)
	l := mp.Must(mp.NewLock())
	defer l.Close()
	l.SetName("top-lock")
	l.Lock()
	defer l.Unlock()
	p := mp.Must(mp.NewThreadPool(2))
	defer p.Terminate()
	p.SetName("top-pool")
	mp.Map[int](ctx, p, func(x int) int { return x }, []int{1, 2, 3})

	srv := httptest.NewServer(mp.StatusHandler())
	defer srv.Close()
	var out strings.Builder
	if err := run(ctx, statusURL(strings.TrimPrefix(srv.URL, "http://")), time.Second, true, false, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		`(?m)^  MainProcess +\d+ +\w+`,
		`(?m)^POOL top-pool \(thread pool of 2\)$`,
		`(?m)^  queued 0  running 0  done 3  failed 0 `,
		`(?m)^ +top-orders +Queue +2 +5 +2 +0 +0/0 +0 *$`,
		`(?m)^  top-lock +Lock +held by MainProcess \(pid \d+\) +recovered 0$`,
	} {
		if !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("no %s in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "\x1b[") {
		t.Error("escape sequences without a terminal")
	}
}

package mp_test

import (
	"sync"
	"testing"

	"github.com/multiproc/mp"
)

// TestCurrentThread: a Thread's function and a thread pool's task see
// their own thread; anything else sees the main thread, as Python's
// threading.current_thread() answers.
func TestCurrentThread(t *testing.T) {
	if got := mp.CurrentThread(); got.Name != "MainThread" || got.Ident != 1 {
		t.Fatalf("outside any Thread: %+v, want MainThread, 1", got)
	}
	var mu sync.Mutex
	seen := map[string]mp.ThreadInfo{}
	var inner mp.ThreadInfo
	record := func() {
		me := mp.CurrentThread()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); mu.Lock(); inner = mp.CurrentThread(); mu.Unlock() }()
		wg.Wait()
		mu.Lock()
		seen[me.Name] = me
		mu.Unlock()
	}
	a, b := mp.NewThread(record), mp.NewThread(record)
	a.Name, b.Name, b.Daemon = "alpha", "beta", true
	for _, th := range []*mp.Thread{a, b} {
		if err := th.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, th := range []*mp.Thread{a, b} {
		if err := join(t, th); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 2 || seen["alpha"].Ident == seen["beta"].Ident || seen["alpha"].Ident <= 1 || seen["alpha"].Daemon || !seen["beta"].Daemon {
		t.Fatalf("Threads saw %+v", seen)
	}
	if inner.Name != "MainThread" {
		t.Fatalf("a goroutine a Thread started saw %+v", inner)
	}

	p, err := mp.NewThreadPool(2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Terminate()
	names, err := mp.Map[string](within(t), p, func(int) string { return mp.CurrentThread().Name }, ints(20), mp.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n != "ThreadPoolWorker-1" && n != "ThreadPoolWorker-2" {
			t.Fatalf("thread pool tasks saw %q", names)
		}
	}
	p.Close()
	if err := p.Join(within(t)); err != nil {
		t.Fatal(err)
	}
	if got := mp.CurrentThread(); got.Name != "MainThread" {
		t.Fatalf("after the threads: %+v", got)
	}
}

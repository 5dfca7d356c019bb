package mp_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/multiproc/mp"
)

// The seed's pool programs (seed 003, "Process pools"), step by step as
// the tutorial writes them in Python, with its sleeps of 1 to 3 seconds
// made milliseconds.

// seedWork is the seed's work(n): say which process works, sleep a
// random while, return n**2. It returns the pid too, for the test.
func seedWork(n int) [2]int {
	time.Sleep(time.Duration(rand.IntN(3)+1) * time.Millisecond)
	return [2]int{n * n, os.Getpid()}
}

// seedGet is the crawler's get(url): it "downloads" the page.
func seedGet(url string) map[string]string {
	time.Sleep(time.Duration(rand.IntN(3)+1) * time.Millisecond)
	return map[string]string{"url": url, "text": "<html>" + url + "</html>"}
}

func init() { mp.Register(seedWork, seedGet) }

func TestSeed003Pool(t *testing.T) {
	ctx := within(t)
	checkPids := func(t *testing.T, pids map[int]bool) {
		t.Helper()
		if pids[os.Getpid()] || len(pids) == 0 || len(pids) > 4 {
			t.Errorf("work ran in %v (main process %d), want in at most 4 workers", pids, os.Getpid())
		}
	}

	// p = Pool(4); for i in range(10): res = p.apply(work, args=(i,)); print(res)
	t.Run("apply", func(t *testing.T) {
		p := newPool(t, 4)
		pids := map[int]bool{}
		for i := range 10 {
			res, err := mp.Apply[[2]int](ctx, p, seedWork, i)
			if err != nil || res[0] != i*i {
				t.Fatalf("apply(work, %d) = %v, %v", i, res, err)
			}
			pids[res[1]] = true
		}
		checkPids(t, pids)
	})

	// result = [p.apply_async(work, args=(i,)) for i in range(10)]
	// p.close(); p.join(); for obj in result: print(obj.get())
	t.Run("apply_async, close, join, get", func(t *testing.T) {
		p := newPool(t, 4)
		var result []*mp.AsyncResult[[2]int]
		for i := range 10 {
			result = append(result, mp.ApplyAsync[[2]int](p, seedWork, []any{i}))
		}
		p.Close()
		if err := p.Join(ctx); err != nil {
			t.Fatalf("join: %v", err)
		}
		pids := map[int]bool{}
		for i, obj := range result {
			if !obj.Ready() {
				t.Errorf("result %d not ready after join", i)
			}
			res, err := obj.Get(ctx)
			if err != nil || res[0] != i*i {
				t.Fatalf("get %d = %v, %v", i, res, err)
			}
			pids[res[1]] = true
		}
		checkPids(t, pids)
	})

	// The crawler: p = Pool(2); for url in urls: p.apply_async(get,
	// args=(url,), callback=parse); p.close(); p.join()
	t.Run("apply_async with callback, close, join", func(t *testing.T) {
		urls := []string{"https://www.baidu.com", "https://www.python.org", "https://www.openstack.org",
			"https://help.github.com/", "http://www.sina.com.cn/"}
		p := newPool(t, 2)
		var mu sync.Mutex
		db := map[string]string{} // what parse writes to db.txt
		parse := func(dic map[string]string) {
			if os.Getpid() != mainPid {
				t.Errorf("parse ran in %d, not the main process", os.Getpid())
			}
			mu.Lock()
			db[dic["url"]] = fmt.Sprintf("%s:%d", dic["url"], len(dic["text"]))
			mu.Unlock()
		}
		for _, url := range urls {
			mp.ApplyAsync[map[string]string](p, seedGet, []any{url}, mp.WithCallback(parse),
				mp.WithErrorCallback(func(err error) { t.Errorf("get(%s): %v", url, err) }))
		}
		p.Close()
		if err := p.Join(ctx); err != nil {
			t.Fatalf("join: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, url := range urls {
			if want := fmt.Sprintf("%s:%d", url, len("<html>"+url+"</html>")); db[url] != want {
				t.Errorf("db[%s] = %q after join, want %q", url, db[url], want)
			}
		}
	})

	// Python's Pool also works as a context manager; the same without
	// close: Terminate after Get, as "with Pool() as p:" does on exit.
	t.Run("get, then terminate", func(t *testing.T) {
		p := newPool(t, 4)
		r := mp.ApplyAsync[[2]int](p, seedWork, []any{7})
		if res, err := r.Get(context.Background()); err != nil || res[0] != 49 {
			t.Fatalf("get = %v, %v", res, err)
		}
		p.Terminate()
	})
}

var mainPid = os.Getpid()

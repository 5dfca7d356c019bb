package mp

import (
	"context"
	"fmt"
	"reflect"
	"time"
)

// startThreadLocked starts one goroutine of a thread pool.
func (p *Pool) startThreadLocked() {
	p.wg.Add(1)
	p.seq++
	go p.runThread(fmt.Sprintf("ThreadPoolWorker-%d", p.seq), nil)
}

// runThread is one goroutine of a thread pool; it goes on with resume
// first, if not nil. If a function calls runtime.Goexit (as t.FailNow
// does), nothing stops the goroutine from ending: the call fails, and a
// new goroutine takes over the job and its place.
func (p *Pool) runThread(name string, resume *localRun) {
	var cur *localRun // the job being run, without p.mu
	returned := false
	defer enterThread(ThreadInfo{Name: name, Daemon: true})()
	defer func() {
		if returned {
			p.wg.Done()
			return
		}
		if cur == nil {
			go p.runThread(name, nil) // not in a job: cannot happen, but keep the place
			return
		}
		if cur.next < 0 {
			// In the initializer: p.initThread broke the pool.
			cur.j.fail(p.initErr())
			cur.end(p)
			cur = nil
		} else {
			cur.rs[cur.next].err = &TaskError{Message: goexitMessage}
			cur.next++
		}
		go p.runThread(name, cur) // the wait group's count goes to it
	}()
	if resume != nil {
		cur = resume
		p.runCalls(cur)
		cur = nil
	}
	p.mu.Lock()
	for {
		j := p.nextLocked(func() bool { return true }, p.drainedLocked, nil)
		if j == nil {
			break
		}
		p.running[j] = struct{}{}
		p.mu.Unlock()
		cur = &localRun{j: j, next: -1}
		p.runLocal(cur)
		cur = nil
		p.mu.Lock()
	}
	p.mu.Unlock()
	returned = true
}

// localRun is one job being run by a thread pool, kept where a goroutine
// taking over after runtime.Goexit finds it.
type localRun struct {
	j     *job
	ctx   context.Context
	rs    []result
	next  int      // the call being run; -1 before the first
	undo  []func() // releases ctx
	start time.Time
}

// runLocal runs the calls of j in this goroutine. If j's context or
// deadline ends first, j fails at once with its error; the calls are
// given the ended context and the goroutine waits for them to return.
func (p *Pool) runLocal(r *localRun) {
	j := r.j
	r.start = time.Now()
	r.ctx = context.Background()
	if j.ctx != nil {
		r.ctx = j.ctx
	}
	// Not deferred: the context lives until the job ends, across a
	// Goexit.
	if p.cfg.timeout > 0 {
		var cancel context.CancelFunc
		r.ctx, cancel = context.WithTimeout(r.ctx, p.cfg.timeout)
		r.undo = append(r.undo, cancel)
	}
	if ctx := r.ctx; ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { j.fail(ctx.Err()) })
		r.undo = append(r.undo, func() { stop() })
	}
	if p.cfg.init != nil {
		if err := p.initThread(); err != nil {
			j.fail(err)
			r.end(p)
			return
		}
	}
	r.rs = make([]result, len(j.vals))
	r.next = 0
	p.runCalls(r)
}

// runCalls runs the calls of r from r.next on, and completes the job.
func (p *Pool) runCalls(r *localRun) {
	for ; r.next < len(r.rs); r.next++ {
		i := r.next
		if err := r.ctx.Err(); err != nil {
			r.rs[i].err = err
			continue
		}
		res, cerr := r.j.fn.call(r.ctx, reflect.Value{}, r.j.vals[i])
		switch {
		case cerr == nil:
			r.rs[i].val, _ = r.j.fn.value(res)
		case cerr.err != nil:
			r.rs[i].err = cerr.err // the function's own error, as it is
		default:
			r.rs[i].err = &TaskError{Message: cerr.Message, Panicked: cerr.Panicked, Stack: cerr.Stack}
		}
	}
	// Counted before the results are delivered, so that a caller who
	// has them sees them counted.
	p.mu.Lock()
	p.stats.ranLocal(r.rs, r.start)
	p.mu.Unlock()
	r.j.complete(r.rs)
	r.end(p)
}

// end releases what the job held.
func (r *localRun) end(p *Pool) {
	for _, f := range r.undo {
		f()
	}
	p.mu.Lock()
	delete(p.running, r.j)
	p.mu.Unlock()
}

// initThread runs a thread pool's initializer, once for the pool (there
// is nothing per goroutine to initialize).
func (p *Pool) initThread() error {
	p.initOnce.Do(func() {
		returned := false
		defer func() {
			if !returned {
				p.breakInit(&TaskError{Message: "mp: pool initializer: " + goexitMessage})
			}
		}()
		vals, _ := p.cfg.init.bind(p.cfg.initArgs)
		_, cerr := p.cfg.init.call(context.Background(), reflect.Value{}, vals)
		returned = true
		if cerr != nil {
			p.breakInit(&TaskError{Message: "mp: pool initializer: " + cerr.Message, Panicked: cerr.Panicked, Stack: cerr.Stack})
		}
	})
	return p.initErr()
}

// breakInit breaks the pool for its initializer's failure, err.
func (p *Pool) breakInit(err error) {
	p.mu.Lock()
	p.breakLocked(err)
	q := p.drainLocked()
	p.mu.Unlock()
	for _, j := range q {
		j.fail(p.broken)
	}
}

func (p *Pool) initErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.broken
}

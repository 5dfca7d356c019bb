package mp

import (
	"context"
	"reflect"
)

// startThreadLocked starts one goroutine of a thread pool.
func (p *Pool) startThreadLocked() {
	p.wg.Add(1)
	go p.runThread()
}

func (p *Pool) runThread() {
	defer p.wg.Done()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		j := p.nextLocked(func() bool { return true }, p.drainedLocked, nil)
		if j == nil {
			return
		}
		p.running[j] = struct{}{}
		p.mu.Unlock()
		p.runLocal(j)
		p.mu.Lock()
		delete(p.running, j)
	}
}

// runLocal runs the calls of j in this goroutine. If j's context or
// deadline ends first, j fails at once with its error; the calls are
// given the ended context and the goroutine waits for them to return.
func (p *Pool) runLocal(j *job) {
	ctx := context.Background()
	if j.ctx != nil {
		ctx = j.ctx
	}
	if p.cfg.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.timeout)
		defer cancel()
	}
	if ctx.Done() != nil {
		defer context.AfterFunc(ctx, func() { j.fail(ctx.Err()) })()
	}
	if p.cfg.init != nil {
		if err := p.initThread(); err != nil {
			j.fail(err)
			return
		}
	}
	rs := make([]result, len(j.vals))
	for i, args := range j.vals {
		if err := ctx.Err(); err != nil {
			rs[i].err = err
			continue
		}
		res, cerr := j.fn.call(ctx, reflect.Value{}, args)
		switch {
		case cerr == nil:
			rs[i].val, _ = j.fn.value(res)
		case cerr.err != nil:
			rs[i].err = cerr.err // the function's own error, as it is
		default:
			rs[i].err = &TaskError{Message: cerr.Message, Panicked: cerr.Panicked, Stack: cerr.Stack}
		}
	}
	j.complete(rs)
}

// initThread runs a thread pool's initializer, once for the pool (there
// is nothing per goroutine to initialize).
func (p *Pool) initThread() error {
	p.initOnce.Do(func() {
		vals, _ := p.cfg.init.bind(p.cfg.initArgs)
		if _, cerr := p.cfg.init.call(context.Background(), reflect.Value{}, vals); cerr != nil {
			p.mu.Lock()
			p.breakLocked(&TaskError{Message: "mp: pool initializer: " + cerr.Message, Panicked: cerr.Panicked, Stack: cerr.Stack})
			q := p.drainLocked()
			p.mu.Unlock()
			for _, j := range q {
				j.fail(p.broken)
			}
		}
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.broken
}

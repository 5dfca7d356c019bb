package mp

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/multiproc/mp/internal/refs"
	"github.com/multiproc/mp/internal/ring"
	"github.com/multiproc/mp/internal/shm"
	"github.com/multiproc/mp/internal/spawn"
	"github.com/multiproc/mp/internal/supervise"
)

// logger is where lifecycle events go; nil (the default) drops them at the
// cost of one atomic load.
var logger atomic.Pointer[slog.Logger]

// SetLogger sends the library's lifecycle events to l, or turns them off
// again if l is nil (the default: the library logs nothing). Events are
// rare, never one per task or per lock operation:
//
//   - "process started", "process exited" (Info; Warn for a non-zero status),
//     "process killed" (Warn: the signal, and who sent it or the limit hit)
//   - "pool worker replaced" (Warn unless it retired: why it went)
//   - "task timed out", "task retried", "task lost" (Warn: the pool, the
//     function, the worker)
//   - "lock recovered from a dead owner" (Warn: the primitive, the dead pid)
//   - "queue items lost" (Warn: the queue, how many; a consumer died taking
//     them)
//
// Every record has the attribute "process" (the name of the process that
// logs it). The logger is this process's: a child logs if it calls
// SetLogger itself, or if the environment variable MULTIPROC_LOG (which
// children inherit) is set to debug, info, warn or error, which sends every
// process's events at that level and above to its standard error as text.
// SetLogger may be called at any time, from any goroutine.
func SetLogger(l *slog.Logger) { logger.Store(l) }

func init() {
	var level slog.Level
	switch strings.ToLower(os.Getenv("MULTIPROC_LOG")) {
	case "":
		return
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	SetLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}

// logEvent logs msg with attrs if a logger is set.
func logEvent(level slog.Level, msg string, attrs ...slog.Attr) {
	l := logger.Load()
	if l == nil || !l.Enabled(context.Background(), level) {
		return
	}
	l.LogAttrs(context.Background(), level, msg, append(attrs, slog.String("process", self.info.Name))...)
}

// logging reports whether events are logged at all, for callers that would
// do work to find what to log.
func logging() bool { return logger.Load() != nil }

// Items lost with a dead consumer are noticed by the rings lazily (when a
// Get passes their cell). While events are logged, every child's death
// makes this process look at once, off the reaping goroutine.

var lossesSeen struct {
	mu   sync.Mutex
	lost map[refs.ID]int // the losses already reported, by queue
}

func init() {
	supervise.OnExit(func(pid int, _ spawn.Status) {
		if logging() {
			go reportLosses(pid)
		}
	})
}

// reportLosses logs the items that the queues and pipes of the tree lost
// since the last report, after the death of the child pid.
func reportLosses(pid int) {
	a, err := treeArena()
	if err != nil {
		return
	}
	lossesSeen.mu.Lock()
	defer lossesSeen.mu.Unlock()
	if lossesSeen.lost == nil {
		lossesSeen.lost = map[refs.ID]int{}
	}
	arena.refs.Each(func(o refs.Object) {
		k := kind(o.Kind)
		var at []uintptr
		switch k {
		case kindQueue:
			at = []uintptr{qRing}
		case kindConn:
			at = []uintptr{pRecv0, pRecv1}
		default:
			return
		}
		var h handle
		if h.unmarshal(k, encodeHandle(k, arena.refs.Tree(), o.ID, o.Block)) != nil {
			return
		}
		defer h.close()
		lost := 0
		for _, w := range at {
			off := shm.Offset(atomic.LoadUint64(h.u64(w)))
			if off == 0 {
				continue
			}
			if r, err := ring.Open(a, off); err == nil {
				r.Reclaim()
				lost += r.Lost()
			}
		}
		if n := lost - lossesSeen.lost[o.ID]; n > 0 {
			lossesSeen.lost[o.ID] = lost
			logEvent(slog.LevelWarn, "queue items lost", slog.String("kind", k.String()),
				slog.String("name", cmp.Or(o.Name, fmt.Sprintf("%s-%d", strings.ToLower(k.String()), o.ID.Index))),
				slog.Int("lost", n), slog.Int("dead_pid", pid))
		}
	})
}

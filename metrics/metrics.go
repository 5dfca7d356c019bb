// Package metrics exports the status of a multiproc tree (mp.ReadStatus)
// in the Prometheus text format, with the Prometheus client library. It is
// a package of its own so that programs that do not want it do not compile
// the library.
//
// Importing it adds /metrics to mp.StatusHandler (and so to the server that
// MULTIPROC_STATUS starts):
//
//	import _ "github.com/multiproc/mp/metrics"
//
// A program that has a Prometheus registry of its own registers
// NewCollector in it instead (or as well).
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/multiproc/mp"
	"github.com/multiproc/mp/internal/statushook"
)

func init() { statushook.SetMetrics(Handler()) }

// Handler serves the tree's metrics, and only those, in the Prometheus
// text format.
func Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector())
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// NewCollector returns a prometheus.Collector that reads mp.ReadStatus on
// every scrape. Its metrics are named mp_*; primitives are labelled with
// their name (SetName, or their ID if they have none) and their ID, which
// tells apart primitives of the same name.
func NewCollector() prometheus.Collector { return collector{} }

type collector struct{}

type metric struct {
	d *prometheus.Desc
	t prometheus.ValueType
}

func gauge(name, help string, labels ...string) metric {
	return metric{prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue}
}

func counter(name, help string, labels ...string) metric {
	return metric{prometheus.NewDesc(name, help, labels, nil), prometheus.CounterValue}
}

var (
	procCPU   = counter("mp_process_cpu_seconds_total", "CPU time used by a process of the tree.", "name", "pid")
	procRSS   = gauge("mp_process_resident_memory_bytes", "Resident memory of a process of the tree.", "name", "pid")
	procCount = gauge("mp_processes", "Processes of the tree seen from this one (itself included).")

	poolWorkers  = gauge("mp_pool_workers", "Worker processes of a pool.", "pool")
	poolQueued   = gauge("mp_pool_calls_queued", "Calls submitted to a pool and not yet given to a worker.", "pool")
	poolRunning  = gauge("mp_pool_calls_running", "Calls given to a pool's workers and not yet answered.", "pool")
	poolCalls    = counter("mp_pool_calls_total", "Calls a pool ran, by outcome.", "pool", "outcome")
	poolTimedOut = counter("mp_pool_tasks_timed_out_total", "Tasks whose worker was killed for the task timeout or their context.", "pool")
	poolRetried  = counter("mp_pool_tasks_retried_total", "Tasks run again after their worker died.", "pool")
	poolLost     = counter("mp_pool_tasks_lost_total", "Tasks failed with the death of their worker.", "pool")
	poolRestarts = counter("mp_pool_worker_restarts_total", "Workers replaced, by why they went.", "pool", "reason")
	poolLatency  = gauge("mp_pool_task_latency_seconds", "Task latency quantiles over a pool's last 1024 tasks.", "pool", "quantile")

	queueLen     = gauge("mp_queue_length", "Items queued.", "queue", "id", "kind")
	queueCap     = gauge("mp_queue_capacity", "Most items a queue holds; 0 if unbounded.", "queue", "id", "kind")
	queuePuts    = counter("mp_queue_puts_total", "Items put.", "queue", "id", "kind")
	queueGets    = counter("mp_queue_gets_total", "Items taken.", "queue", "id", "kind")
	queueLost    = counter("mp_queue_lost_total", "Items lost with a consumer that died taking them.", "queue", "id", "kind")
	queueBlocked = gauge("mp_queue_blocked", "Processes parked in a Get or a Put.", "queue", "id", "kind", "op")

	lockHeld      = gauge("mp_lock_held", "1 if the lock is held.", "lock", "id", "kind")
	lockRecovered = counter("mp_lock_recoveries_total", "Times the lock was taken over from a dead holder.", "lock", "id", "kind")
	semValue      = gauge("mp_semaphore_value", "Permits free.", "semaphore", "id")
	semWaiting    = gauge("mp_semaphore_waiting", "Goroutines parked in Acquire.", "semaphore", "id")
	collLen       = gauge("mp_collection_entries", "Entries of a Dict or items of a List.", "name", "id", "kind")

	arenaBytes   = gauge("mp_arena_bytes", "The shared-memory arena: its size, and bytes in use.", "state")
	arenaObjects = gauge("mp_arena_primitives", "Live primitives, by kind.", "kind")
	scrapeError  = gauge("mp_status_error", "1 if the status could not be read.")
)

var all = []metric{procCPU, procRSS, procCount, poolWorkers, poolQueued, poolRunning, poolCalls, poolTimedOut,
	poolRetried, poolLost, poolRestarts, poolLatency, queueLen, queueCap, queuePuts, queueGets, queueLost,
	queueBlocked, lockHeld, lockRecovered, semValue, semWaiting, collLen, arenaBytes, arenaObjects, scrapeError}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range all {
		ch <- m.d
	}
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	emit := func(m metric, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(m.d, m.t, v, labels...)
	}
	st, err := mp.ReadStatus()
	if err != nil {
		emit(scrapeError, 1)
		return
	}
	emit(scrapeError, 0)
	emit(procCount, float64(len(st.Processes)))
	for _, p := range st.Processes {
		pid := strconv.Itoa(p.Pid)
		emit(procCPU, p.CPU.Seconds(), p.Name, pid)
		emit(procRSS, float64(p.RSS), p.Name, pid)
	}
	for _, p := range st.Pools {
		emit(poolWorkers, float64(len(p.Workers)), p.Name)
		emit(poolQueued, float64(p.Queued), p.Name)
		emit(poolRunning, float64(p.Running), p.Name)
		emit(poolCalls, float64(p.Done), p.Name, "done")
		emit(poolCalls, float64(p.Failed), p.Name, "failed")
		emit(poolTimedOut, float64(p.TimedOut), p.Name)
		emit(poolRetried, float64(p.Retried), p.Name)
		emit(poolLost, float64(p.Lost), p.Name)
		for why, n := range p.RestartsBy {
			emit(poolRestarts, float64(n), p.Name, why)
		}
		if p.Latency.Count > 0 {
			emit(poolLatency, p.Latency.P50.Seconds(), p.Name, "0.5")
			emit(poolLatency, p.Latency.P90.Seconds(), p.Name, "0.9")
			emit(poolLatency, p.Latency.P99.Seconds(), p.Name, "0.99")
			emit(poolLatency, p.Latency.Max.Seconds(), p.Name, "1")
		}
	}
	for _, q := range st.Queues {
		l := []string{q.Label(), q.ID, q.Kind}
		emit(queueLen, float64(q.Len), l...)
		emit(queueCap, float64(q.Cap), l...)
		emit(queuePuts, float64(q.Puts), l...)
		emit(queueGets, float64(q.Gets), l...)
		emit(queueLost, float64(q.Lost), l...)
		emit(queueBlocked, float64(q.BlockedGets), append(l, "get")...)
		emit(queueBlocked, float64(q.BlockedPuts), append(l, "put")...)
	}
	for _, k := range st.Locks {
		held := 0.0
		if k.Held {
			held = 1
		}
		emit(lockHeld, held, k.Label(), k.ID, k.Kind)
		emit(lockRecovered, float64(k.Recovered), k.Label(), k.ID, k.Kind)
	}
	for _, s := range st.Semaphores {
		emit(semValue, float64(s.Value), s.Label(), s.ID)
		emit(semWaiting, float64(s.Waiting), s.Label(), s.ID)
	}
	for _, c := range st.Collections {
		emit(collLen, float64(c.Len), c.Label(), c.ID, c.Kind)
	}
	emit(arenaBytes, float64(st.Arena.Size), "size")
	emit(arenaBytes, float64(st.Arena.InUse), "in_use")
	for k, n := range st.Arena.ByKind {
		emit(arenaObjects, float64(n), k)
	}
}

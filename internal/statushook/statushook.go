// Package statushook lets the metrics package add its endpoint to the
// status handler of the core package without the core importing it (and
// its dependencies).
package statushook

import (
	"net/http"
	"sync/atomic"
)

var metrics atomic.Pointer[http.Handler]

// SetMetrics makes h the handler of the status handler's /metrics.
func SetMetrics(h http.Handler) { metrics.Store(&h) }

// Metrics returns the handler set by SetMetrics, or nil.
func Metrics() http.Handler {
	if p := metrics.Load(); p != nil {
		return *p
	}
	return nil
}

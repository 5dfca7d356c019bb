package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/multiproc/mp"
	_ "github.com/multiproc/mp/metrics"
)

func TestMain(m *testing.M) {
	mp.Init()
	m.Run()
	mp.Shutdown()
}

func TestMetrics(t *testing.T) {
	ctx := context.Background()
	q := mp.Must(mp.NewQueue[int](8))
	defer q.Close()
	q.SetName("m-orders")
	for i := range 3 {
		q.Put(ctx, i)
	}
	q.Get(ctx)
	p := mp.Must(mp.NewThreadPool(2))
	defer p.Terminate()
	p.SetName("m-pool")
	if _, err := mp.Map[int](ctx, p, func(x int) int { return x }, []int{1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(mp.StatusHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("not the Prometheus text format: %v\n%s", err, body)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := families[name]
		if f == nil {
			t.Fatalf("no %s in\n%s", name, body)
		}
	next:
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			if m.Gauge != nil {
				return m.Gauge.GetValue()
			}
			return m.Counter.GetValue()
		}
		t.Fatalf("no %s with %v", name, labels)
		return 0
	}
	if v := value("mp_queue_length", map[string]string{"queue": "m-orders"}); v != 2 {
		t.Errorf("queue length %v, want 2", v)
	}
	if v := value("mp_queue_puts_total", map[string]string{"queue": "m-orders"}); v != 3 {
		t.Errorf("puts %v, want 3", v)
	}
	if v := value("mp_queue_capacity", map[string]string{"queue": "m-orders"}); v != 8 {
		t.Errorf("capacity %v, want 8", v)
	}
	if v := value("mp_pool_calls_total", map[string]string{"pool": "m-pool", "outcome": "done"}); v != 5 {
		t.Errorf("pool calls done %v, want 5", v)
	}
	if v := value("mp_processes", nil); v < 1 {
		t.Errorf("processes %v", v)
	}
	if value("mp_arena_bytes", map[string]string{"state": "size"}) <= 0 {
		t.Error("no arena size")
	}
}

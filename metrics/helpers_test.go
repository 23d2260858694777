package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/secure-script-executor/executor/metrics"
)

// value gathers g and returns the value of the one series of family name
// whose labels include labelPairs (name, value, name, value, ...): a
// counter's or gauge's value, or a histogram's observation count. It fails
// the test if no series matches.
func value(t *testing.T, g prometheus.Gatherer, name string, labelPairs ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			if !hasLabels(s, labelPairs) {
				continue
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return s.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				return s.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labelPairs)
	return 0
}

func hasLabels(s *dto.Metric, pairs []string) bool {
	have := map[string]string{}
	for _, l := range s.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		if have[pairs[i]] != pairs[i+1] {
			return false
		}
	}
	return true
}

// exerciseAll calls every recording method once, so that every vector has
// at least one child and every family appears in Gather.
func exerciseAll(m *metrics.Metrics) {
	m.ObserveHTTP("/execute", "POST", 200, 5*time.Millisecond)
	m.ObserveExecution("ok", 3*time.Millisecond, 10, 2)
	m.ExecutionStarted()
	m.ExecutionFinished()
	m.Overloaded()
	m.ObserveSpawn(20 * time.Millisecond)
	m.ObserveAcquire(time.Millisecond, true)
	m.ObserveAcquire(time.Microsecond, false)
}

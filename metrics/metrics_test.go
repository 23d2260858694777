package metrics_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/metrics"
	"github.com/secure-script-executor/executor/pool"
)

// newRegistry builds Metrics on a fresh registry, the way main does, with a
// fake pool whose snapshot the test controls.
func newRegistry(t *testing.T, src metrics.StatSource) (*prometheus.Registry, *metrics.Metrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, src, metrics.BuildInfo{Version: "v1.2.3", Revision: "abc123", GoVersion: "go1.26.8"})
	return reg, m
}

func fixedStat(s pool.Stat) metrics.StatSource {
	return metrics.StatFunc(func() pool.Stat { return s })
}

var poolMetricNames = []string{
	"executor_pool_idle_workers",
	"executor_pool_acquired_workers",
	"executor_pool_constructing_workers",
	"executor_pool_workers",
	"executor_pool_max_workers",
	"executor_pool_warm_target_workers",
	"executor_pool_acquires_total",
	"executor_pool_empty_acquires_total",
	"executor_pool_canceled_acquires_total",
	"executor_pool_acquire_duration_seconds_total",
	"executor_pool_workers_spawned_total",
	"executor_pool_spawn_failures_total",
	"executor_pool_kill_failures_total",
	"executor_pool_workers_destroyed_total",
	"executor_sandbox_up",
}

func TestPoolCollectorExportsEveryStatFieldWithTheRightTypeAndAZeroSeriesForEveryDestroyReason(t *testing.T) {
	reg, _ := newRegistry(t, fixedStat(pool.Stat{
		IdleWorkers:         3,
		AcquiredWorkers:     2,
		ConstructingWorkers: 1,
		TotalWorkers:        6,
		MaxWorkers:          16,
		WarmTarget:          4,
		Acquires:            120,
		EmptyAcquires:       7,
		CanceledAcquires:    2,
		AcquireDuration:     1500 * time.Millisecond,
		Spawned:             130,
		SpawnFailed:         1,
		KillFailed:          2,
		// expired and failed are absent from the map and must still be
		// exported at zero.
		Destroyed: map[pool.DestroyReason]int64{pool.DestroyUsed: 118, pool.DestroyDied: 3},
	}))

	const want = `
# HELP executor_pool_acquire_duration_seconds_total Total time spent waiting in successful checkouts.
# TYPE executor_pool_acquire_duration_seconds_total counter
executor_pool_acquire_duration_seconds_total 1.5
# HELP executor_pool_acquired_workers Workers checked out and running (or about to run) a script.
# TYPE executor_pool_acquired_workers gauge
executor_pool_acquired_workers 2
# HELP executor_pool_acquires_total Successful worker checkouts.
# TYPE executor_pool_acquires_total counter
executor_pool_acquires_total 120
# HELP executor_pool_canceled_acquires_total Checkouts abandoned before a worker was available (deadline passed or client gone).
# TYPE executor_pool_canceled_acquires_total counter
executor_pool_canceled_acquires_total 2
# HELP executor_pool_constructing_workers Workers being spawned: sandbox starting, ready line not yet seen.
# TYPE executor_pool_constructing_workers gauge
executor_pool_constructing_workers 1
# HELP executor_pool_empty_acquires_total Checkouts that found no idle worker and had to wait for one (cold path).
# TYPE executor_pool_empty_acquires_total counter
executor_pool_empty_acquires_total 7
# HELP executor_pool_idle_workers Warm workers ready to take a run.
# TYPE executor_pool_idle_workers gauge
executor_pool_idle_workers 3
# HELP executor_pool_kill_failures_total Worker teardowns that failed (for example a cgroup that could not be removed); the server logs each.
# TYPE executor_pool_kill_failures_total counter
executor_pool_kill_failures_total 2
# HELP executor_pool_max_workers Configured maximum number of workers.
# TYPE executor_pool_max_workers gauge
executor_pool_max_workers 16
# HELP executor_pool_spawn_failures_total Worker spawns that failed (sandbox did not start or never became ready).
# TYPE executor_pool_spawn_failures_total counter
executor_pool_spawn_failures_total 1
# HELP executor_pool_warm_target_workers Number of idle workers the pool tries to keep ready.
# TYPE executor_pool_warm_target_workers gauge
executor_pool_warm_target_workers 4
# HELP executor_pool_workers All workers: idle + acquired + constructing.
# TYPE executor_pool_workers gauge
executor_pool_workers 6
# HELP executor_pool_workers_destroyed_total Workers destroyed, by reason: used, expired, died or failed.
# TYPE executor_pool_workers_destroyed_total counter
executor_pool_workers_destroyed_total{reason="died"} 3
executor_pool_workers_destroyed_total{reason="expired"} 0
executor_pool_workers_destroyed_total{reason="failed"} 0
executor_pool_workers_destroyed_total{reason="used"} 118
# HELP executor_pool_workers_spawned_total Workers that started and sent their ready line.
# TYPE executor_pool_workers_spawned_total counter
executor_pool_workers_spawned_total 130
# HELP executor_sandbox_up 1 if the last worker spawn succeeded (or none has failed yet), 0 while spawns are failing.
# TYPE executor_sandbox_up gauge
executor_sandbox_up 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), poolMetricNames...); err != nil {
		t.Fatal(err)
	}
}

func TestPoolCollectorReadsAFreshSnapshotAtEveryScrapeAndReportsSandboxDownWhileSpawnsFail(t *testing.T) {
	var mu sync.Mutex
	stat := pool.Stat{IdleWorkers: 4}
	reg, _ := newRegistry(t, metrics.StatFunc(func() pool.Stat {
		mu.Lock()
		defer mu.Unlock()
		return stat
	}))

	const up = `
# HELP executor_sandbox_up 1 if the last worker spawn succeeded (or none has failed yet), 0 while spawns are failing.
# TYPE executor_sandbox_up gauge
executor_sandbox_up %d
# HELP executor_pool_idle_workers Warm workers ready to take a run.
# TYPE executor_pool_idle_workers gauge
executor_pool_idle_workers %d
# HELP executor_pool_spawn_failures_total Worker spawns that failed (sandbox did not start or never became ready).
# TYPE executor_pool_spawn_failures_total counter
executor_pool_spawn_failures_total %d
`
	names := []string{"executor_sandbox_up", "executor_pool_idle_workers", "executor_pool_spawn_failures_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(up, 1, 4, 0)), names...); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	stat = pool.Stat{IdleWorkers: 0, SpawnFailed: 5, LastSpawnErr: errors.New("nsjail: exit status 255")}
	mu.Unlock()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(up, 0, 0, 5)), names...); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	stat = pool.Stat{IdleWorkers: 1, SpawnFailed: 5}
	mu.Unlock()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(up, 1, 1, 5)), names...); err != nil {
		t.Fatal(err)
	}
}

func TestPoolCollectorStillExportsADestroyReasonMissingFromPoolDestroyReasons(t *testing.T) {
	reg, _ := newRegistry(t, fixedStat(pool.Stat{
		Destroyed: map[pool.DestroyReason]int64{"evicted": 2},
	}))
	n, err := testutil.GatherAndCount(reg, "executor_pool_workers_destroyed_total")
	if err != nil {
		t.Fatal(err)
	}
	if want := len(pool.DestroyReasons) + 1; n != want {
		t.Fatalf("got %d destroyed series, want %d (every known reason plus the unlisted one)", n, want)
	}
}

func TestNewWithANilStatSourceRegistersEverythingButThePoolMetrics(t *testing.T) {
	reg, m := newRegistry(t, nil)
	m.ObserveExecution("ok", time.Millisecond, 1, 1)
	n, err := testutil.GatherAndCount(reg, poolMetricNames...)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("got %d pool series without a pool, want 0", n)
	}
	if n, _ := testutil.GatherAndCount(reg, "executor_executions_total"); n != len(metrics.Outcomes) {
		t.Fatalf("got %d execution series, want %d", n, len(metrics.Outcomes))
	}
}

func TestEveryOutcomeHasAZeroSeriesBeforeTheFirstExecution(t *testing.T) {
	reg, _ := newRegistry(t, nil)
	var b strings.Builder
	b.WriteString("# HELP executor_executions_total Execution requests by outcome: ok or the API error type.\n")
	b.WriteString("# TYPE executor_executions_total counter\n")
	for _, o := range metrics.Outcomes {
		fmt.Fprintf(&b, "executor_executions_total{outcome=%q} 0\n", o)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(b.String()), "executor_executions_total"); err != nil {
		t.Fatal(err)
	}
}

func TestOutcomesAreUniqueAndIncludeOkAndInternal(t *testing.T) {
	seen := map[string]bool{}
	for _, o := range metrics.Outcomes {
		if seen[o] {
			t.Errorf("outcome %q listed twice", o)
		}
		seen[o] = true
	}
	for _, o := range []string{"ok", "internal", "timeout", "overloaded", "sandbox_unavailable"} {
		if !seen[o] {
			t.Errorf("outcome %q missing from Outcomes", o)
		}
	}
	if len(metrics.Outcomes) != 15 {
		t.Errorf("got %d outcomes, want 15 (ok plus 14 API error types)", len(metrics.Outcomes))
	}
}

func TestUnknownOutcomesAreCountedAsInternalSoTheOutcomeLabelStaysBounded(t *testing.T) {
	reg, m := newRegistry(t, nil)
	for i := range 1000 {
		m.ObserveExecution(fmt.Sprintf("weird error %d: /tmp/x", i), time.Millisecond, 0, 0)
	}
	m.ObserveExecution("", time.Millisecond, 0, 0)
	m.ObserveExecution("OK", time.Millisecond, 0, 0) // case matters: not "ok"
	m.ObserveExecution("timeout", time.Second, 0, 0)

	for _, name := range []string{"executor_executions_total", "executor_execution_duration_seconds"} {
		n, err := testutil.GatherAndCount(reg, name)
		if err != nil {
			t.Fatal(err)
		}
		if n != len(metrics.Outcomes) {
			t.Errorf("%s: got %d series, want exactly %d", name, n, len(metrics.Outcomes))
		}
	}
	const want = `
# HELP executor_executions_total Execution requests by outcome: ok or the API error type.
# TYPE executor_executions_total counter
executor_executions_total{outcome="internal"} 1002
executor_executions_total{outcome="invalid_request"} 0
executor_executions_total{outcome="memory_limit"} 0
executor_executions_total{outcome="missing_main"} 0
executor_executions_total{outcome="ok"} 0
executor_executions_total{outcome="output_limit"} 0
executor_executions_total{outcome="overloaded"} 0
executor_executions_total{outcome="request_too_large"} 0
executor_executions_total{outcome="result_not_json"} 0
executor_executions_total{outcome="runtime_error"} 0
executor_executions_total{outcome="sandbox_unavailable"} 0
executor_executions_total{outcome="syntax_error"} 0
executor_executions_total{outcome="timeout"} 1
executor_executions_total{outcome="unauthorized"} 0
executor_executions_total{outcome="unsupported_media_type"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "executor_executions_total"); err != nil {
		t.Fatal(err)
	}
}

func TestAnExecutionRejectedBeforeAWorkerRanItIsCountedButKeptOutOfTheDurationHistogram(t *testing.T) {
	reg, m := newRegistry(t, nil)
	m.ObserveExecution("overloaded", 0, 0, 0)
	m.ObserveExecution("ok", 4*time.Millisecond, 10, 0)

	if n := value(t, reg, "executor_execution_duration_seconds", "outcome", "overloaded"); n != 0 {
		t.Errorf("overloaded rejection observed in the duration histogram %v times, want 0", n)
	}
	if n := value(t, reg, "executor_execution_duration_seconds", "outcome", "ok"); n != 1 {
		t.Errorf("ok executions in the duration histogram: %v, want 1", n)
	}
	if n := value(t, reg, "executor_executions_total", "outcome", "overloaded"); n != 1 {
		t.Errorf("overloaded executions counted: %v, want 1", n)
	}
}

func TestObserveHTTPFoldsRawPathsUnknownMethodsAndImpossibleStatusCodesIntoBoundedValues(t *testing.T) {
	reg, m := newRegistry(t, nil)
	m.ObserveHTTP("/execute", "POST", 200, 3*time.Millisecond)
	m.ObserveHTTP("/execute", "POST", 429, time.Millisecond)
	m.ObserveHTTP(metrics.RouteUnmatched, "GET", 404, 0)
	for i := range 100 {
		m.ObserveHTTP(fmt.Sprintf("/wp-admin/%d.php", i), "PROPFIND", 404, 0)
	}
	m.ObserveHTTP("/healthz", "GET", 0, -time.Second) // broken inputs must not panic
	m.ObserveHTTP("/healthz", "GET", 1000, 0)

	const want = `
# HELP executor_http_requests_total HTTP requests served, by route template, method and status code.
# TYPE executor_http_requests_total counter
executor_http_requests_total{code="200",method="POST",route="/execute"} 1
executor_http_requests_total{code="404",method="GET",route="unmatched"} 1
executor_http_requests_total{code="404",method="other",route="unmatched"} 100
executor_http_requests_total{code="429",method="POST",route="/execute"} 1
executor_http_requests_total{code="unknown",method="GET",route="/healthz"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "executor_http_requests_total"); err != nil {
		t.Fatal(err)
	}
	if n, _ := testutil.GatherAndCount(reg, "executor_http_request_duration_seconds"); n != 3 {
		t.Fatalf("got %d request duration series, want 3 (/execute, /healthz, unmatched)", n)
	}
}

func TestNegativeOutputByteCountsAreIgnoredInsteadOfPanicking(t *testing.T) {
	reg, m := newRegistry(t, nil)
	m.ObserveExecution("ok", time.Millisecond, 100, 7)
	m.ObserveExecution("ok", time.Millisecond, -1, -50)

	const want = `
# HELP executor_execution_output_bytes_total Bytes of script output returned to clients, by stream (stdout or stderr).
# TYPE executor_execution_output_bytes_total counter
executor_execution_output_bytes_total{stream="stderr"} 7
executor_execution_output_bytes_total{stream="stdout"} 100
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "executor_execution_output_bytes_total"); err != nil {
		t.Fatal(err)
	}
}

func TestInFlightGaugeFollowsStartedAndFinishedAndOverloadedCountsRejections(t *testing.T) {
	reg, m := newRegistry(t, nil)
	m.ExecutionStarted()
	m.ExecutionStarted()
	m.ExecutionStarted()
	m.ExecutionFinished()
	m.Overloaded()
	m.Overloaded()

	const want = `
# HELP executor_executions_in_flight Executions currently being handled.
# TYPE executor_executions_in_flight gauge
executor_executions_in_flight 2
# HELP executor_overload_rejections_total Requests rejected because the executor was at capacity.
# TYPE executor_overload_rejections_total counter
executor_overload_rejections_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"executor_executions_in_flight", "executor_overload_rejections_total"); err != nil {
		t.Fatal(err)
	}
}

func TestPoolObserverRecordsSpawnTimeAndAcquireWaitSplitByWarmAndColdPath(t *testing.T) {
	reg, m := newRegistry(t, nil)
	var obs pool.Observer = m
	obs.ObserveSpawn(30 * time.Millisecond)
	obs.ObserveSpawn(2 * time.Second)
	obs.ObserveAcquire(100*time.Microsecond, false)
	obs.ObserveAcquire(100*time.Microsecond, false)
	obs.ObserveAcquire(40*time.Millisecond, true)

	if n := value(t, reg, "executor_pool_spawn_duration_seconds"); n != 2 {
		t.Errorf("spawn observations: %v, want 2", n)
	}
	if n := value(t, reg, "executor_pool_acquire_wait_seconds", "path", "warm"); n != 2 {
		t.Errorf("warm acquire observations: %v, want 2", n)
	}
	if n := value(t, reg, "executor_pool_acquire_wait_seconds", "path", "cold"); n != 1 {
		t.Errorf("cold acquire observations: %v, want 1", n)
	}
}

func TestHistogramsExposeNativeBucketsAlongsideTheClassicOnes(t *testing.T) {
	reg, m := newRegistry(t, nil)
	m.ObserveSpawn(25 * time.Millisecond)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "executor_pool_spawn_duration_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.Schema == nil || len(h.GetPositiveSpan()) == 0 {
			t.Fatalf("no native histogram data: %v", h)
		}
		if len(h.GetBucket()) != 15 {
			t.Fatalf("got %d classic buckets, want 15", len(h.GetBucket()))
		}
		return
	}
	t.Fatal("executor_pool_spawn_duration_seconds not gathered")
}

func TestBuildInfoIsAlwaysOneAndFillsEmptyFields(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg, nil, metrics.BuildInfo{GoVersion: "go1.26.8"})
	const want = `
# HELP executor_build_info Always 1; the labels carry the executor's version, VCS revision and Go version.
# TYPE executor_build_info gauge
executor_build_info{goversion="go1.26.8",revision="unknown",version="unknown"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "executor_build_info"); err != nil {
		t.Fatal(err)
	}
}

func TestNewRegistersTheGoAndProcessCollectors(t *testing.T) {
	reg, _ := newRegistry(t, nil)
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("%s: got %d series (err %v), want 1", name, n, err)
		}
	}
}

func TestRegisteringTwiceOnOneRegistryPanicsInsteadOfSilentlySplittingMetrics(t *testing.T) {
	reg, _ := newRegistry(t, nil)
	defer func() {
		if recover() == nil {
			t.Fatal("second New on the same registry did not panic")
		}
	}()
	metrics.New(reg, nil, metrics.BuildInfo{})
}

func TestEveryExportedMetricPassesPromlintWithNoProblems(t *testing.T) {
	reg, m := newRegistry(t, fixedStat(pool.Stat{LastSpawnErr: errors.New("boom")}))
	exerciseAll(m)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsAreSafeForConcurrentUseWhileBeingScraped(t *testing.T) {
	reg, m := newRegistry(t, fixedStat(pool.Stat{IdleWorkers: 1}))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				m.ExecutionStarted()
				m.ObserveHTTP("/execute", "POST", 200, time.Duration(j)*time.Microsecond)
				m.ObserveExecution(metrics.Outcomes[(i+j)%len(metrics.Outcomes)], time.Millisecond, j, j)
				m.ObserveAcquire(time.Microsecond, j%2 == 0)
				m.ObserveSpawn(time.Millisecond)
				m.ExecutionFinished()
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if v := value(t, reg, "executor_executions_in_flight"); v != 0 {
		t.Fatalf("in-flight after all finished: %v, want 0", v)
	}
}

func TestObserveHTTPLabelsEveryStandardMethodAsTheHTTPLayerDoes(t *testing.T) {
	reg, m := newRegistry(t, nil)
	for _, method := range executor.MethodLabels {
		m.ObserveHTTP(metrics.RouteUnmatched, method, 405, 0)
	}
	m.ObserveHTTP(metrics.RouteUnmatched, "PROPFIND", 405, 0)
	n, err := testutil.GatherAndCount(reg, "executor_http_requests_total")
	if err != nil {
		t.Fatal(err)
	}
	if want := len(executor.MethodLabels) + 1; n != want {
		t.Fatalf("%d method series, want %d (every executor.MethodLabels entry, plus other)", n, want)
	}
	if v := value(t, reg, "executor_http_requests_total", "method", "TRACE"); v != 1 {
		t.Errorf("TRACE counted %v times, want 1", v)
	}
}

// Package metrics owns every Prometheus instrument the executor exports.
//
// It touches nothing but a prometheus.Registerer handed to New: there is no
// init(), no promauto and no default registry, so tests (and a second
// executor in one process) each get their own instruments. State that another
// package owns, the pool, is not copied here but read at scrape time by a
// custom Collector (see poolcollector.go), so a scrape always shows the
// pool's own numbers and nothing can drift out of step with them.
//
// Every label value is taken from a bounded set (Outcomes, Routes,
// executor.MethodLabels, status codes, pool.DestroyReasons): an unknown value is folded
// into a catch-all instead of creating a new series, because one careless
// caller passing a raw path or an error string must not be able to blow up
// the TSDB.
package metrics

import (
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/pool"
)

// namespace prefixes every metric this package defines. The Go runtime and
// process collectors keep their standard go_ and process_ names so stock
// dashboards and alerts work on them unchanged.
const namespace = "executor"

// StatSource is what the pool collector reads at scrape time; *pool.Pool
// satisfies it.
type StatSource interface {
	Stat() pool.Stat
}

// StatFunc adapts a function to StatSource, the way http.HandlerFunc adapts
// a function to http.Handler. It is handy for tests that need a fixed or
// scripted snapshot without a real pool.
type StatFunc func() pool.Stat

// Stat calls f.
func (f StatFunc) Stat() pool.Stat { return f() }

// BuildInfo is exported as the labels of executor_build_info. Empty fields
// are reported as "unknown" (GoVersion defaults to runtime.Version()), so the
// series always exists and a dashboard can join on it.
type BuildInfo struct {
	Version   string
	Revision  string
	GoVersion string
}

// Outcomes is the closed set of values of the outcome label: "ok" plus every
// API error type an execution request can end in (executor.ErrorTypes less
// the refusals of the HTTP request itself, such as not_found: those show in
// the HTTP metrics only). ObserveExecution maps anything else to "internal".
// Every outcome's series exists from New on, at 0, so rate() and ratios see a
// zero rather than a missing series before the first occurrence.
var Outcomes = outcomes()

func outcomes() []string {
	out := []string{string(executor.StatusOK)}
	for _, t := range executor.ErrorTypes {
		if t.Execution() {
			out = append(out, string(t))
		}
	}
	return out
}

// outcomeUnknown is where an outcome outside Outcomes is counted. "internal"
// is honest: an unexpected outcome string is a bug on our side.
const outcomeUnknown = string(executor.TypeInternal)

// Routes is the closed set of values of the route label: the HTTP layer's
// route templates plus RouteUnmatched. ObserveHTTP records any other value
// as RouteUnmatched, so a raw request path passed by mistake cannot create a
// series per URL. A new route template must be added here, or its traffic
// is counted as unmatched. The list is read once, by New.
var Routes = []string{
	"/execute",
	"/execute/batch",
	"/healthz",
	"/readyz",
	"/runtime",
	"/openapi.json",
	"/metrics",
	RouteUnmatched,
}

// RouteUnmatched is the route label value for requests that matched no route
// (404s), and for any route value not in Routes.
const RouteUnmatched = "unmatched"

// Output streams, the values of the stream label.
const (
	streamStdout = "stdout"
	streamStderr = "stderr"
)

// durationBuckets spans what this service really sees: a warm /healthz is
// well under a millisecond, a warm execution of a small script a few ms, a
// cold spawn 10-60 ms, and the execution timeout caps a run at tens of
// seconds. Classic buckets are kept next to native ones because
// histogram_quantile over _bucket works on every Prometheus and Grafana,
// while native histograms need protobuf scraping switched on.
var durationBuckets = []float64{
	0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
}

// histogramOpts returns opts with this service's buckets and native
// histograms enabled. The bucket cap bounds memory per series: observed
// values come from untrusted scripts' run times, so an unbounded native
// histogram would be a (small) memory-growth lever for an attacker.
func histogramOpts(opts prometheus.HistogramOpts) prometheus.HistogramOpts {
	opts.Namespace = namespace
	opts.Buckets = durationBuckets
	opts.NativeHistogramBucketFactor = 1.1
	opts.NativeHistogramMaxBucketNumber = 160
	opts.NativeHistogramMinResetDuration = time.Hour
	return opts
}

// Metrics holds the executor's instruments. Its methods are safe for
// concurrent use and never block; a nil *Metrics is not valid.
type Metrics struct {
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	routes       map[string]bool

	executions        *prometheus.CounterVec
	executionDuration *prometheus.HistogramVec
	outputBytes       *prometheus.CounterVec
	inFlight          prometheus.Gauge
	overloaded        prometheus.Counter
	outcomes          map[string]bool

	spawnDuration prometheus.Histogram
	acquireWarm   prometheus.Observer
	acquireCold   prometheus.Observer
}

// The pool reports spawn, acquire and kill events through this interface.
var _ pool.Observer = (*Metrics)(nil)

// New creates the executor's instruments and registers them on reg, together
// with the Go runtime and process collectors, executor_build_info and, when
// src is not nil, the pool collector that reads src.Stat() at every scrape.
// It panics if registration fails (a duplicate registration is a programming
// error, the same contract as prometheus.MustRegister).
func New(reg prometheus.Registerer, src StatSource, info BuildInfo) *Metrics {
	m := &Metrics{
		routes:   make(map[string]bool, len(Routes)),
		outcomes: make(map[string]bool, len(Outcomes)),
	}
	m.newHTTPInstruments()
	m.newExecutionInstruments()
	acquireWait := m.newPoolInstruments()
	for _, r := range Routes {
		m.routes[r] = true
	}
	for _, o := range Outcomes {
		m.outcomes[o] = true
		m.executions.WithLabelValues(o)
		m.executionDuration.WithLabelValues(o)
	}
	m.outputBytes.WithLabelValues(streamStdout)
	m.outputBytes.WithLabelValues(streamStderr)

	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBuildInfo(info),
		m.httpRequests, m.httpDuration,
		m.executions, m.executionDuration, m.outputBytes, m.inFlight, m.overloaded,
		m.spawnDuration, acquireWait,
	)
	if src != nil {
		reg.MustRegister(newPoolCollector(src))
	}
	return m
}

func (m *Metrics) newHTTPInstruments() {
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "http_requests_total",
		Help:      "HTTP requests served, by route template, method and status code.",
	}, []string{"route", "method", "code"})
	m.httpDuration = prometheus.NewHistogramVec(histogramOpts(prometheus.HistogramOpts{
		Name: "http_request_duration_seconds",
		Help: "Time from receiving an HTTP request to writing its response, by route template.",
	}), []string{"route"})
}

func (m *Metrics) newExecutionInstruments() {
	m.executions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "executions_total",
		Help:      "Execution requests by outcome: ok or the API error type.",
	}, []string{"outcome"})
	m.executionDuration = prometheus.NewHistogramVec(histogramOpts(prometheus.HistogramOpts{
		Name: "execution_duration_seconds",
		Help: "Time a script spent running inside the jail, by outcome. Requests rejected before reaching a worker are not observed.",
	}), []string{"outcome"})
	m.outputBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "execution_output_bytes_total",
		Help:      "Bytes of script output returned to clients, by stream (stdout or stderr).",
	}, []string{"stream"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "executions_in_flight",
		Help:      "Executions currently being handled.",
	})
	m.overloaded = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "overload_rejections_total",
		Help:      "Requests rejected because the executor was at capacity.",
	})
}

// newPoolInstruments creates the spawn and acquire histograms and returns
// the acquire one, for registration.
func (m *Metrics) newPoolInstruments() *prometheus.HistogramVec {
	m.spawnDuration = prometheus.NewHistogram(histogramOpts(prometheus.HistogramOpts{
		Name: "pool_spawn_duration_seconds",
		Help: "Time from starting a sandboxed worker to its ready line, for successful spawns.",
	}))
	acquireWait := prometheus.NewHistogramVec(histogramOpts(prometheus.HistogramOpts{
		Name: "pool_acquire_wait_seconds",
		Help: "Time a run waited for a worker, by path: warm (an idle worker was ready) or cold (it had to wait for a spawn).",
	}), []string{"path"})
	// Resolve the two children once: ObserveAcquire runs on every request and
	// need not hash a label value each time.
	m.acquireWarm = acquireWait.WithLabelValues("warm")
	m.acquireCold = acquireWait.WithLabelValues("cold")
	return acquireWait
}

// newBuildInfo returns the constant executor_build_info{...} 1 gauge, the
// usual way to put versions on a dashboard and in alert joins.
func newBuildInfo(info BuildInfo) prometheus.Collector {
	orUnknown := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	if info.GoVersion == "" {
		info.GoVersion = runtime.Version()
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "build_info",
		Help:      "Always 1; the labels carry the executor's version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{
			"version":   orUnknown(info.Version),
			"revision":  orUnknown(info.Revision),
			"goversion": info.GoVersion,
		},
	})
	g.Set(1)
	return g
}

// ObserveHTTP records one finished HTTP request. route must be the matched
// route template (for example "/execute"), never the raw path; values not in
// Routes are recorded as RouteUnmatched, unknown methods as "other" and
// status codes outside 100-599 as "unknown".
func (m *Metrics) ObserveHTTP(route string, method string, status int, d time.Duration) {
	if !m.routes[route] {
		route = RouteUnmatched
	}
	method = executor.MethodLabel(method)
	code := "unknown"
	if status >= 100 && status <= 599 {
		code = strconv.Itoa(status)
	}
	m.httpRequests.WithLabelValues(route, method, code).Inc()
	m.httpDuration.WithLabelValues(route).Observe(seconds(d))
}

// ObserveExecution records one execution request, whatever its outcome, so
// that executions_total is the denominator of every error ratio. outcome
// should be one of Outcomes; anything else is counted as "internal". d is
// the time the script ran inside the jail: pass 0 for a request rejected
// before a worker ran it (overloaded, invalid_request, ...), and it is
// counted but kept out of the duration histogram so that cheap rejections
// do not drag the run-time quantiles down. Negative byte counts are ignored.
func (m *Metrics) ObserveExecution(outcome string, d time.Duration, stdoutBytes, stderrBytes int) {
	if !m.outcomes[outcome] {
		outcome = outcomeUnknown
	}
	m.executions.WithLabelValues(outcome).Inc()
	if d > 0 {
		m.executionDuration.WithLabelValues(outcome).Observe(d.Seconds())
	}
	// Counter.Add panics on a negative value; a bad byte count must not take
	// the request (or the server) down.
	if stdoutBytes > 0 {
		m.outputBytes.WithLabelValues(streamStdout).Add(float64(stdoutBytes))
	}
	if stderrBytes > 0 {
		m.outputBytes.WithLabelValues(streamStderr).Add(float64(stderrBytes))
	}
}

// ExecutionStarted increments the in-flight gauge; pair every call with
// ExecutionFinished (defer it).
func (m *Metrics) ExecutionStarted() { m.inFlight.Inc() }

// ExecutionFinished decrements the in-flight gauge.
func (m *Metrics) ExecutionFinished() { m.inFlight.Dec() }

// Overloaded counts one request rejected because the executor was at
// capacity. It is separate from the "overloaded" outcome so that rejections
// from any route (including batch) are visible in one counter.
func (m *Metrics) Overloaded() { m.overloaded.Inc() }

// ObserveSpawn implements pool.Observer.
func (m *Metrics) ObserveSpawn(d time.Duration) { m.spawnDuration.Observe(seconds(d)) }

// ObserveKillError implements pool.Observer. It records nothing: failed
// kills are counted by the pool (Stat.KillFailed) and exported at scrape time
// as executor_pool_kill_failures_total; the server logs each one.
func (m *Metrics) ObserveKillError(error) {}

// ObserveAcquire implements pool.Observer.
func (m *Metrics) ObserveAcquire(wait time.Duration, cold bool) {
	if cold {
		m.acquireCold.Observe(seconds(wait))
		return
	}
	m.acquireWarm.Observe(seconds(wait))
}

// seconds converts d to seconds, clamping negatives (a clock step between
// two time.Now calls without monotonic readings) to 0 so a histogram never
// records an impossible duration.
func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}

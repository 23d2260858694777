package loadtest

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

const (
	// MaxErrorTypes bounds the distinct error types kept. The target may be
	// any server, possibly a broken or hostile one, so what it puts in the
	// "type" field must not be able to grow our memory or the report without
	// bound; further types are counted under OtherErrorType.
	MaxErrorTypes = 32
	// OtherErrorType collects every error type beyond MaxErrorTypes.
	OtherErrorType = "other"
	// UnknownErrorType counts non-2xx responses whose body is not the API's
	// JSON error envelope (a proxy's HTML 502, an empty body, ...).
	UnknownErrorType = "unknown"

	maxErrorTypeLen          = 64
	maxTransportErrorSamples = 5
	maxTransportErrorLen     = 200
)

// Collector turns vegeta results into a Summary. Add is called from the
// single results loop while Snapshot may be called concurrently by the
// progress reporter, hence the mutex.
type Collector struct {
	mu sync.Mutex

	warmupEnd time.Time // results sent before this are only counted, not measured

	metrics    vegeta.Metrics        // all measured results (vegeta semantics: latency of every request)
	okLatency  vegeta.LatencyMetrics // successful (2xx) responses only
	successes  uint64
	warmupReqs uint64

	statuses         map[int]uint64
	errorTypes       map[string]uint64
	transportErrors  uint64
	transportSamples []string
	retryAfter429    uint64
}

// NewCollector returns a Collector that ignores results whose request was
// sent before warmupEnd (zero time: measure everything).
func NewCollector(warmupEnd time.Time) *Collector {
	return &Collector{
		warmupEnd:  warmupEnd,
		statuses:   map[int]uint64{},
		errorTypes: map[string]uint64{},
	}
}

// InWarmup reports whether r belongs to the excluded warmup period. The
// request's send time decides, not its completion, so a slow warmup request
// never leaks into the measured window.
func (c *Collector) InWarmup(r *vegeta.Result) bool {
	return !c.warmupEnd.IsZero() && r.Timestamp.Before(c.warmupEnd)
}

// Add records one result.
func (c *Collector) Add(r *vegeta.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()

	if c.InWarmup(r) {
		c.warmupReqs++
		return
	}

	// vegeta.Metrics gives us latency quantiles and the time span. It also
	// keeps every distinct error string forever, and transport errors embed
	// ephemeral ports, so over a long run against a failing server that set
	// would grow without bound: hand it a copy without the error.
	forMetrics := *r
	forMetrics.Error, forMetrics.Body = "", nil
	c.metrics.Add(&forMetrics)

	if r.Code == 0 {
		// No HTTP response at all: refused, reset, timed out, ...
		c.transportErrors++
		c.sampleTransportError(r.Error)
		return
	}

	c.statuses[int(r.Code)]++
	if isSuccess(r.Code) {
		c.successes++
		c.okLatency.Add(r.Latency)
		return
	}
	if r.Code == http.StatusTooManyRequests && r.Headers.Get("Retry-After") != "" {
		c.retryAfter429++
	}
	c.countErrorType(errorType(r.Body))
}

// isSuccess treats only 2xx as success. vegeta also counts 3xx, but this
// API never redirects, so a 3xx means something in front of it is wrong.
func isSuccess(code uint16) bool { return code >= 200 && code < 300 }

func (c *Collector) countErrorType(t string) {
	if _, ok := c.errorTypes[t]; !ok && len(c.errorTypes) >= MaxErrorTypes {
		t = OtherErrorType
	}
	c.errorTypes[t]++
}

func (c *Collector) sampleTransportError(msg string) {
	if len(c.transportSamples) >= maxTransportErrorSamples {
		return
	}
	if len(msg) > maxTransportErrorLen {
		msg = msg[:maxTransportErrorLen] + "..."
	}
	for _, s := range c.transportSamples {
		if s == msg {
			return
		}
	}
	c.transportSamples = append(c.transportSamples, msg)
}

// errorType extracts error.type from the API's error envelope
// {"error": {"type": "...", "message": "..."}}. Only the type is kept: the
// message may be long or carry script output, and it is not aggregatable.
func errorType(body []byte) string {
	var env struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Error.Type == "" {
		return UnknownErrorType
	}
	return sanitizeErrorType(env.Error.Type)
}

// sanitizeErrorType keeps the type printable and short: it is echoed to a
// terminal and used as a JSON key, and comes from the server under test.
func sanitizeErrorType(t string) string {
	if len(t) > maxErrorTypeLen {
		t = t[:maxErrorTypeLen]
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			return r
		}
		return '?'
	}, t)
}

// Progress is the running view printed by -progress.
type Progress struct {
	Done        uint64
	WarmupDone  uint64
	SuccessRate float64 // 0..1, of measured results
	P50, P99    time.Duration
}

// Snapshot returns the measured-window statistics so far.
func (c *Collector) Snapshot() Progress {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := Progress{Done: c.metrics.Requests, WarmupDone: c.warmupReqs}
	if p.Done > 0 {
		p.SuccessRate = float64(c.successes) / float64(p.Done)
		p.P50 = c.metrics.Latencies.Quantile(0.50)
		p.P99 = c.metrics.Latencies.Quantile(0.99)
	}
	return p
}

// Summary computes the final report. cfg only supplies the descriptive
// fields (target, mode, ...); all numbers come from the results.
func (c *Collector) Summary(cfg *Config) *Summary {
	c.mu.Lock()
	defer c.mu.Unlock()

	m := &c.metrics
	m.Close()

	s := &Summary{
		SchemaVersion:          SchemaVersion,
		URL:                    cfg.URL,
		Mode:                   cfg.Mode(),
		TargetRate:             cfg.Rate,
		Concurrency:            cfg.Concurrency,
		Script:                 cfg.ScriptSource,
		BatchSize:              cfg.BatchSize,
		WarmupSeconds:          cfg.Warmup.Seconds(),
		WarmupRequests:         c.warmupReqs,
		Requests:               m.Requests,
		Successes:              c.successes,
		StatusCodes:            map[string]uint64{},
		ErrorTypes:             map[string]uint64{},
		TransportErrors:        c.transportErrors,
		TransportErrorExamples: append([]string{}, c.transportSamples...),
		RetryAfter429:          c.retryAfter429,
		Latency:                latencySummary(&m.Latencies, m.Requests),
	}
	for code, n := range c.statuses {
		s.StatusCodes[strconv.Itoa(code)] = n
	}
	for t, n := range c.errorTypes {
		s.ErrorTypes[t] = n
	}
	if c.successes > 0 {
		s.SuccessLatency = latencySummary(&c.okLatency, c.successes)
	}

	if m.Requests > 0 {
		s.SuccessRatio = float64(c.successes) / float64(m.Requests)
		// Same definitions as vegeta: rate over the span in which requests
		// were sent, throughput over that span plus the wait for the last
		// responses, so slow tails lower throughput as they should.
		s.DurationSeconds = m.Duration.Seconds()
		s.WaitSeconds = m.Wait.Seconds()
		s.Rate = m.Rate
		if total := (m.Duration + m.Wait).Seconds(); total > 0 {
			s.Throughput = float64(c.successes) / total
		}
	}
	return s
}

func latencySummary(l *vegeta.LatencyMetrics, n uint64) LatencySummary {
	if n == 0 {
		return LatencySummary{}
	}
	return LatencySummary{
		Mean: ms(time.Duration(float64(l.Total) / float64(n))),
		P50:  ms(l.Quantile(0.50)),
		P90:  ms(l.Quantile(0.90)),
		P99:  ms(l.Quantile(0.99)),
		Max:  ms(l.Max),
		Min:  ms(l.Min),
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sortedKeys returns m's keys ordered by descending count, then name, so the
// most frequent outcome is read first and output is deterministic.
func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// SchemaVersion is bumped whenever a JSON field of Summary is renamed,
// removed or changes meaning. Adding a field does not bump it.
const SchemaVersion = 1

// Summary is the result of a run. Its JSON field names are a documented,
// stable interface (docs/LOADTEST.md); scripts and CI parse them.
type Summary struct {
	SchemaVersion int    `json:"schema_version"`
	URL           string `json:"url"`
	Mode          string `json:"mode"`        // "open" or "closed"
	TargetRate    int    `json:"target_rate"` // requested req/s; 0 in closed loop
	Concurrency   int    `json:"concurrency"` // closed loop: workers; open loop: in-flight cap (0 = none)
	Script        string `json:"script"`
	BatchSize     int    `json:"batch_size"`  // inputs per request; 0 = not batch
	Interrupted   bool   `json:"interrupted"` // stopped early (Ctrl-C); numbers cover only what completed

	WarmupSeconds  float64 `json:"warmup_s"`
	WarmupRequests uint64  `json:"warmup_requests"` // excluded from everything below

	DurationSeconds float64 `json:"duration_s"` // first to last request sent
	WaitSeconds     float64 `json:"wait_s"`     // last request sent to last response
	Requests        uint64  `json:"requests"`
	Successes       uint64  `json:"successes"`
	SuccessRatio    float64 `json:"success_ratio"` // 0..1
	Rate            float64 `json:"rate"`          // requests sent per second
	Throughput      float64 `json:"throughput"`    // successful responses per second

	Latency        LatencySummary `json:"latency_ms"`         // every request, including errors
	SuccessLatency LatencySummary `json:"success_latency_ms"` // 2xx responses only

	StatusCodes            map[string]uint64 `json:"status_codes"` // HTTP status -> count; transport errors excluded
	ErrorTypes             map[string]uint64 `json:"error_types"`  // error.type of non-2xx responses -> count
	TransportErrors        uint64            `json:"transport_errors"`
	TransportErrorExamples []string          `json:"transport_error_examples"`
	RetryAfter429          uint64            `json:"retry_after_429"` // 429s that carried Retry-After
}

// LatencySummary holds latencies in milliseconds (fractional), so they are
// readable without knowing Go's nanosecond durations.
type LatencySummary struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Min  float64 `json:"min"`
}

// WriteJSON writes s as indented JSON followed by a newline.
func WriteJSON(w io.Writer, s *Summary) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// WriteText writes s as an aligned human-readable table.
func WriteText(w io.Writer, s *Summary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }

	p("Target\t%s", s.URL)
	switch s.Mode {
	case "closed":
		p("Mode\tclosed loop, %d workers", s.Concurrency)
	default:
		inflight := "no in-flight cap"
		if s.Concurrency > 0 {
			inflight = fmt.Sprintf("at most %d in flight", s.Concurrency)
		}
		p("Mode\topen loop, %d req/s target (%s)", s.TargetRate, inflight)
	}
	script := s.Script
	if s.BatchSize > 0 {
		script += fmt.Sprintf(" (batch of %d inputs)", s.BatchSize)
	}
	p("Script\t%s", script)
	if s.WarmupSeconds > 0 {
		p("Warmup\t%gs, %d requests excluded", s.WarmupSeconds, s.WarmupRequests)
	}
	p("Duration\t%.2fs sending + %.3fs waiting", s.DurationSeconds, s.WaitSeconds)
	p("Requests\t%d (%.1f req/s)", s.Requests, s.Rate)
	p("Throughput\t%.1f successful/s", s.Throughput)
	p("Success\t%.2f%% (%d of %d)", 100*s.SuccessRatio, s.Successes, s.Requests)
	p("")
	p("Latency (ms)\tmean\tp50\tp90\tp99\tmax")
	p("  all\t%s\t%s\t%s\t%s\t%s", f3(s.Latency.Mean), f3(s.Latency.P50), f3(s.Latency.P90), f3(s.Latency.P99), f3(s.Latency.Max))
	if s.Successes > 0 {
		l := s.SuccessLatency
		p("  2xx only\t%s\t%s\t%s\t%s\t%s", f3(l.Mean), f3(l.P50), f3(l.P90), f3(l.P99), f3(l.Max))
	}
	writeOutcomes(p, s)
	return tw.Flush()
}

// writeOutcomes writes the status codes, error types and transport errors.
func writeOutcomes(p func(string, ...any), s *Summary) {
	p("")
	p("Status codes")
	codes := make([]string, 0, len(s.StatusCodes))
	for c := range s.StatusCodes {
		codes = append(codes, c)
	}
	// Numeric order: 200 before 422 before 503 reads naturally.
	sort.Slice(codes, func(i, j int) bool {
		a, _ := strconv.Atoi(codes[i])
		b, _ := strconv.Atoi(codes[j])
		return a < b
	})
	for _, c := range codes {
		extra := ""
		if c == "429" && s.RetryAfter429 > 0 {
			extra = fmt.Sprintf("\t(%d with Retry-After)", s.RetryAfter429)
		}
		p("  %s\t%d%s", c, s.StatusCodes[c], extra)
	}
	if len(codes) == 0 {
		p("  (none)")
	}
	if len(s.ErrorTypes) > 0 {
		p("")
		p("Error types")
		for _, t := range sortedKeys(s.ErrorTypes) {
			p("  %s\t%d", t, s.ErrorTypes[t])
		}
	}
	p("")
	p("Transport errors\t%d", s.TransportErrors)
	for _, e := range s.TransportErrorExamples {
		p("  e.g.\t%s", strings.ReplaceAll(e, "\t", " "))
	}
}

func f3(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

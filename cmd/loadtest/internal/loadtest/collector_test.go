package loadtest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func result(seq int, code uint16, body string, hdr http.Header) *vegeta.Result {
	r := &vegeta.Result{
		Seq:       uint64(seq),
		Code:      code,
		Timestamp: t0.Add(time.Duration(seq) * 10 * time.Millisecond),
		Latency:   time.Duration(seq+1) * time.Millisecond,
		Body:      []byte(body),
		Headers:   hdr,
	}
	if code == 0 {
		r.Error = "dial tcp 127.0.0.1:1: connect: connection refused"
	} else if code >= 400 {
		r.Error = http.StatusText(int(code))
	}
	return r
}

func testConfig() *Config {
	return &Config{URL: "http://x/execute", Rate: 10, Duration: time.Second, ScriptSource: "built-in hello example"}
}

func TestCollectorCountsStatusesErrorTypesRetryAfterAndTransportErrors(t *testing.T) {
	c := NewCollector(time.Time{})
	retry := http.Header{"Retry-After": {"2"}}
	c.Add(result(0, 200, `{"result": 1}`, nil))
	c.Add(result(1, 200, `{"result": 1}`, nil))
	c.Add(result(2, 422, `{"error": {"type": "runtime_error", "message": "boom"}}`, nil))
	c.Add(result(3, 422, `{"error": {"type": "syntax_error", "message": "x"}}`, nil))
	c.Add(result(4, 429, `{"error": {"type": "overloaded", "message": "busy"}}`, retry))
	c.Add(result(5, 429, `{"error": {"type": "overloaded", "message": "busy"}}`, nil))
	c.Add(result(6, 503, `<html>down</html>`, nil))
	c.Add(result(7, 0, ``, nil))
	s := c.Summary(testConfig())

	if s.Requests != 8 || s.Successes != 2 || s.SuccessRatio != 0.25 {
		t.Errorf("requests %d successes %d ratio %v", s.Requests, s.Successes, s.SuccessRatio)
	}
	wantStatus := map[string]uint64{"200": 2, "422": 2, "429": 2, "503": 1}
	if fmt.Sprint(s.StatusCodes) != fmt.Sprint(wantStatus) {
		t.Errorf("status_codes %v, want %v", s.StatusCodes, wantStatus)
	}
	wantTypes := map[string]uint64{"runtime_error": 1, "syntax_error": 1, "overloaded": 2, UnknownErrorType: 1}
	if fmt.Sprint(s.ErrorTypes) != fmt.Sprint(wantTypes) {
		t.Errorf("error_types %v, want %v", s.ErrorTypes, wantTypes)
	}
	if s.RetryAfter429 != 1 {
		t.Errorf("retry_after_429 = %d, want 1 (only one 429 carried the header)", s.RetryAfter429)
	}
	if s.TransportErrors != 1 || len(s.TransportErrorExamples) != 1 || !strings.Contains(s.TransportErrorExamples[0], "refused") {
		t.Errorf("transport %d %v", s.TransportErrors, s.TransportErrorExamples)
	}
	if s.Latency.Max != 8 || s.SuccessLatency.Max != 2 {
		t.Errorf("max latency all %v, 2xx %v (ms)", s.Latency.Max, s.SuccessLatency.Max)
	}
	// Sent over 70ms, last response 8ms later: throughput is 2 successes
	// over 78ms.
	if want := 2 / 0.078; s.Throughput < want*0.99 || s.Throughput > want*1.01 {
		t.Errorf("throughput %v, want %v", s.Throughput, want)
	}
}

func TestErrorTypesBeyondTheLimitAreLumpedIntoOther(t *testing.T) {
	c := NewCollector(time.Time{})
	for i := range MaxErrorTypes + 10 {
		c.Add(result(i, 422, fmt.Sprintf(`{"error": {"type": "t%d"}}`, i), nil))
	}
	// A type seen before the cap keeps its own row afterwards.
	c.Add(result(100, 422, `{"error": {"type": "t0"}}`, nil))
	s := c.Summary(testConfig())

	if len(s.ErrorTypes) != MaxErrorTypes+1 {
		t.Errorf("%d distinct types kept, want %d plus %q", len(s.ErrorTypes), MaxErrorTypes, OtherErrorType)
	}
	if s.ErrorTypes[OtherErrorType] != 10 || s.ErrorTypes["t0"] != 2 {
		t.Errorf("other %d, t0 %d", s.ErrorTypes[OtherErrorType], s.ErrorTypes["t0"])
	}
}

func TestHostileErrorTypesAreTruncatedAndStrippedOfControlCharacters(t *testing.T) {
	c := NewCollector(time.Time{})
	c.Add(result(0, 500, `{"error": {"type": "evil\u001b[2Jtype\nx"}}`, nil))
	c.Add(result(1, 500, `{"error": {"type": "`+strings.Repeat("a", 1000)+`"}}`, nil))
	c.Add(result(2, 500, `{"error": "not an object"}`, nil))
	s := c.Summary(testConfig())

	for typ := range s.ErrorTypes {
		if len(typ) > 64 || strings.ContainsAny(typ, "\x1b\n") {
			t.Errorf("unsafe type kept: %q", typ)
		}
	}
	if s.ErrorTypes["evil??2Jtype?x"] != 1 || s.ErrorTypes[strings.Repeat("a", 64)] != 1 || s.ErrorTypes[UnknownErrorType] != 1 {
		t.Errorf("types %v", s.ErrorTypes)
	}
}

func TestResultsSentDuringWarmupAreExcludedEvenIfTheyFinishAfterIt(t *testing.T) {
	c := NewCollector(t0.Add(25 * time.Millisecond))
	for i := range 6 { // sent at 0,10,20 (warmup) and 30,40,50 ms
		r := result(i, 200, ``, nil)
		if i == 2 {
			r.Latency = time.Second // finishes long after the warmup
		}
		c.Add(r)
	}
	s := c.Summary(testConfig())
	if s.WarmupRequests != 3 || s.Requests != 3 || s.Latency.Max >= 1000 {
		t.Errorf("warmup %d, measured %d, max %vms", s.WarmupRequests, s.Requests, s.Latency.Max)
	}
}

func TestManyDistinctTransportErrorsKeepOnlyAFewShortExamples(t *testing.T) {
	c := NewCollector(time.Time{})
	for i := range 50 {
		r := result(i, 0, ``, nil)
		r.Error = fmt.Sprintf("read tcp 127.0.0.1:%d->127.0.0.1:8080: %s", 40000+i, strings.Repeat("x", 500))
		c.Add(r)
	}
	s := c.Summary(testConfig())
	if s.TransportErrors != 50 || len(s.TransportErrorExamples) != maxTransportErrorSamples {
		t.Errorf("count %d, examples %d", s.TransportErrors, len(s.TransportErrorExamples))
	}
	for _, e := range s.TransportErrorExamples {
		if len(e) > maxTransportErrorLen+3 {
			t.Errorf("example of %d bytes kept", len(e))
		}
	}
	if len(s.StatusCodes) != 0 {
		t.Errorf("transport errors counted as statuses: %v", s.StatusCodes)
	}
}

func TestEmptyRunProducesAZeroSummaryRatherThanNaNs(t *testing.T) {
	s := NewCollector(time.Time{}).Summary(testConfig())
	var b strings.Builder
	if err := WriteJSON(&b, s); err != nil {
		t.Fatalf("zero summary does not encode: %v", err)
	}
	if err := WriteText(&b, s); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "NaN") {
		t.Errorf("NaN in output:\n%s", b.String())
	}
}

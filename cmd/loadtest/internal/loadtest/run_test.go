package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// runMain runs the command in-process and returns its exit code and output.
func runMain(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func runJSON(t *testing.T, args ...string) *Summary {
	t.Helper()
	code, out, errOut := runMain(t, t.Context(), append(args, "-json")...)
	if code != ExitOK {
		t.Fatalf("exit code %d, stderr:\n%s", code, errOut)
	}
	var s Summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, out)
	}
	return &s
}

// runUntilEnough runs the command against a fresh fake API and returns the
// API with the output. Other work on a small machine (parallel test binaries,
// fuzzers) can starve a short run; rather than make every test long, a run
// that reached fewer than minRequests is repeated with a longer window.
func runUntilEnough(t *testing.T, minRequests int, args func(url, duration string) []string) (api *fakeAPI, code int, stdout, stderr string) {
	t.Helper()
	for _, d := range []string{"300ms", "1s", "3s"} {
		var srv *httptest.Server
		api, srv = newFakeAPI(t)
		code, stdout, stderr = runMain(t, t.Context(), args(srv.URL+"/execute", d)...)
		if api.tally().total >= minRequests {
			return
		}
		t.Logf("only %d requests in %s (machine busy?); retrying longer", api.tally().total, d)
	}
	return
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSummaryCountsEveryStatusAndErrorTypeExactlyAsTheServerSentThem(t *testing.T) {
	api, code, out, errOut := runUntilEnough(t, 5, func(url, d string) []string {
		return []string{"-url", url, "-rate", "100", "-duration", d, "-json"}
	})
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s Summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	got := api.tally()

	if len(got.badRequests) > 0 {
		t.Fatalf("server rejected requests: %v", got.badRequests[:min(3, len(got.badRequests))])
	}
	if got.total < 5 {
		t.Fatalf("only %d requests reached the server; too few to exercise every response kind", got.total)
	}
	if s.Requests != uint64(got.total) {
		t.Errorf("requests = %d, server saw %d", s.Requests, got.total)
	}
	if !maps.Equal(s.StatusCodes, got.statuses) {
		t.Errorf("status_codes = %v, server sent %v", s.StatusCodes, got.statuses)
	}
	if !maps.Equal(s.ErrorTypes, got.types) {
		t.Errorf("error_types = %v, server sent %v", s.ErrorTypes, got.types)
	}
	if s.RetryAfter429 != uint64(got.retryAfter) || got.retryAfter == 0 {
		t.Errorf("retry_after_429 = %d, server sent %d", s.RetryAfter429, got.retryAfter)
	}
	if s.Successes != got.statuses["200"] {
		t.Errorf("successes = %d, server sent %d 200s", s.Successes, got.statuses["200"])
	}
	wantRatio := float64(got.statuses["200"]) / float64(got.total)
	if diff := s.SuccessRatio - wantRatio; diff > 1e-9 || diff < -1e-9 {
		t.Errorf("success_ratio = %v, want %v", s.SuccessRatio, wantRatio)
	}
	if s.TransportErrors != 0 {
		t.Errorf("transport_errors = %d against a healthy server", s.TransportErrors)
	}
	if s.Throughput <= 0 || s.Latency.P50 <= 0 || s.Latency.Max < s.Latency.P99 || s.Latency.P99 < s.Latency.P50 {
		t.Errorf("implausible throughput/latency: %+v %+v", s.Throughput, s.Latency)
	}
}

func TestRequestBodyCarriesTheDefaultHelloScriptAndTheInputFile(t *testing.T) {
	api, srv := newFakeAPI(t)
	input := writeFile(t, "in.json", `{ "n": 3,
		"name": "x" }`)
	runJSON(t, "-url", srv.URL+"/execute", "-rate", "20", "-duration", "200ms", "-input", input)

	got := api.tally()
	if len(got.bodies) == 0 {
		t.Fatal("server saw no request")
	}
	var script string
	if err := json.Unmarshal(got.bodies[0]["script"], &script); err != nil || script != DefaultScript {
		t.Errorf("script = %q (%v), want the built-in hello example", script, err)
	}
	if in := string(got.bodies[0]["input"]); in != `{"n":3,"name":"x"}` {
		t.Errorf("input = %s", in)
	}
}

// documentedFields reads the JSON field names from the "Summary fields"
// table of docs/LOADTEST.md, so the docs and the output cannot drift apart.
func documentedFields(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../../../docs/LOADTEST.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "## Summary fields")
	if !ok {
		t.Fatal("docs/LOADTEST.md has no Summary fields section")
	}
	var fields []string
	for line := range strings.Lines(section) {
		if rest, ok := strings.CutPrefix(line, "| `"); ok {
			name, _, _ := strings.Cut(rest, "`")
			fields = append(fields, name)
		}
	}
	slices.Sort(fields)
	return fields
}

func TestJSONOutputParsesAndHasExactlyTheDocumentedFields(t *testing.T) {
	_, srv := newFakeAPI(t)
	code, out, errOut := runMain(t, t.Context(), "-url", srv.URL+"/execute", "-rate", "20", "-duration", "300ms", "-json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	want := documentedFields(t)
	if keys := slices.Sorted(maps.Keys(doc)); !reflect.DeepEqual(keys, want) {
		t.Errorf("fields = %v\ndocumented %v", keys, want)
	}
	for _, f := range []string{"latency_ms", "success_latency_ms"} {
		var lat map[string]float64
		if err := json.Unmarshal(doc[f], &lat); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if keys := slices.Sorted(maps.Keys(lat)); !reflect.DeepEqual(keys, []string{"max", "mean", "min", "p50", "p90", "p99"}) {
			t.Errorf("%s fields = %v", f, keys)
		}
	}
	var s Summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.SchemaVersion != SchemaVersion || s.Mode != "open" || s.TargetRate != 20 || s.URL != srv.URL+"/execute" {
		t.Errorf("descriptive fields wrong: %+v", s)
	}
}

func TestTextSummaryShowsLatencyStatusesErrorTypesAndRetryAfter(t *testing.T) {
	_, code, out, errOut := runUntilEnough(t, 5, func(url, d string) []string {
		return []string{"-url", url, "-rate", "100", "-duration", d}
	})
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Throughput", "Success", "p50", "p99", "200", "422", "429", "with Retry-After", "runtime_error", "syntax_error", "overloaded", "unknown", "Transport errors"} {
		if !strings.Contains(out, want) {
			t.Errorf("text summary lacks %q:\n%s", want, out)
		}
	}
}

// The report is one file that needs nothing else: no script, style, font
// or image from anywhere. (That it draws is checked in Chromium:
// report_browser_test.go.)
func TestHTMLReportIsOneSelfContainedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.html")
	_, code, _, errOut := runUntilEnough(t, 5, func(url, d string) []string {
		return []string{"-url", url, "-rate", "100", "-duration", d, "-html", path, "-json"}
	})
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{"<!DOCTYPE html>", "Load test: http://127.0.0.1", `id="lat-chart"`, `id="tput-chart"`, `id="hist-chart"`, `id="statuses"`} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q (%d bytes)", want, len(b))
		}
	}
	for _, bad := range []string{"<script src", "<link", "@import", "url(", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("report refers to something outside itself: %q", bad)
		}
	}
}

func TestOpenLoopRoughlyHonoursTheRequestedRate(t *testing.T) {
	api, srv := newFakeAPI(t)
	s := runJSON(t, "-url", srv.URL+"/execute", "-rate", "50", "-duration", "1s")

	// 50 are scheduled. The pacer never runs ahead of its schedule, so the
	// upper bound holds however busy the machine is and catches a rate
	// that is ignored; the lower bound only catches "barely sent", since a
	// machine shared with other work can delay sending a lot.
	if n := api.tally().total; n < 5 || n > 55 {
		t.Errorf("server saw %d requests for 50/s over 1s", n)
	}
	if s.Rate <= 0 || s.Rate > 100 {
		t.Errorf("reported rate %.1f for a 50/s target", s.Rate)
	}
	if s.Mode != "open" || s.TargetRate != 50 {
		t.Errorf("mode fields: %q %d", s.Mode, s.TargetRate)
	}
}

func TestClosedLoopKeepsExactlyConcurrencyRequestsInFlight(t *testing.T) {
	// Every request is held until 4 are in flight at once, so reaching 4
	// proves the workers are concurrent, and never exceeding 4 proves the
	// cap, without depending on timing.
	api, srv := newFakeAPI(t, func(f *fakeAPI) { f.holdUntil = 4 })
	began := time.Now()
	s := runJSON(t, "-url", srv.URL+"/execute", "-rate", "0", "-concurrency", "4", "-duration", "300ms")
	got := api.tally()

	if got.maxInFlight != 4 {
		t.Errorf("at most %d requests in flight at once with -concurrency 4, want exactly 4", got.maxInFlight)
	}
	if time.Since(began) > 1900*time.Millisecond {
		t.Errorf("took %s: the server waited out its hold, so 4 were never in flight together", time.Since(began))
	}
	if s.Requests != uint64(got.total) || got.total < 4 {
		t.Errorf("requests %d, server saw %d", s.Requests, got.total)
	}
	if s.Mode != "closed" || s.Concurrency != 4 || s.TargetRate != 0 {
		t.Errorf("mode fields: %q %d %d", s.Mode, s.Concurrency, s.TargetRate)
	}
}

func TestBatchModeSendsTheInputsArrayToTheBatchEndpoint(t *testing.T) {
	api, srv := newFakeAPI(t)
	inputs := writeFile(t, "inputs.json", `[1, {"a": 2}, "three"]`)
	s := runJSON(t, "-url", srv.URL+"/execute", "-batch", inputs, "-rate", "20", "-duration", "200ms")

	got := api.tally()
	if got.paths["/execute/batch"] != got.total || got.total == 0 {
		t.Fatalf("paths = %v", got.paths)
	}
	if in := string(got.bodies[0]["inputs"]); in != `[1,{"a":2},"three"]` {
		t.Errorf("inputs = %s", in)
	}
	if _, ok := got.bodies[0]["input"]; ok {
		t.Error("batch request also carries a single input")
	}
	if s.BatchSize != 3 || s.URL != srv.URL+"/execute/batch" {
		t.Errorf("batch_size %d url %s", s.BatchSize, s.URL)
	}
}

func TestAPIKeyIsSentAsABearerToken(t *testing.T) {
	api, srv := newFakeAPI(t, func(f *fakeAPI) { f.wantKey = "k-123" })
	runJSON(t, "-url", srv.URL+"/execute", "-api-key", "k-123", "-rate", "20", "-duration", "200ms")
	if got := api.tally(); len(got.badRequests) > 0 || got.total == 0 {
		t.Errorf("total %d, rejected: %v", got.total, got.badRequests)
	}
}

func TestWarmupRequestsAreCountedSeparatelyExcludedFromTheSummaryAndPlotted(t *testing.T) {
	api, srv := newFakeAPI(t)
	path := filepath.Join(t.TempDir(), "plot.html")
	s := runJSON(t, "-url", srv.URL+"/execute", "-rate", "50", "-warmup", "300ms", "-duration", "300ms", "-html", path)
	total := api.tally().total
	if s.WarmupRequests == 0 || s.Requests == 0 {
		t.Fatalf("warmup_requests %d, requests %d", s.WarmupRequests, s.Requests)
	}
	if s.WarmupRequests+s.Requests != uint64(total) {
		t.Errorf("warmup %d + measured %d != %d sent", s.WarmupRequests, s.Requests, total)
	}
	var counted uint64
	for _, n := range s.StatusCodes {
		counted += n
	}
	if counted != s.Requests {
		t.Errorf("status_codes add up to %d, requests = %d", counted, s.Requests)
	}
	if b, err := os.ReadFile(path); err != nil || !strings.Contains(string(b), `"warmup_s":0.3`) {
		t.Errorf("report does not mark the 0.3 s warmup (%v)", err)
	}
}

func TestProgressLinesGoToStderrWhileRunning(t *testing.T) {
	_, srv := newFakeAPI(t)
	code, out, errOut := runMain(t, t.Context(), "-url", srv.URL+"/execute", "-rate", "50", "-duration", "600ms", "-progress", "100ms", "-json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) < 2 {
		t.Fatalf("want several progress lines, got %q", errOut)
	}
	withStats := 0
	for _, l := range lines {
		if !strings.HasPrefix(l, "[") || !strings.Contains(l, "sent") || !strings.Contains(l, "/s)") {
			t.Errorf("not a progress line: %q", l)
		}
		if strings.Contains(l, "success") && strings.Contains(l, "p50") && strings.Contains(l, "p99") {
			withStats++
		}
	}
	if withStats == 0 {
		t.Errorf("no progress line reports success and latency:\n%s", errOut)
	}
	if strings.Contains(out, "sent") {
		t.Error("progress leaked into stdout, which must stay pure JSON")
	}
}

func TestInterruptStopsTheRunEarlyAndStillPrintsTheSummary(t *testing.T) {
	_, srv := newFakeAPI(t)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	began := time.Now()
	code, out, errOut := runMain(t, ctx, "-url", srv.URL+"/execute", "-rate", "50", "-duration", "30s", "-json")
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("run took %s after interrupt", took)
	}
	if code != ExitFailure || !strings.Contains(errOut, "interrupted") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	var s Summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("no summary after interrupt: %v\n%s", err, out)
	}
	if !s.Interrupted || s.Requests == 0 {
		t.Errorf("interrupted %v, requests %d", s.Interrupted, s.Requests)
	}
}

func TestUnreachableTargetFailsAtStartWithoutRunning(t *testing.T) {
	// A port that was just free: nothing listens there now.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	html := filepath.Join(t.TempDir(), "p.html")

	code, out, errOut := runMain(t, t.Context(), "-url", "http://"+addr+"/execute", "-duration", "10s", "-html", html)
	if code != ExitFailure {
		t.Errorf("exit %d, want %d", code, ExitFailure)
	}
	if !strings.Contains(errOut, "unreachable") || !strings.Contains(errOut, addr) {
		t.Errorf("stderr %q does not say the target %s is unreachable", errOut, addr)
	}
	if out != "" {
		t.Errorf("printed a summary for a run that never happened: %q", out)
	}
	if _, err := os.Stat(html); !os.IsNotExist(err) {
		t.Errorf("left a plot file behind: %v", err)
	}
}

func TestBadFlagsFailWithAMessageNamingTheFlag(t *testing.T) {
	dir := t.TempDir()
	empty := writeFile(t, "empty.py", "  \n")
	notJSON := writeFile(t, "bad.json", "{nope")
	object := writeFile(t, "obj.json", `{"a": 1}`)
	emptyArr := writeFile(t, "arr.json", `[]`)
	cases := []struct {
		args []string
		flag string
	}{
		{[]string{"-rate", "-5"}, "-rate"},
		{[]string{"-rate", "fast"}, "-rate"},
		{[]string{"-rate", "0"}, "-concurrency"},
		{[]string{"-concurrency", "-1"}, "-concurrency"},
		{[]string{"-duration", "0s"}, "-duration"},
		{[]string{"-duration", "ten"}, "-duration"},
		{[]string{"-warmup", "-1s"}, "-warmup"},
		{[]string{"-timeout", "0s"}, "-timeout"},
		{[]string{"-progress", "-1s"}, "-progress"},
		{[]string{"-url", "ftp://x/execute"}, "-url"},
		{[]string{"-url", "http:///execute"}, "-url"},
		{[]string{"-script", filepath.Join(dir, "missing.py")}, "-script"},
		{[]string{"-script", empty}, "-script"},
		{[]string{"-input", notJSON}, "-input"},
		{[]string{"-batch", object}, "-batch"},
		{[]string{"-batch", emptyArr}, "-batch"},
		{[]string{"-input", object, "-batch", object}, "-input"},
		{[]string{"-api-key", "a\nb"}, "-api-key"},
		{[]string{"-html", filepath.Join(dir, "no", "such", "dir.html")}, "-html"},
		{[]string{"-no-such-flag"}, "-no-such-flag"},
	}
	for _, c := range cases {
		code, out, errOut := runMain(t, t.Context(), c.args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", c.args, code, ExitUsage)
		}
		if !strings.Contains(errOut, c.flag) {
			t.Errorf("%v: message %q does not name %s", c.args, errOut, c.flag)
		}
		if out != "" {
			t.Errorf("%v: wrote to stdout: %q", c.args, out)
		}
	}
}

func TestHelpPrintsUsageAndSucceeds(t *testing.T) {
	code, _, errOut := runMain(t, t.Context(), "-h")
	if code != ExitOK || !strings.Contains(errOut, "-concurrency") || !strings.Contains(errOut, "-html") {
		t.Errorf("exit %d, usage %q", code, errOut)
	}
}

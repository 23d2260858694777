package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/httpapi"
)

func TestUnknownRoutesAndMethodsAreAnsweredWithJSONErrors(t *testing.T) {
	rec := &fakeRecorder{}
	s := httpapi.New(httpapi.Config{Recorder: rec}, okRunner("1"))

	wantError(t, do(t, s, http.MethodGet, "/nope", ""), http.StatusNotFound, "not_found")
	wantError(t, do(t, s, http.MethodGet, "/Execute", ""), http.StatusNotFound, "not_found")
	wantError(t, post(t, s, "/execute/", `{"script":"x"}`), http.StatusNotFound, "not_found")

	r := do(t, s, http.MethodGet, "/execute", "")
	wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	if got := r.header.Get("Allow"); got != "POST" {
		t.Errorf("Allow = %q, want POST", got)
	}
	r = do(t, s, http.MethodDelete, "/healthz", "")
	wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	if got := r.header.Get("Allow"); got != "GET, HEAD" {
		t.Errorf("Allow = %q, want GET, HEAD", got)
	}

	want := []string{
		"unmatched GET Not Found", "unmatched GET Not Found", "unmatched POST Not Found",
		"/execute GET Method Not Allowed", "/healthz DELETE Method Not Allowed",
	}
	if strings.Join(rec.http, "|") != strings.Join(want, "|") {
		t.Errorf("ObserveHTTP routes:\n got %v\nwant %v", rec.http, want)
	}
}

func TestHealthzIsAlwaysOKAndReadyzFollowsTheRunner(t *testing.T) {
	runner := okRunner("1")
	s := httpapi.New(httpapi.Config{}, runner)

	r := do(t, s, http.MethodGet, "/healthz", "")
	if r.status != http.StatusOK || r.raw != `{"status":"ok"}` {
		t.Errorf("healthz: %d %s", r.status, r.raw)
	}
	r = do(t, s, http.MethodGet, "/readyz", "")
	if r.status != http.StatusOK || r.raw != `{"status":"ready"}` {
		t.Errorf("readyz: %d %s", r.status, r.raw)
	}

	runner.ready = errors.New("no warm workers: nsjail: clone(CLONE_NEWUSER) refused")
	r = do(t, s, http.MethodGet, "/readyz", "")
	if r.status != http.StatusServiceUnavailable || r.body["status"] != "not_ready" ||
		r.body["reason"] != runner.ready.Error() {
		t.Errorf("readyz: %d %s", r.status, r.raw)
	}
	if r = do(t, s, http.MethodGet, "/healthz", ""); r.status != http.StatusOK {
		t.Errorf("healthz while not ready: %d", r.status)
	}
}

func TestMetricsRouteServesTheGivenHandlerOnlyWhenSet(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "executor_up 1\n")
	})
	s := httpapi.New(httpapi.Config{MetricsHandler: metrics, APIKeys: []string{"k"}}, okRunner("1"))
	r := do(t, s, http.MethodGet, "/metrics", "")
	if r.status != http.StatusOK || r.raw != "executor_up 1\n" {
		t.Errorf("metrics: %d %q", r.status, r.raw)
	}

	s = httpapi.New(httpapi.Config{}, okRunner("1"))
	wantError(t, do(t, s, http.MethodGet, "/metrics", ""), http.StatusNotFound, "not_found")
}

func TestAPIKeysGuardExecuteButNotHealthReadinessOrMetrics(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "m") })
	var logs syncBuffer
	s := httpapi.New(httpapi.Config{
		APIKeys: []string{"", "key-one", "key-two"}, MetricsHandler: metrics, Logger: jsonLogger(&logs),
	}, okRunner("1"))
	body := `{"script":"x"}`

	tests := []struct {
		name, auth string
		status     int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"wrong key", "Bearer key-three", http.StatusUnauthorized},
		{"prefix of a key", "Bearer key-on", http.StatusUnauthorized},
		{"empty key", "Bearer ", http.StatusUnauthorized},
		{"basic scheme", "Basic a2V5LW9uZQ==", http.StatusUnauthorized},
		{"no scheme", "key-one", http.StatusUnauthorized},
		{"first key", "Bearer key-one", http.StatusOK},
		{"second key", "Bearer key-two", http.StatusOK},
		{"lower-case scheme", "bearer key-two", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/execute", "/execute/batch"} {
				b := body
				if path == "/execute/batch" {
					b = `{"script":"x","inputs":[1]}`
				}
				r := post(t, s, path, b, "Authorization", tt.auth)
				if tt.status == http.StatusOK {
					// The fake answers a single value, so a batch ends in 500
					// (item count mismatch): past the key check is what counts.
					if r.status == http.StatusUnauthorized {
						t.Fatalf("%s: %d %s", path, r.status, r.raw)
					}
					continue
				}
				wantError(t, r, http.StatusUnauthorized, "unauthorized")
				if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("WWW-Authenticate = %q", got)
				}
			}
		})
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := do(t, s, http.MethodGet, path, ""); r.status != http.StatusOK {
			t.Errorf("%s without a key: %d", path, r.status)
		}
	}
	if strings.Contains(logs.String(), "key-") {
		t.Errorf("an API key was logged:\n%s", logs.String())
	}
}

func TestWithoutAPIKeysExecuteIsOpen(t *testing.T) {
	s := httpapi.New(httpapi.Config{APIKeys: []string{"", "  "}}, okRunner("1"))
	wantStatus(t, post(t, s, "/execute", `{"script":"x"}`), http.StatusOK)
}

func TestRequestIDsAreHonouredWhenSaneAndGeneratedOtherwise(t *testing.T) {
	s := httpapi.New(httpapi.Config{}, okRunner("1"))
	generated := regexp.MustCompile(`^[0-9a-f]{16}$`)

	tests := []struct {
		name, incoming string
		keep           bool
	}{
		{"sane", "req-123_abc.DEF:9", true},
		{"uuid", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", true},
		{"at the length limit", strings.Repeat("a", 128), true},
		{"absent", "", false},
		{"too long", strings.Repeat("a", 129), false},
		{"with a space", "two words", false},
		{"with a quote", `a"b`, true}, // printable ASCII; JSON logs escape it
		{"non-ASCII", "idé", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.incoming != "" {
				hdr = []string{"X-Request-Id", tt.incoming}
			}
			for _, r := range []response{
				post(t, s, "/execute", `{"script":"x"}`, hdr...),
				post(t, s, "/execute", `{`, hdr...),
				do(t, s, http.MethodGet, "/missing", "", hdr...),
			} {
				got := r.header.Get("X-Request-Id")
				if tt.keep && got != tt.incoming {
					t.Errorf("status %d: X-Request-Id = %q, want %q", r.status, got, tt.incoming)
				}
				if !tt.keep && !generated.MatchString(got) {
					t.Errorf("status %d: X-Request-Id = %q, want 16 hex characters", r.status, got)
				}
			}
		})
	}
	a := post(t, s, "/execute", `{"script":"x"}`).header.Get("X-Request-Id")
	b := post(t, s, "/execute", `{"script":"x"}`).header.Get("X-Request-Id")
	if a == b {
		t.Errorf("two generated ids are equal: %s", a)
	}
}

func TestRecorderGetsTheOutcomeOfEveryRunAndBracketsEachRunnerCall(t *testing.T) {
	rec := &fakeRecorder{}
	runner := okRunner("1")
	s := httpapi.New(httpapi.Config{Recorder: rec}, runner)
	set := func(res executor.Result, err error) {
		runner.mu.Lock()
		runner.result, runner.err = res, err
		runner.mu.Unlock()
	}

	post(t, s, "/execute", `{"script":"x"}`)
	set(executor.Result{Status: executor.StatusRuntimeError}, nil)
	post(t, s, "/execute", `{"script":"x"}`)
	set(executor.Result{Status: executor.StatusTimeout}, nil)
	post(t, s, "/execute/batch", `{"script":"x","inputs":[1]}`)
	set(executor.Result{}, errOverloaded)
	post(t, s, "/execute", `{"script":"x"}`)
	set(executor.Result{}, errSandbox)
	post(t, s, "/execute", `{"script":"x"}`)
	set(executor.Result{}, errors.New("bug"))
	post(t, s, "/execute", `{"script":"x"}`)
	// Execution requests refused before the runner count too, with their
	// type; requests that are not execution requests do not.
	post(t, s, "/execute", `{"scri`)
	post(t, s, "/execute", `{"script":"x"}`, "Content-Type", "text/plain")
	do(t, s, http.MethodGet, "/healthz", "")
	do(t, s, http.MethodGet, "/execute", "")

	want := []string{"ok", "runtime_error", "timeout", "overloaded", "sandbox_unavailable", "internal",
		"invalid_request", "unsupported_media_type"}
	if strings.Join(rec.executions, ",") != strings.Join(want, ",") {
		t.Errorf("ObserveExecution outcomes %v, want %v", rec.executions, want)
	}
	if rec.started != 6 || rec.finished != 6 {
		t.Errorf("started %d, finished %d; want 6 and 6", rec.started, rec.finished)
	}
	if rec.overloaded != 1 {
		t.Errorf("Overloaded called %d times, want 1", rec.overloaded)
	}
	wantHTTP := []string{
		"/execute POST OK", "/execute POST Unprocessable Entity", "/execute/batch POST Unprocessable Entity",
		"/execute POST Too Many Requests", "/execute POST Service Unavailable",
		"/execute POST Internal Server Error", "/execute POST Bad Request",
		"/execute POST Unsupported Media Type", "/healthz GET OK", "/execute GET Method Not Allowed",
	}
	if strings.Join(rec.http, "|") != strings.Join(wantHTTP, "|") {
		t.Errorf("ObserveHTTP:\n got %v\nwant %v", rec.http, wantHTTP)
	}
}

func TestEachRequestIsLoggedOnceWithoutScriptInputOrOutput(t *testing.T) {
	var logs syncBuffer
	runner := &fakeRunner{result: executor.Result{Status: executor.StatusOK, Value: json.RawMessage(`"VALUE"`),
		Stdout: []byte("STDOUT-TEXT"), Stderr: []byte("STDERR-TEXT"), Duration: 3 * time.Millisecond}}
	s := httpapi.New(httpapi.Config{Logger: jsonLogger(&logs)}, runner)

	post(t, s, "/execute", `{"script":"SCRIPT-SOURCE","input":"INPUT-DATA"}`, "X-Request-Id", "log-me")
	post(t, s, "/execute", `{"script":1}`)

	lines := logs.lines(t)
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", len(lines), logs.String())
	}
	first := lines[0]
	for k, want := range map[string]any{
		"request_id": "log-me", "method": "POST", "route": "/execute", "status": 200.0,
		"outcome": "ok", "exec_duration_ms": 3.0, "script_bytes": 13.0,
		"stdout_bytes": 11.0, "stderr_bytes": 11.0,
		"request_bytes": float64(len(`{"script":"SCRIPT-SOURCE","input":"INPUT-DATA"}`)),
	} {
		if first[k] != want {
			t.Errorf("log %s = %v, want %v", k, first[k], want)
		}
	}
	for _, k := range []string{"duration_ms", "queue_wait_ms", "response_bytes", "stdout_bytes", "stderr_bytes"} {
		if _, ok := first[k]; !ok {
			t.Errorf("log line has no %s", k)
		}
	}
	if lines[1]["outcome"] != "invalid_request" || lines[1]["status"] != 400.0 {
		t.Errorf("second line: %v", lines[1])
	}
	for _, secret := range []string{"SCRIPT-SOURCE", "INPUT-DATA", "STDOUT-TEXT", "STDERR-TEXT", "VALUE"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log holds %s:\n%s", secret, logs.String())
		}
	}
}

func TestLogScriptsAddsScriptInputAndOutputToTheLogLine(t *testing.T) {
	var logs syncBuffer
	runner := &fakeRunner{result: executor.Result{Status: executor.StatusOK, Value: json.RawMessage(`1`),
		Stdout: []byte("STDOUT-TEXT"), Stderr: []byte("STDERR-TEXT")}}
	s := httpapi.New(httpapi.Config{Logger: jsonLogger(&logs), LogScripts: true}, runner)
	post(t, s, "/execute", `{"script":"SCRIPT-SOURCE","input":"INPUT-DATA"}`)
	line := logs.lines(t)[0]
	if line["script"] != "SCRIPT-SOURCE" || line["input"] != `"INPUT-DATA"` ||
		line["stdout"] != "STDOUT-TEXT" || line["stderr"] != "STDERR-TEXT" {
		t.Errorf("log line: %v", line)
	}
}

// serve starts s on a loopback port and returns its base URL.
func serve(t *testing.T, s *httpapi.Server) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Listen(ln) }()
	return "http://" + ln.Addr().String(), done
}

func TestShutdownWaitsForAnInFlightRunThenReturns(t *testing.T) {
	runner := okRunner(`"finished"`)
	runner.started = make(chan struct{}, 1)
	runner.release = make(chan struct{})
	s := httpapi.New(httpapi.Config{}, runner)
	url, served := serve(t, s)

	type answer struct {
		status int
		body   string
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		res, err := http.Post(url+"/execute", "application/json", strings.NewReader(`{"script":"x"}`))
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		answered <- answer{status: res.StatusCode, body: string(b)}
	}()
	<-runner.started

	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(context.Background()) }()

	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while a run was in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(runner.release)

	a := <-answered
	if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, `"result":"finished"`) {
		t.Errorf("in-flight request: %+v", a)
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the run finished")
	}
	if err := <-served; err != nil {
		t.Errorf("Listen returned %v after Shutdown, want nil", err)
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("the server still accepts connections after Shutdown")
	}
}

func TestShutdownPastItsGraceCancelsInFlightRuns(t *testing.T) {
	runner := okRunner("1")
	runner.started = make(chan struct{}, 1)
	runner.release = make(chan struct{}) // never closed: only ctx ends the run
	s := httpapi.New(httpapi.Config{}, runner)
	url, _ := serve(t, s)

	answered := make(chan int, 1)
	go func() {
		res, err := http.Post(url+"/execute", "application/json", strings.NewReader(`{"script":"x"}`))
		if err != nil {
			answered <- -1
			return
		}
		res.Body.Close()
		answered <- res.StatusCode
	}()
	<-runner.started

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	select {
	case status := <-answered:
		if status != http.StatusServiceUnavailable {
			t.Errorf("abandoned run answered %d, want 503", status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight run was not cancelled")
	}
}

func TestListenAfterShutdownReturnsErrServerClosed(t *testing.T) {
	s := httpapi.New(httpapi.Config{}, okRunner("1"))
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown before Listen: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := s.Listen(ln); !errors.Is(err, httpapi.ErrServerClosed) {
		t.Errorf("Listen = %v, want ErrServerClosed", err)
	}
}

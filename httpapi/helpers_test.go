package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/httpapi"
	"github.com/secure-script-executor/executor/pool"
)

var (
	errOverloaded = pool.ErrOverloaded
	errSandbox    = fmt.Errorf("%w: spawn: /usr/bin/nsjail: secret detail", pool.ErrSandboxUnavailable)
	errClosed     = pool.ErrClosed
)

// fakeRunner records what it was asked and answers with a canned result.
type fakeRunner struct {
	mu        sync.Mutex
	reqs      []executor.Request
	deadlines []time.Duration // time left on ctx when Run was called; 0 without a deadline

	result  executor.Result
	err     error
	ready   error
	panicV  any
	started chan struct{} // if set, receives once Run has begun
	release chan struct{} // if set, Run waits for it or for ctx
}

var _ httpapi.Runner = (*fakeRunner)(nil)

func (f *fakeRunner) Run(ctx context.Context, req executor.Request) (executor.Result, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	var left time.Duration // 0: no deadline
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	f.deadlines = append(f.deadlines, left)
	res, err, started, release, p := f.result, f.err, f.started, f.release, f.panicV
	f.mu.Unlock()
	if p != nil {
		panic(p)
	}
	if started != nil {
		started <- struct{}{}
	}
	if release != nil {
		select {
		case <-release:
		case <-ctx.Done():
			return executor.Result{}, ctx.Err()
		}
	}
	return res, err
}

func (f *fakeRunner) Ready() error { return f.ready }

func (f *fakeRunner) calls() []executor.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]executor.Request(nil), f.reqs...)
}

func okRunner(value string) *fakeRunner {
	return &fakeRunner{result: executor.Result{
		Status: executor.StatusOK, Value: json.RawMessage(value), Duration: 12345 * time.Microsecond,
	}}
}

// fakeRecorder records every call.
type fakeRecorder struct {
	mu         sync.Mutex
	http       []string // "route method status"
	executions []string // outcome
	started    int
	finished   int
	overloaded int
}

var _ httpapi.Recorder = (*fakeRecorder)(nil)

func (r *fakeRecorder) ObserveHTTP(route, method string, status int, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.http = append(r.http, route+" "+method+" "+http.StatusText(status))
}

func (r *fakeRecorder) ObserveExecution(outcome string, _ time.Duration, _, _ int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.executions = append(r.executions, outcome)
}

func (r *fakeRecorder) ExecutionStarted()  { r.mu.Lock(); r.started++; r.mu.Unlock() }
func (r *fakeRecorder) ExecutionFinished() { r.mu.Lock(); r.finished++; r.mu.Unlock() }
func (r *fakeRecorder) Overloaded()        { r.mu.Lock(); r.overloaded++; r.mu.Unlock() }

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the JSON log lines.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

func jsonLogger(b *syncBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// errType returns body.error.type, or "".
func (r response) errType() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}

func (r response) errMessage() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

// do sends one request through app.Test.
func do(t *testing.T, s *httpapi.Server, method, path, body string, header ...string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	res, err := s.App().Test(req, 5000)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if ct := res.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: answer is not a JSON object: %v: %s", method, path, err, raw)
		}
	}
	return r
}

func post(t *testing.T, s *httpapi.Server, path, body string, header ...string) response {
	t.Helper()
	return do(t, s, http.MethodPost, path, body, header...)
}

// wantError checks status and error type, and that the answer has a
// non-empty message and a request id.
func wantError(t *testing.T, r response, status int, typ string) {
	t.Helper()
	if r.status != status || r.errType() != typ {
		t.Fatalf("got %d %q, want %d %q; body: %s", r.status, r.errType(), status, typ, r.raw)
	}
	if r.errMessage() == "" {
		t.Errorf("error answer has no message: %s", r.raw)
	}
	if r.header.Get("X-Request-Id") == "" {
		t.Errorf("error answer has no X-Request-Id")
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error answer Content-Type = %q, want JSON", ct)
	}
}

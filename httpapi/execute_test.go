package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/httpapi"
)

const helloScript = "def main():\n    print('hello')\n    return {'msg': 'done'}\n"

func TestExecuteAnswersTheHelloExampleWithItsExactResultAndStdout(t *testing.T) {
	runner := &fakeRunner{result: executor.Result{
		Status:   executor.StatusOK,
		Value:    json.RawMessage(`{"msg": "done"}`),
		Stdout:   []byte("hello\n"),
		Duration: 12345 * time.Microsecond,
	}}
	s := httpapi.New(httpapi.Config{}, runner)
	body, _ := json.Marshal(map[string]string{"script": helloScript})

	r := post(t, s, "/execute", string(body))

	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	if !strings.Contains(r.raw, `"result":{"msg":"done"},"stdout":"hello\n"`) {
		t.Errorf("answer %s does not hold the exact result and stdout", r.raw)
	}
	var got struct {
		Result     map[string]string `json:"result"`
		Stdout     string            `json:"stdout"`
		Stderr     *string           `json:"stderr"`
		DurationMS float64           `json:"duration_ms"`
	}
	if err := json.Unmarshal([]byte(r.raw), &got); err != nil {
		t.Fatal(err)
	}
	if got.Result["msg"] != "done" || len(got.Result) != 1 || got.Stdout != "hello\n" {
		t.Errorf("got %+v", got)
	}
	if got.Stderr == nil || *got.Stderr != "" {
		t.Errorf("stderr should be present and empty, got %v", got.Stderr)
	}
	if got.DurationMS != 12.345 {
		t.Errorf("duration_ms = %v, want 12.345", got.DurationMS)
	}

	calls := runner.calls()
	if len(calls) != 1 {
		t.Fatalf("runner called %d times", len(calls))
	}
	req := calls[0]
	if req.Mode != executor.ModeSingle || string(req.Script) != helloScript || req.Input != nil ||
		req.Timeout != httpapi.DefaultTimeout {
		t.Errorf("runner got %+v", req)
	}
}

func TestExecutePassesInputAsRawJSONAndDistinguishesNullFromAbsent(t *testing.T) {
	tests := []struct {
		name, body string
		want       []byte // nil: no input
	}{
		{"absent", `{"script":"x"}`, nil},
		{"null", `{"script":"x","input":null}`, []byte("null")},
		{"object", `{"script":"x","input":{"a": [1, 2.50, "é"]}}`, []byte(`{"a": [1, 2.50, "é"]}`)},
		{"number", `{"script":"x","input":1e3}`, []byte("1e3")},
		{"string", `{"script":"x","input":"s"}`, []byte(`"s"`)},
		{"false", `{"script":"x","input":false}`, []byte("false")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := okRunner("1")
			s := httpapi.New(httpapi.Config{}, runner)
			if r := post(t, s, "/execute", tt.body); r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			got := runner.calls()[0].Input
			if (got == nil) != (tt.want == nil) || string(got) != string(tt.want) {
				t.Errorf("Input = %q (nil %v), want %q (nil %v)", got, got == nil, tt.want, tt.want == nil)
			}
		})
	}
}

func TestTimeoutMSCanOnlyLowerTheServerTimeout(t *testing.T) {
	tests := []struct {
		field string
		want  time.Duration
	}{
		{``, 5 * time.Second},
		{`,"timeout_ms":null`, 5 * time.Second},
		{`,"timeout_ms":1000`, time.Second},
		{`,"timeout_ms":1`, time.Millisecond},
		{`,"timeout_ms":1500.0`, 1500 * time.Millisecond},
		{`,"timeout_ms":2e3`, 2 * time.Second},
		{`,"timeout_ms":5000`, 5 * time.Second},
		{`,"timeout_ms":60000`, 5 * time.Second},
		{`,"timeout_ms":1e300`, 5 * time.Second},
		{`,"timeout_ms":99999999999999999999999`, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			runner := okRunner("1")
			s := httpapi.New(httpapi.Config{Timeout: 5 * time.Second}, runner)
			if r := post(t, s, "/execute", `{"script":"x"`+tt.field+`}`); r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if got := runner.calls()[0].Timeout; got != tt.want {
				t.Errorf("Request.Timeout = %v, want %v", got, tt.want)
			}
			// The limit is decided once and carried in the request: the
			// context sets no second deadline.
			if runner.deadlines[0] != 0 {
				t.Errorf("the runner's context has a deadline in %v; the limit belongs to Request.Timeout alone", runner.deadlines[0])
			}
		})
	}
}

func TestMalformedRequestBodiesAreRejectedWithMessagesThatSayWhatIsWrong(t *testing.T) {
	deep := strings.Repeat("[", httpapi.MaxInputDepth+1) + strings.Repeat("]", httpapi.MaxInputDepth+1)
	tests := []struct {
		name, body, wantInMessage string
	}{
		{"empty body", ``, "empty"},
		{"whitespace body", " \n ", "empty"},
		{"malformed", `{"script": x}`, "not valid JSON"},
		{"truncated", `{"script": "def main():`, "ends before"},
		{"truncated after value", `{"script": "x",`, "ends before"},
		{"top-level array", `["script"]`, "must be a JSON object"},
		{"top-level string", `"script"`, "must be a JSON object"},
		{"unknown field", `{"script":"x","scirpt":"y"}`, `unknown field "scirpt"`},
		{"batch field on execute", `{"script":"x","inputs":[1]}`, `did you mean "input"`},
		{"case-different field", `{"Script":"x"}`, `unknown field "Script"`},
		{"duplicate field", `{"script":"x","script":"y"}`, `"script" appears more than once`},
		{"missing script", `{"input":1}`, "script is required"},
		{"empty script", `{"script":""}`, "must not be empty"},
		{"null script", `{"script":null}`, "script must be a string"},
		{"numeric script", `{"script":42}`, "script must be a string"},
		{"timeout_ms string", `{"script":"x","timeout_ms":"100"}`, "timeout_ms must be a positive integer"},
		{"timeout_ms zero", `{"script":"x","timeout_ms":0}`, "timeout_ms must be a positive integer"},
		{"timeout_ms negative", `{"script":"x","timeout_ms":-5}`, "timeout_ms must be a positive integer"},
		{"timeout_ms fraction", `{"script":"x","timeout_ms":1.5}`, "timeout_ms must be a positive integer"},
		{"timeout_ms bool", `{"script":"x","timeout_ms":true}`, "timeout_ms must be a positive integer"},
		{"trailing garbage", `{"script":"x"} garbage`, "data after the JSON object"},
		{"second object", `{"script":"x"}{"script":"y"}`, "data after the JSON object"},
		{"trailing comma", `{"script":"x",}`, "not valid JSON"},
		{"deeply nested input", `{"script":"x","input":` + deep + `}`, "levels deep; the limit is 64"},
		{"NaN input", `{"script":"x","input":NaN}`, "not valid JSON"},
		{"invalid UTF-8", "{\"script\":\"\xff\"}", "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := okRunner("1")
			s := httpapi.New(httpapi.Config{}, runner)
			r := post(t, s, "/execute", tt.body)
			wantError(t, r, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(r.errMessage(), tt.wantInMessage) {
				t.Errorf("message %q does not contain %q", r.errMessage(), tt.wantInMessage)
			}
			if _, ok := r.body["stdout"]; ok {
				t.Errorf("a request error should carry no stdout: %s", r.raw)
			}
			if n := len(runner.calls()); n != 0 {
				t.Errorf("runner called %d times for a bad request", n)
			}
		})
	}
}

func TestInputNestedExactlyAtTheDepthLimitIsAccepted(t *testing.T) {
	n := httpapi.MaxInputDepth
	input := strings.Repeat(`{"a":`, n-1) + `["]]]]"]` + strings.Repeat("}", n-1)
	runner := okRunner("1")
	s := httpapi.New(httpapi.Config{}, runner)
	if r := post(t, s, "/execute", `{"script":"x","input":`+input+`}`); r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
}

func TestContentTypeMustBeJSON(t *testing.T) {
	tests := []struct {
		contentType string
		status      int
	}{
		{"application/json", http.StatusOK},
		{"application/json; charset=utf-8", http.StatusOK},
		{"Application/JSON; charset=UTF-8", http.StatusOK},
		{"", http.StatusUnsupportedMediaType},
		{"text/plain", http.StatusUnsupportedMediaType},
		{"application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"application/json; charset=latin1", http.StatusUnsupportedMediaType},
		{"application/json; boundary=x", http.StatusUnsupportedMediaType},
		{"application/json;;", http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.contentType, func(t *testing.T) {
			s := httpapi.New(httpapi.Config{}, okRunner("1"))
			r := post(t, s, "/execute", `{"script":"x"}`, "Content-Type", tt.contentType)
			if tt.status == http.StatusOK {
				if r.status != http.StatusOK {
					t.Fatalf("status %d: %s", r.status, r.raw)
				}
				return
			}
			wantError(t, r, tt.status, "unsupported_media_type")
		})
	}
}

func TestBodyOverTheLimitIsAnswered413WithAJSONError(t *testing.T) {
	var logs syncBuffer
	rec := &fakeRecorder{}
	runner := okRunner("1")
	s := httpapi.New(httpapi.Config{MaxBodyBytes: 1024, Logger: jsonLogger(&logs), Recorder: rec}, runner)
	// app.Test reports the server's own error instead of the answer for
	// refused bodies, so this goes over a real connection.
	url, _ := serve(t, s)
	defer s.Shutdown(context.Background())
	body := `{"script":"` + strings.Repeat("x", 2000) + `"}`

	req, _ := http.NewRequest(http.MethodPost, url+"/execute", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", "big-one")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	r := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("answer is not JSON: %s", raw)
	}

	wantError(t, r, http.StatusRequestEntityTooLarge, "request_too_large")
	if !strings.Contains(r.errMessage(), "1024 bytes") {
		t.Errorf("message %q does not state the limit", r.errMessage())
	}
	if got := r.header.Get("X-Request-Id"); got != "big-one" {
		t.Errorf("X-Request-Id = %q", got)
	}
	if len(runner.calls()) != 0 {
		t.Error("runner was called")
	}
	lines := logs.lines(t)
	if len(lines) != 1 || lines[0]["outcome"] != "request_too_large" || lines[0]["route"] != "/execute" ||
		lines[0]["request_bytes"] != float64(len(body)) {
		t.Errorf("log lines: %v", lines)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.http) != 1 || rec.http[0] != "/execute POST Request Entity Too Large" {
		t.Errorf("ObserveHTTP calls: %v", rec.http)
	}
}

func TestScriptFailuresAreAnswered422WithTheirTypeAndTheOutputSoFar(t *testing.T) {
	for _, st := range []executor.Status{
		executor.StatusSyntaxError, executor.StatusMissingMain, executor.StatusRuntimeError,
		executor.StatusResultNotJSON, executor.StatusTimeout, executor.StatusMemoryLimit, executor.StatusOutputLimit,
	} {
		t.Run(string(st), func(t *testing.T) {
			runner := &fakeRunner{result: executor.Result{
				Status: st,
				Error: &executor.ScriptError{
					Type: st, Message: "boom happened", Line: 3,
					Traceback: "Traceback (most recent call last):\n  File \"<script>\", line 3\nValueError: boom",
				},
				Stdout: []byte("partial\n"),
				Stderr: []byte("warn\n"),
			}}
			s := httpapi.New(httpapi.Config{}, runner)
			r := post(t, s, "/execute", `{"script":"x"}`)
			wantError(t, r, http.StatusUnprocessableEntity, string(st))
			if r.body["stdout"] != "partial\n" || r.body["stderr"] != "warn\n" {
				t.Errorf("stdout/stderr not carried: %s", r.raw)
			}
			e := r.body["error"].(map[string]any)
			if e["line"] != 3.0 {
				t.Errorf("line = %v, want 3", e["line"])
			}
			_, hasTB := e["traceback"]
			if hasTB != (st == executor.StatusRuntimeError) {
				t.Errorf("traceback present = %v for %s", hasTB, st)
			}
		})
	}
}

// The supervisor alone knows whether the wall clock or the CPU-time limit
// ended a run; its message reaches the client unchanged.
func TestATimeoutAnswerCarriesTheSupervisorsMessageUnchanged(t *testing.T) {
	const cpu = "the script used up its CPU time limit (7s of CPU in the jail)"
	runner := &fakeRunner{result: executor.Result{Status: executor.StatusTimeout,
		Error: &executor.ScriptError{Type: executor.StatusTimeout, Message: cpu}}}
	s := httpapi.New(httpapi.Config{Timeout: 5 * time.Second}, runner)
	r := post(t, s, "/execute", `{"script":"x","timeout_ms":1000}`)
	if r.status != http.StatusUnprocessableEntity || r.errType() != "timeout" || r.errMessage() != cpu {
		t.Errorf("status %d type %q message %q, want 422 timeout %q", r.status, r.errType(), r.errMessage(), cpu)
	}
}

func TestTimeoutMessageNamesTheLimitAndWhatToDo(t *testing.T) {
	want := "the script ran longer than its 1000 ms limit; make it faster or raise timeout_ms up to 5000"
	if got := executor.TimeoutMessage(time.Second, 5*time.Second); got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	if got := executor.TimeoutMessage(5*time.Second, 5*time.Second); !strings.Contains(got, "5000 ms limit, the server's maximum") {
		t.Errorf("message %q", got)
	}
}

func TestScriptErrorWithoutDetailsGetsADefaultMessageAndNoLine(t *testing.T) {
	runner := &fakeRunner{result: executor.Result{Status: executor.StatusMissingMain}}
	s := httpapi.New(httpapi.Config{}, runner)
	r := post(t, s, "/execute", `{"script":"x"}`)
	wantError(t, r, http.StatusUnprocessableEntity, "missing_main")
	if _, ok := r.body["error"].(map[string]any)["line"]; ok {
		t.Errorf("line should be absent when unknown: %s", r.raw)
	}
	if r.body["stdout"] != "" || r.body["stderr"] != "" {
		t.Errorf("stdout and stderr should be present and empty: %s", r.raw)
	}
}

func TestRunnerErrorsMapToOverloadedUnavailableAndInternal(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		typ    string
	}{
		{"overloaded", errOverloaded, http.StatusTooManyRequests, "overloaded"},
		{"wrapped overloaded", fmt.Errorf("run: %w", errOverloaded), http.StatusTooManyRequests, "overloaded"},
		{"sandbox unavailable", errSandbox, http.StatusServiceUnavailable, "sandbox_unavailable"},
		{"closed", errClosed, http.StatusServiceUnavailable, "sandbox_unavailable"},
		{"anything else", fmt.Errorf("jailproc: start: exec /opt/secret/nsjail: permission denied"),
			http.StatusInternalServerError, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			s := httpapi.New(httpapi.Config{Logger: jsonLogger(&logs)}, &fakeRunner{err: tt.err})
			r := post(t, s, "/execute", `{"script":"x"}`)
			wantError(t, r, tt.status, tt.typ)
			if strings.Contains(r.raw, "secret") || strings.Contains(r.raw, "pool:") {
				t.Errorf("runner's error text leaked to the client: %s", r.raw)
			}
			if _, ok := r.body["stdout"]; ok {
				t.Errorf("a runner error should carry no stdout: %s", r.raw)
			}
			if tt.typ == "internal" {
				id := r.header.Get("X-Request-Id")
				if !strings.Contains(r.errMessage(), id) {
					t.Errorf("internal message %q should name request id %q", r.errMessage(), id)
				}
				line := logs.lines(t)[0]
				if !strings.Contains(fmt.Sprint(line["error"]), "permission denied") || line["level"] != "ERROR" {
					t.Errorf("the real error should be logged at ERROR: %v", line)
				}
			}
		})
	}
}

func TestOverloadedAnswersCarryRetryAfterInWholeSeconds(t *testing.T) {
	for _, tt := range []struct {
		cfg  time.Duration
		want string
	}{{0, "1"}, {2500 * time.Millisecond, "3"}, {100 * time.Millisecond, "1"}} {
		s := httpapi.New(httpapi.Config{RetryAfter: tt.cfg}, &fakeRunner{err: errOverloaded})
		r := post(t, s, "/execute", `{"script":"x"}`)
		wantError(t, r, http.StatusTooManyRequests, "overloaded")
		if got := r.header.Get("Retry-After"); got != tt.want {
			t.Errorf("RetryAfter %v: Retry-After = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}

func TestUnknownRunStatusIsInternal(t *testing.T) {
	s := httpapi.New(httpapi.Config{}, &fakeRunner{result: executor.Result{Status: "overloaded"}})
	wantError(t, post(t, s, "/execute", `{"script":"x"}`), http.StatusInternalServerError, "internal")
}

func TestAPanicInTheRunnerIsAnswered500AndLogged(t *testing.T) {
	var logs syncBuffer
	s := httpapi.New(httpapi.Config{Logger: jsonLogger(&logs)}, &fakeRunner{panicV: "kaboom"})
	r := post(t, s, "/execute", `{"script":"x"}`)
	wantError(t, r, http.StatusInternalServerError, "internal")
	if strings.Contains(r.raw, "kaboom") {
		t.Errorf("panic value leaked: %s", r.raw)
	}
	if !strings.Contains(logs.String(), "kaboom") {
		t.Errorf("panic not logged: %s", logs.String())
	}
	// The server still works afterwards.
	wantStatus(t, do(t, s, http.MethodGet, "/healthz", ""), http.StatusOK)
}

func TestStdoutThatIsNotUTF8IsAnsweredWithReplacementCharacters(t *testing.T) {
	runner := &fakeRunner{result: executor.Result{Status: executor.StatusOK, Value: json.RawMessage("null"),
		Stdout: []byte("a\xffb"), Stderr: []byte("\xc3")}}
	s := httpapi.New(httpapi.Config{}, runner)
	r := post(t, s, "/execute", `{"script":"x"}`)
	if r.body["stdout"] != "a\uFFFDb" || r.body["stderr"] != "\uFFFD" {
		t.Errorf("got %s", r.raw)
	}
	if r.body["result"] != nil {
		t.Errorf("result should be null: %s", r.raw)
	}
}

func TestAnEmptyResultValueIsAnsweredAsNull(t *testing.T) {
	s := httpapi.New(httpapi.Config{}, &fakeRunner{result: executor.Result{Status: executor.StatusOK}})
	r := post(t, s, "/execute", `{"script":"x"}`)
	if !strings.Contains(r.raw, `"result":null`) {
		t.Errorf("got %s", r.raw)
	}
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
}

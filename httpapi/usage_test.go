package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/httpapi"
)

// usageOfAnswer decodes the answer's "usage" object, failing when it is
// missing.
func usageOfAnswer(t *testing.T, r response) map[string]any {
	t.Helper()
	u, ok := r.body["usage"].(map[string]any)
	if !ok {
		t.Fatalf("answer has no usage object: %s", r.raw)
	}
	return u
}

func TestEveryRunAnswerReportsUsageAndOmitsWhatWasNotMeasured(t *testing.T) {
	measured := executor.Usage{Wall: 2500 * time.Microsecond, CPU: 1750 * time.Microsecond, CPUMeasured: true,
		MemoryPeak: 9 << 20, MemoryPeakMeasured: true}
	tests := []struct {
		name   string
		path   string
		body   string
		result executor.Result
		status int
		want   string // the usage object, as JSON
	}{
		{"success, measured", "/execute", `{"script":"x"}`,
			executor.Result{Status: executor.StatusOK, Value: json.RawMessage("1"), Duration: 3 * time.Millisecond, Usage: measured},
			200, `{"cpu_ms":1.75,"memory_peak_bytes":9437184,"wall_ms":2.5}`},
		{"success, no cgroups: wall only", "/execute", `{"script":"x"}`,
			executor.Result{Status: executor.StatusOK, Value: json.RawMessage("1"), Usage: executor.Usage{Wall: time.Millisecond}},
			200, `{"wall_ms":1}`},
		{"a runner without Usage.Wall: wall is the run's duration", "/execute", `{"script":"x"}`,
			executor.Result{Status: executor.StatusOK, Value: json.RawMessage("1"), Duration: 1500 * time.Microsecond},
			200, `{"wall_ms":1.5}`},
		{"script error", "/execute", `{"script":"x"}`,
			executor.Result{Status: executor.StatusRuntimeError, Error: &executor.ScriptError{Type: executor.StatusRuntimeError, Message: "boom"},
				Usage: measured},
			422, `{"cpu_ms":1.75,"memory_peak_bytes":9437184,"wall_ms":2.5}`},
		{"batch: one usage for the whole run", "/execute/batch", `{"script":"x","inputs":[1,2]}`,
			executor.Result{Status: executor.StatusOK, Batch: []executor.BatchItem{{Result: json.RawMessage("1")}, {Result: json.RawMessage("2")}},
				Usage: measured},
			200, `{"cpu_ms":1.75,"memory_peak_bytes":9437184,"wall_ms":2.5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := httpapi.New(httpapi.Config{}, &fakeRunner{result: tt.result})
			r := post(t, s, tt.path, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.raw)
			}
			got, _ := json.Marshal(usageOfAnswer(t, r))
			if string(got) != tt.want {
				t.Errorf("usage = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestAnswersWithoutARunCarryNoUsage(t *testing.T) {
	s := httpapi.New(httpapi.Config{}, &fakeRunner{err: errOverloaded})
	for _, r := range []response{post(t, s, "/execute", `{"script":"x"}`), post(t, s, "/execute", `{"scirpt":"x"}`)} {
		if _, ok := r.body["usage"]; ok {
			t.Errorf("%d answer has usage: %s", r.status, r.raw)
		}
	}
}

func TestMemoryLimitMBCanOnlyLowerTheServerLimit(t *testing.T) {
	tests := []struct {
		field string
		want  int64 // Request.MemoryLimit; 0 = the server's
	}{
		{``, 0},
		{`,"memory_limit_mb":null`, 0},
		{`,"memory_limit_mb":48`, 48 << 20},
		{`,"memory_limit_mb":16`, 16 << 20},
		{`,"memory_limit_mb":64.0`, 64 << 20},
		{`,"memory_limit_mb":256`, 0},
		{`,"memory_limit_mb":4096`, 0},
		{`,"memory_limit_mb":1e300`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			runner := okRunner("1")
			s := httpapi.New(httpapi.Config{MemoryLimit: 256 << 20}, runner)
			if r := post(t, s, "/execute", `{"script":"x"`+tt.field+`}`); r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if got := runner.calls()[0].MemoryLimit; got != tt.want {
				t.Errorf("Request.MemoryLimit = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestMemoryLimitMBThatIsNotAnIntegerOfAtLeast16IsRejectedWithWhatToSend(t *testing.T) {
	for _, field := range []string{`"64"`, `15`, `0`, `-1`, `48.5`, `true`, `[]`} {
		t.Run(field, func(t *testing.T) {
			runner := okRunner("1")
			s := httpapi.New(httpapi.Config{MemoryLimit: 256 << 20}, runner)
			for _, path := range []string{"/execute", "/execute/batch"} {
				body := `{"script":"x","inputs":[1],"memory_limit_mb":` + field + `}`
				if path == "/execute" {
					body = `{"script":"x","memory_limit_mb":` + field + `}`
				}
				r := post(t, s, path, body)
				wantError(t, r, http.StatusBadRequest, httpapi.TypeInvalidRequest)
				if !strings.Contains(r.errMessage(), "memory_limit_mb must be an integer number of MiB, at least 16") {
					t.Errorf("message %q does not say what to send", r.errMessage())
				}
			}
			if n := len(runner.calls()); n != 0 {
				t.Errorf("runner called %d times", n)
			}
		})
	}
}

func TestAMemoryLimitHitUnderALoweredLimitSaysHowToRaiseIt(t *testing.T) {
	runner := &fakeRunner{result: executor.Result{Status: executor.StatusMemoryLimit,
		Error: &executor.ScriptError{Type: executor.StatusMemoryLimit, Message: "MemoryError"}}}
	s := httpapi.New(httpapi.Config{MemoryLimit: 256 << 20}, runner)

	r := post(t, s, "/execute", `{"script":"x","memory_limit_mb":48}`)
	wantError(t, r, 422, httpapi.TypeMemoryLimit)
	if want := "its 48 MiB limit (memory_limit_mb); use less memory or raise memory_limit_mb up to 256"; !strings.Contains(r.errMessage(), want) {
		t.Errorf("message %q, want it to contain %q", r.errMessage(), want)
	}
	r = post(t, s, "/execute", `{"script":"x"}`)
	if r.errMessage() != "MemoryError" {
		t.Errorf("without memory_limit_mb the runner's message should stay: %q", r.errMessage())
	}
}

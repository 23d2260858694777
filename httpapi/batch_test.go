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

func TestBatchRunsOnceInBatchModeAndAnswersOneItemPerRecord(t *testing.T) {
	runner := &fakeRunner{result: executor.Result{
		Status: executor.StatusOK,
		Batch: []executor.BatchItem{
			{Result: json.RawMessage(`{"n": 2}`), Stdout: "one\n"},
			{Error: &executor.ScriptError{Type: executor.StatusRuntimeError, Message: "ZeroDivisionError: division by zero",
				Line: 2, Traceback: "Traceback...\nZeroDivisionError: division by zero"}},
			{Result: nil, Stdout: ""},
			{Error: &executor.ScriptError{Type: executor.StatusResultNotJSON, Message: "main returned a set",
				Traceback: "not for this type"}},
		},
		Stderr:   []byte("log\n"),
		Duration: 2 * time.Millisecond,
	}}
	s := httpapi.New(httpapi.Config{}, runner)
	inputs := `[1, {"a": 0}, null, [3]]`

	r := post(t, s, "/execute/batch", `{"script":"x","inputs":`+inputs+`,"timeout_ms":2000}`)

	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	want := `{"results":[` +
		`{"result":{"n":2},"stdout":"one\n"},` +
		`{"error":{"type":"runtime_error","message":"ZeroDivisionError: division by zero","line":2,` +
		`"traceback":"Traceback...\nZeroDivisionError: division by zero"},"stdout":""},` +
		`{"result":null,"stdout":""},` +
		`{"error":{"type":"result_not_json","message":"main returned a set"},"stdout":""}` +
		`],"stderr":"log\n","duration_ms":2,"usage":{"wall_ms":2}}`
	if r.raw != want {
		t.Errorf("answer\n got %s\nwant %s", r.raw, want)
	}
	req := runner.calls()[0]
	if req.Mode != executor.ModeBatch || string(req.Input) != inputs || req.Timeout != 2*time.Second {
		t.Errorf("runner got mode %q input %q timeout %v", req.Mode, req.Input, req.Timeout)
	}
}

func TestBatchInputsAreCheckedBeforeRunning(t *testing.T) {
	deep := strings.Repeat("[", httpapi.MaxInputDepth+1) + strings.Repeat("]", httpapi.MaxInputDepth+1)
	tests := []struct {
		name, body, wantInMessage string
	}{
		{"missing inputs", `{"script":"x"}`, "inputs is required"},
		{"empty inputs", `{"script":"x","inputs":[]}`, "at least one record"},
		{"too many inputs", `{"script":"x","inputs":[1,2,3,4]}`, "holds 4 records; the limit is 3"},
		{"inputs not an array", `{"script":"x","inputs":{"a":1}}`, "inputs must be a JSON array"},
		{"inputs null", `{"script":"x","inputs":null}`, "inputs must be a JSON array"},
		{"single-run field", `{"script":"x","input":[1]}`, `did you mean "inputs"`},
		{"deep record", `{"script":"x","inputs":[1,` + deep + `]}`, "inputs[1] nests 65 levels deep"},
		{"missing script", `{"inputs":[1]}`, "script is required"},
		{"bad timeout", `{"script":"x","inputs":[1],"timeout_ms":-1}`, "timeout_ms must be a positive integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runner := okRunner("1")
			s := httpapi.New(httpapi.Config{MaxBatchRecords: 3}, runner)
			r := post(t, s, "/execute/batch", tt.body)
			wantError(t, r, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(r.errMessage(), tt.wantInMessage) {
				t.Errorf("message %q does not contain %q", r.errMessage(), tt.wantInMessage)
			}
			if len(runner.calls()) != 0 {
				t.Error("runner was called")
			}
		})
	}
}

func TestBatchAtTheRecordLimitIsAccepted(t *testing.T) {
	items := make([]executor.BatchItem, 3)
	for i := range items {
		items[i].Result = json.RawMessage("1")
	}
	s := httpapi.New(httpapi.Config{MaxBatchRecords: 3},
		&fakeRunner{result: executor.Result{Status: executor.StatusOK, Batch: items}})
	wantStatus(t, post(t, s, "/execute/batch", `{"script":"x","inputs":[1,2,3]}`), http.StatusOK)
}

func TestBatchScriptFailuresAreThe422ErrorsOfExecute(t *testing.T) {
	runner := &fakeRunner{result: executor.Result{
		Status: executor.StatusSyntaxError,
		Error:  &executor.ScriptError{Type: executor.StatusSyntaxError, Message: "invalid syntax", Line: 1},
		Stdout: []byte("o"), Stderr: []byte("e"),
	}}
	s := httpapi.New(httpapi.Config{}, runner)
	r := post(t, s, "/execute/batch", `{"script":"def","inputs":[1]}`)
	wantError(t, r, http.StatusUnprocessableEntity, "syntax_error")
	if r.body["stdout"] != "o" || r.body["stderr"] != "e" {
		t.Errorf("got %s", r.raw)
	}
}

// The items come from the worker, which a script can make forge its result
// frame: a miscount is the script's runtime_error, never a server failure.
func TestBatchWithAnItemCountThatDoesNotMatchTheRecordsIsTheScriptsRuntimeError(t *testing.T) {
	runner := &fakeRunner{result: executor.Result{Status: executor.StatusOK,
		Batch: []executor.BatchItem{{Result: json.RawMessage("1")}}, Stdout: []byte("o")}}
	s := httpapi.New(httpapi.Config{}, runner)
	r := post(t, s, "/execute/batch", `{"script":"x","inputs":[1,2]}`)
	wantError(t, r, http.StatusUnprocessableEntity, "runtime_error")
	if r.body["stdout"] != "o" {
		t.Errorf("the output captured so far is missing: %s", r.raw)
	}
}

package httpapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"unicode/utf8"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/httpapi"
	"github.com/secure-script-executor/executor/pyworker"
)

// fromPayload is what the supervisor makes of a result payload a worker sent
// (as jailproc does): a payload the codec refuses is the script's
// runtime_error, an accepted one is passed on as it is.
func fromPayload(payload []byte, batch bool, stdout []byte) executor.Result {
	fr, err := pyworker.DecodeResult(payload)
	if err == nil {
		err = fr.CheckMode(batch)
	}
	if err != nil {
		if !errors.Is(err, pyworker.ErrProtocol) {
			panic(err)
		}
		return executor.Result{Status: executor.StatusRuntimeError, Stdout: stdout,
			Error: &executor.ScriptError{Type: executor.StatusRuntimeError, Message: "interfered"}}
	}
	conv := func(e *pyworker.ErrorInfo) *executor.ScriptError {
		return &executor.ScriptError{Type: executor.Status(e.Type), Message: e.Message, Line: e.Line, Traceback: e.Traceback}
	}
	if !fr.OK {
		return executor.Result{Status: executor.Status(fr.Error.Type), Error: conv(fr.Error), Stdout: stdout}
	}
	res := executor.Result{Status: executor.StatusOK, Value: fr.Value, Stdout: stdout}
	for _, it := range fr.Batch {
		item := executor.BatchItem{Result: it.Result, Stdout: it.Stdout}
		if it.Error != nil {
			item.Error = conv(it.Error)
		}
		res.Batch = append(res.Batch, item)
	}
	return res
}

// Whatever bytes a worker (that is, a script) sends as its result, and
// whatever it prints, the answer is never a 500 and is valid UTF-8 JSON.
func FuzzAWorkersPayloadIsNeverAnsweredAsAServerFailure(f *testing.F) {
	for _, s := range []string{
		`{"ok":true,"result":{"a":1}}`,
		`{"ok":true,"result":{"a":1,"a":2,"inf":1e999}}`,
		`{"ok":true,"results":[{"result":1,"stdout":"x"}]}`,
		`{"ok":true,"results":[{"result":1,"stdout":""},{"error":{"type":"runtime_error","message":"E","line":3,"traceback":"T"},"stdout":""}]}`,
		`{"ok":false,"error":{"type":"output_limit","message":""}}`,
		`{"ok":false,"error":{"type":"internal","message":"x"}}`,
	} {
		f.Add([]byte(s), []byte("out \xff"), false)
		f.Add([]byte(s), []byte(""), true)
	}
	runner := &fakeRunner{}
	s := httpapi.New(httpapi.Config{}, runner)
	f.Fuzz(func(t *testing.T, payload, stdout []byte, batch bool) {
		res := fromPayload(payload, batch, stdout)
		runner.mu.Lock()
		runner.result = res
		runner.mu.Unlock()
		path, body := "/execute", `{"script":"x"}`
		if batch {
			path, body = "/execute/batch", `{"script":"x","inputs":[1,2]}`
		}
		r := post(t, s, path, body)
		if r.status == http.StatusInternalServerError || r.errType() == "internal" {
			t.Fatalf("payload %q: %d %s", payload, r.status, r.raw)
		}
		if !json.Valid([]byte(r.raw)) || !utf8.ValidString(r.raw) {
			t.Fatalf("payload %q: the answer is not valid UTF-8 JSON: %q", payload, r.raw)
		}
	})
}

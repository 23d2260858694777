package httpapi_test

import (
	"encoding/json"
	"testing"

	"github.com/secure-script-executor/executor/httpapi"
)

// FuzzDecodeExecuteRequest checks the /execute body decoder on arbitrary
// bytes: it never panics, and whatever it accepts is something the worker can
// run: a non-empty script and, when present, valid JSON input no deeper than
// the limit.
func FuzzDecodeExecuteRequest(f *testing.F) {
	for _, seed := range []string{
		`{"script":"def main():\n    return 1"}`,
		`{"script":"x","input":null}`,
		`{"script":"x","input":{"a":[1,"]",{"b":"\\""}]},"timeout_ms":1000}`,
		`{"script":"x","timeout_ms":1e3}`,
		`{"script":""}`,
		`{"script":"x"} {}`,
		`[]`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		script, input, timeoutMS, err := httpapi.DecodeExecuteRequest(body)
		if err != nil {
			if err.Error() == "" {
				t.Error("rejection without a message")
			}
			return
		}
		if script == "" {
			t.Errorf("accepted an empty script from %q", body)
		}
		if input != nil && !json.Valid(input) {
			t.Errorf("accepted invalid JSON input %q from %q", input, body)
		}
		if timeoutMS < 0 {
			t.Errorf("accepted timeout_ms %d from %q", timeoutMS, body)
		}
		if !json.Valid(body) {
			t.Errorf("accepted a body that is not JSON: %q", body)
		}
	})
}

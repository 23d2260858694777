package pyworker_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/secure-script-executor/executor/pyworker"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.want.json from the worker's actual output")

// golden is one NAME.want.json: how to run NAME.py and what it must produce.
type golden struct {
	// Mode is "batch" for batch mode; single mode otherwise.
	Mode string `json:"mode,omitempty"`
	// MaxResultBytes defaults to 1 MiB.
	MaxResultBytes int `json:"max_result_bytes,omitempty"`
	// Payload is the expected decoded payload, re-encoded (see wire).
	Payload json.RawMessage `json:"payload"`
	// Stdout is the run's whole stdout; StdoutBase64 replaces it when the
	// script wrote bytes that are not UTF-8.
	Stdout       string `json:"stdout"`
	StdoutBase64 string `json:"stdout_base64,omitempty"`
	// Stderr is checked only when present.
	Stderr *string `json:"stderr,omitempty"`
}

// TestGoldenScriptsProduceTheExpectedPayloadAndStdout runs every
// testdata/golden/NAME.py through the real worker and compares the decoded
// result and the captured stdout with NAME.want.json. Run with -update to
// regenerate the expectations after a deliberate change, then review the diff.
func TestGoldenScriptsProduceTheExpectedPayloadAndStdout(t *testing.T) {
	scripts, err := filepath.Glob(filepath.Join("testdata", "golden", "*.py"))
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no golden scripts: %v", err)
	}
	for _, path := range scripts {
		name := strings.TrimSuffix(filepath.Base(path), ".py")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			base := strings.TrimSuffix(path, ".py")
			script, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var want golden
			wantRaw, err := os.ReadFile(base + ".want.json")
			if err != nil && !(*update && os.IsNotExist(err)) {
				t.Fatal(err)
			}
			if err == nil {
				dec := json.NewDecoder(bytes.NewReader(wantRaw))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&want); err != nil {
					t.Fatalf("%s.want.json: %v", name, err)
				}
			}
			req := pyworker.Request{Batch: want.Mode == "batch", Script: script, MaxResultBytes: want.MaxResultBytes}
			if input, err := os.ReadFile(base + ".input.json"); err == nil {
				req.Input = input
			} else if !os.IsNotExist(err) {
				t.Fatal(err)
			}

			o := runScript(t, req)
			if o.Err != nil {
				t.Fatalf("ReadResult: %v (stderr %q)", o.Err, o.Stderr)
			}
			if err := o.Result.CheckMode(req.Batch); err != nil {
				t.Fatal(err)
			}
			got := wire(o.Result)

			if *update {
				want.Payload = got
				want.Stdout, want.StdoutBase64 = string(o.Stdout), ""
				if !utf8.Valid(o.Stdout) {
					want.Stdout, want.StdoutBase64 = "", base64.StdEncoding.EncodeToString(o.Stdout)
				}
				if want.Stderr != nil {
					s := string(o.Stderr)
					want.Stderr = &s
				}
				var buf bytes.Buffer
				enc := json.NewEncoder(&buf)
				enc.SetEscapeHTML(false)
				enc.SetIndent("", "  ")
				if err := enc.Encode(want); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(base+".want.json", buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}

			var wantPayload bytes.Buffer
			if err := json.Compact(&wantPayload, want.Payload); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, wantPayload.Bytes()) {
				t.Errorf("payload\n got: %s\nwant: %s", got, wantPayload.Bytes())
			}
			wantStdout := []byte(want.Stdout)
			if want.StdoutBase64 != "" {
				if wantStdout, err = base64.StdEncoding.DecodeString(want.StdoutBase64); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(o.Stdout, wantStdout) {
				t.Errorf("stdout\n got: %q\nwant: %q", o.Stdout, wantStdout)
			}
			if want.Stderr != nil && string(o.Stderr) != *want.Stderr {
				t.Errorf("stderr\n got: %q\nwant: %q", o.Stderr, *want.Stderr)
			}
			if o.ExitCode != 0 {
				t.Errorf("worker exit status %d, want 0 (stderr %q)", o.ExitCode, o.Stderr)
			}
		})
	}
}

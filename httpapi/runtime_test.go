package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/httpapi"
)

// describingRunner is a runner that knows its runtime.
type describingRunner struct {
	fakeRunner
	rt httpapi.Runtime
}

func (d *describingRunner) Runtime() httpapi.Runtime { return d.rt }

func TestRuntimeServesTheRunnersDescriptionWithTheLimitsThisServerEnforces(t *testing.T) {
	v := "1.24.2"
	runner := &describingRunner{rt: httpapi.Runtime{Version: "1.2.3", Isolation: "jail",
		Python: &httpapi.PythonRuntime{Version: "3.11.2", Implementation: "cpython", Executable: "/usr/bin/python3",
			PreloadedModules: []httpapi.Module{{Name: "numpy", Version: &v}, {Name: "mymod"}}, SysPathExtras: []string{"/opt/libs"}},
		// A runner's own idea of the HTTP limits is overwritten.
		Limits: httpapi.Limits{MaxStdoutBytes: 1024, MaxTimeoutMS: 99999, MaxBatchRecords: 1}}}
	s := httpapi.New(httpapi.Config{Timeout: 3 * time.Second, MemoryLimit: 128 << 20, MaxBatchRecords: 50,
		MaxBodyBytes: 4096, APIKeys: []string{"k"}}, runner)

	r := do(t, s, http.MethodGet, "/runtime", "")
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	var got httpapi.Runtime
	if err := json.Unmarshal([]byte(r.raw), &got); err != nil {
		t.Fatal(err)
	}
	want := httpapi.Limits{MaxTimeoutMS: 3000, MaxMemoryMB: 128, MinMemoryMB: 16, MaxStdoutBytes: 1024,
		MaxBatchRecords: 50, MaxBodyBytes: 4096, MaxInputDepth: httpapi.MaxInputDepth}
	if got.Limits != want {
		t.Errorf("limits %+v, want %+v", got.Limits, want)
	}
	if got.Version != "1.2.3" || got.Python == nil || got.Python.PreloadedModules[1].Version != nil ||
		*got.Python.PreloadedModules[0].Version != "1.24.2" {
		t.Errorf("runtime %s", r.raw)
	}
}

func TestRuntimeOfARunnerThatDoesNotDescribeItselfHasNoPythonYet(t *testing.T) {
	r := do(t, httpapi.New(httpapi.Config{}, okRunner("1")), http.MethodGet, "/runtime", "")
	if r.status != 200 || r.body["python"] != nil || r.body["isolation"] != "jail" {
		t.Errorf("answer %d %s", r.status, r.raw)
	}
}

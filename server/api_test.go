package server

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// cgroupsEnforced asks /readyz whether the server runs its jails in cgroups
// (details.cgroups is "v1" or "v2"; "none: ..." otherwise).
func (s *server) cgroupsEnforced() bool {
	s.t.Helper()
	resp, err := http.Get(s.url + "/readyz")
	if err != nil {
		s.t.Fatal(err)
	}
	r := readResponse(s.t, resp)
	d, _ := r.Body["details"].(map[string]any)
	v, _ := d["cgroups"].(string)
	return v == "v1" || v == "v2"
}

func usageOf(t *testing.T, r response) map[string]any {
	t.Helper()
	u, ok := r.Body["usage"].(map[string]any)
	if !ok {
		t.Fatalf("status %d answer has no usage: %.300s", r.Status, r.Raw)
	}
	if w, _ := u["wall_ms"].(float64); w <= 0 {
		t.Errorf("wall_ms = %v, want > 0", u["wall_ms"])
	}
	return u
}

// TestUsageReportsCPUAndPeakMemoryWhenCgroupsAreEnforcedAndNeverMakesThemUp
// fails, rather than skips, when cgroups are enforced and the figures are
// missing: the jail supervisor must read them from the run's own cgroup.
func TestUsageReportsCPUAndPeakMemoryWhenCgroupsAreEnforcedAndNeverMakesThemUp(t *testing.T) {
	s := sharedServer(t)
	enforced := s.cgroupsEnforced()
	burn := "def main():\n    s = 'x' * (20 * 1024 * 1024)\n    n = 0\n    for i in range(200000):\n        n += i\n    return len(s)"
	answers := map[string]response{
		"success":      s.execute(burn),
		"script error": s.execute("def main():\n    s = 'x' * (20 * 1024 * 1024)\n    raise ValueError(len(s))"),
		"batch":        s.batch("def main(r):\n    return r", []int{1, 2, 3}),
	}
	for name, r := range answers {
		u := usageOf(t, r)
		cpu, hasCPU := u["cpu_ms"].(float64)
		peak, hasPeak := u["memory_peak_bytes"].(float64)
		switch {
		case enforced && (!hasCPU || !hasPeak):
			t.Errorf("%s: cgroups are enforced but usage lacks cpu_ms or memory_peak_bytes: %v", name, u)
		case enforced && name != "batch" && (cpu <= 0 || peak < 20<<20):
			t.Errorf("%s: a script that built a 20 MiB string and looped reports cpu_ms %v, memory_peak_bytes %v", name, cpu, peak)
		case !enforced && (hasCPU || hasPeak):
			t.Errorf("%s: without cgroups nothing measures cpu or memory, yet usage has %v", name, u)
		}
	}
	t.Logf("cgroups enforced: %v; usage of the success run: %v", enforced, answers["success"].Body["usage"])
}

const allocate80MB = "def main():\n    s = 'x' * (80 * 1024 * 1024)\n    return len(s)"

// Needs the jail supervisor to apply Request.MemoryLimit at checkout.
func TestMemoryLimitMBLowersTheLimitForOneRunOnly(t *testing.T) {
	s := sharedServer(t) // --memory-limit 128MiB
	if r := s.execute(allocate80MB); r.Status != 200 {
		t.Fatalf("without memory_limit_mb: status %d: %.300s", r.Status, r.Raw)
	}
	r := s.execute(allocate80MB, `"memory_limit_mb":48`)
	if r.Status != 422 || errType(r) != "memory_limit" {
		t.Fatalf("with memory_limit_mb 48: status %d type %q: %.300s", r.Status, errType(r), r.Raw)
	}
	if !strings.Contains(errMessage(r), "memory_limit_mb") {
		t.Errorf("message %q does not say which limit applied", errMessage(r))
	}
	if r := s.execute(allocate80MB, `"memory_limit_mb":4096`); r.Status != 200 {
		t.Fatalf("memory_limit_mb above the server's limit is clamped to it: status %d: %.300s", r.Status, r.Raw)
	}
	if r := s.execute(allocate80MB); r.Status != 200 {
		t.Fatalf("the next run without the field: status %d: %.300s", r.Status, r.Raw)
	}
}

func TestRuntimeNamesTheJailsPythonItsPreloadedModulesAndTheLimits(t *testing.T) {
	numpy, err := exec.Command("/usr/bin/python3", "-c", "import numpy, json; print(numpy.__version__, json.__version__)").Output()
	if err != nil {
		t.Fatalf("the tests need Debian's python3-numpy (scripts/setup.sh test installs it): %v", err)
	}
	versions := strings.Fields(string(numpy))
	want, _ := exec.Command("/usr/bin/python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])").Output()
	s := startServer(t, nil, "--warm-workers", "2", "--max-workers", "4", "--python-path", "/usr/lib/python3/dist-packages",
		"--preload", "numpy,json", "--timeout", "4s", "--memory-limit", "192MiB", "--max-stdout", "64KiB", "--max-batch-records", "500")
	s.waitReady()
	resp, err := http.Get(s.url + "/runtime")
	if err != nil {
		t.Fatal(err)
	}
	r := readResponse(t, resp)
	jsonEq(t, r.Body["python"], `{"version": "`+strings.TrimSpace(string(want))+`", "implementation": "cpython",
		"executable": "/usr/bin/python3", "sys_path_extras": ["/usr/lib/python3/dist-packages"],
		"preloaded_modules": [{"name": "numpy", "version": "`+versions[0]+`"}, {"name": "json", "version": "`+versions[1]+`"}]}`)
	limits := r.Body["limits"].(map[string]any)
	for k, v := range map[string]float64{"max_timeout_ms": 4000, "max_memory_mb": 192, "min_memory_mb": 16,
		"max_stdout_bytes": 64 << 10, "max_batch_records": 500, "max_body_bytes": 8 << 20} {
		if limits[k] != v {
			t.Errorf("limits.%s = %v, want %v", k, limits[k], v)
		}
	}
	isolation := "cell" // the default; the test suite runs again with jail isolation
	if v := os.Getenv("EXECUTOR_TEST_ISOLATION"); v != "" {
		isolation = v
	}
	if r.Body["isolation"] != isolation || r.Body["version"] == "" {
		t.Errorf("isolation %v, version %v", r.Body["isolation"], r.Body["version"])
	}
}

func TestOpenAPIAndRuntimeNeedNoAPIKey(t *testing.T) {
	s := startServer(t, nil, "--warm-workers", "1", "--max-workers", "4", "--api-keys", "k1")
	for _, path := range []string{"/openapi.json", "/runtime"} {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		if r := readResponse(t, resp); r.Status != 200 {
			t.Errorf("GET %s without a key: %d %s", path, r.Status, r.Raw)
		}
	}
}

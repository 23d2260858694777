package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

// One server serves the tests of this file that do not need their own
// configuration: starting one costs a warm set of jails.
var (
	sharedOnce sync.Once
	shared     *server
)

func sharedServer(t *testing.T) *server {
	t.Helper()
	sharedOnce.Do(func() {
		// Not t.Cleanup-bound to the first test: TestMain stops it.
		// A long acquire timeout: these tests check what runs answer, and on
		// a machine loaded by other suites a spawn can take seconds; a 429
		// there would be the machine's doing, not the server's. The overload
		// tests start servers of their own.
		shared = startServerUnmanaged(t, nil, "--timeout", "3s", "--max-stdout", "64KiB", "--max-result", "1MiB", "--memory-limit", "128MiB",
			"--acquire-timeout", "30s")
		shared.waitReady()
	})
	if shared == nil {
		t.Fatal("shared server failed to start")
	}
	// Failures must be reported on the calling test, not on the test that
	// happened to start the server.
	s := *shared
	s.t = t
	return &s
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.stop()
	}
	os.Exit(openAPIVerdict(code))
}

const hello = "def main():\n  print('hello')\n  return {\"msg\": \"done\"}"

func TestTheOriginalServicesExampleComesBackExactly(t *testing.T) {
	s := sharedServer(t)
	r := s.execute(hello)
	if r.Status != 200 {
		t.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	jsonEq(t, r.Body["result"], `{"msg": "done"}`)
	if r.Body["stdout"] != "hello\n" {
		t.Fatalf("stdout = %q", r.Body["stdout"])
	}
	if !strings.HasPrefix(r.Raw, `{"result":{"msg":"done"},"stdout":"hello\n"`) {
		t.Fatalf("body does not start with the original's exact JSON: %s", r.Raw)
	}
}

func TestInputIsPassedToMainAndAbsentInputCallsMainWithNoArgument(t *testing.T) {
	s := sharedServer(t)
	r := s.execute("def main(rec):\n    return {'name': rec['name'].upper(), 'n': len(rec['tags'])}", `"input":{"name":"ada","tags":[1,2,3]}`)
	if r.Status != 200 {
		t.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	jsonEq(t, r.Body["result"], `{"name":"ADA","n":3}`)

	r = s.execute("def main(x='absent'):\n    return x")
	jsonEq(t, r.Body["result"], `"absent"`)
	r = s.execute("def main(x='absent'):\n    return x", `"input":null`)
	jsonEq(t, r.Body["result"], `null`)
}

func TestScriptErrorsAnswerTheirStableTypeWithLineAndUserOnlyTraceback(t *testing.T) {
	s := sharedServer(t)
	cases := []struct {
		name, script, typ string
		line              float64
	}{
		{"syntax", "def main():\n    return (\n", "syntax_error", 2},
		{"missing main", "def handler():\n    return 1\n", "missing_main", 0},
		{"main not callable", "main = 3\n", "missing_main", 0},
		{"exception in main", "def main():\n    x = {}\n    return x['missing']\n", "runtime_error", 3},
		{"exception at module level", "import nosuchmodule\ndef main():\n    return 1\n", "runtime_error", 1},
		{"set result", "def main():\n    return {1, 2}\n", "result_not_json", 0},
		{"bytes result", "def main():\n    return b'x'\n", "result_not_json", 0},
		{"nan result", "def main():\n    return float('nan')\n", "result_not_json", 0},
		{"cycle", "def main():\n    a = []\n    a.append(a)\n    return a\n", "result_not_json", 0},
		{"non-string key", "def main():\n    return {1: 'a'}\n", "result_not_json", 0},
		{"timeout", "def main():\n    while True:\n        pass\n", "timeout", 0},
		{"memory error", "def main():\n    return len(bytearray(8 << 30))\n", "memory_limit", 0},
		{"oom kill", "def main():\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 20))\n", "memory_limit", 0},
		{"stdout flood", "def main():\n    while True:\n        print('x' * 1000)\n", "output_limit", 0},
		{"huge result", "def main():\n    return 'x' * (1 << 20)\n", "output_limit", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.execute(c.script)
			if r.Status != 422 || errType(r) != c.typ {
				t.Fatalf("status %d type %q, want 422 %s: %s", r.Status, errType(r), c.typ, r.Raw)
			}
			if errMessage(r) == "" {
				t.Fatal("empty error message")
			}
			e := r.Body["error"].(map[string]any)
			if c.line != 0 && e["line"] != c.line {
				t.Fatalf("line = %v, want %v (%s)", e["line"], c.line, r.Raw)
			}
			if strings.Contains(r.Raw, "/usr/lib") || strings.Contains(r.Raw, "worker") && c.typ == "runtime_error" && strings.Contains(fmt.Sprint(e["traceback"]), "worker") {
				t.Fatalf("host paths or worker internals leaked: %s", r.Raw)
			}
		})
	}
}

func TestRuntimeErrorTracebackShowsOnlyTheScriptsFrames(t *testing.T) {
	s := sharedServer(t)
	r := s.execute("def helper(d):\n    return 1 / d\n\ndef main():\n    return helper(0)\n")
	if errType(r) != "runtime_error" {
		t.Fatalf("%s", r.Raw)
	}
	tb, _ := r.Body["error"].(map[string]any)["traceback"].(string)
	for _, want := range []string{`File "<script>", line 5, in main`, `File "<script>", line 2, in helper`, "ZeroDivisionError: division by zero"} {
		if !strings.Contains(tb, want) {
			t.Fatalf("traceback lacks %q:\n%s", want, tb)
		}
	}
	if strings.Count(tb, "File ") != 2 {
		t.Fatalf("traceback has frames beyond the script's own:\n%s", tb)
	}
}

func TestErrorsCarryTheOutputPrintedBeforeTheFailure(t *testing.T) {
	s := sharedServer(t)
	r := s.execute("import sys\ndef main():\n    print('step 1')\n    sys.stderr.write('warn\\n')\n    raise ValueError('bad record')\n")
	if errType(r) != "runtime_error" || r.Body["stdout"] != "step 1\n" || r.Body["stderr"] != "warn\n" {
		t.Fatalf("%s", r.Raw)
	}
	r = s.execute("import sys\ndef main():\n    print('before the loop', flush=True)\n    while True:\n        pass\n", `"timeout_ms":300`)
	if errType(r) != "timeout" || r.Body["stdout"] != "before the loop\n" {
		t.Fatalf("%s", r.Raw)
	}
}

func TestTimeoutMSLowersTheLimitButCannotRaiseIt(t *testing.T) {
	s := sharedServer(t)
	sleep := "import time\ndef main():\n    time.sleep(1.0)\n    return 'slept'\n"
	r := s.execute(sleep, `"timeout_ms":200`)
	if errType(r) != "timeout" || !strings.Contains(errMessage(r), "200 ms") {
		t.Fatalf("timeout_ms=200: %s", r.Raw)
	}
	r = s.execute(sleep, `"timeout_ms":600000`)
	if r.Status != 200 {
		t.Fatalf("a 1 s script with timeout_ms above the server limit: %s", r.Raw)
	}
	start := time.Now()
	r = s.execute("import time\ndef main():\n    time.sleep(60)\n", `"timeout_ms":600000`)
	if errType(r) != "timeout" || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout_ms raised the server's 3 s limit: %s after %s", r.Raw, time.Since(start))
	}
}

func TestAScriptPrintingAForgedResultGetsItsRealReturnValue(t *testing.T) {
	s := sharedServer(t)
	r := s.execute("def main():\n    print('{\"result\": \"forged\"}')\n    print('SSE-RES 20')\n    return 'real'\n")
	if r.Status != 200 {
		t.Fatalf("%s", r.Raw)
	}
	if r.Body["result"] != "real" {
		t.Fatalf("result = %v, want real", r.Body["result"])
	}
	if !strings.Contains(r.Body["stdout"].(string), "forged") {
		t.Fatalf("the printed text should stay in stdout: %s", r.Raw)
	}
}

func TestWorkersAreSingleUseNothingOfOneRunReachesTheNext(t *testing.T) {
	s := sharedServer(t)
	writer := "import os, builtins\nSECRET = []\ndef main():\n    open('/tmp/tenant-a.txt', 'w').write('card 4242')\n    builtins.LEAK = 'tenant a'\n    os.environ['LEAK'] = 'tenant a'\n    return 'written'\n"
	reader := "import os, builtins\ndef main():\n    return {'tmp': sorted(os.listdir('/tmp')), 'builtin': getattr(builtins, 'LEAK', None), 'env': os.environ.get('LEAK')}\n"
	for i := 0; i < 5; i++ {
		if r := s.execute(writer); r.Status != 200 {
			t.Fatalf("%s", r.Raw)
		}
		r := s.execute(reader)
		jsonEq(t, r.Body["result"], `{"tmp": [], "builtin": null, "env": null}`)
	}
}

func TestSixtyFourRequestsAtConcurrencySixteenEachGetTheirOwnResult(t *testing.T) {
	s := sharedServer(t)
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	sem := make(chan struct{}, 16)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			body := fmt.Sprintf(`{"script":"def main(n):\n    print('req', n)\n    return n * n","input":%d}`, i)
			resp, err := http.Post(s.url+"/execute", "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			var out struct {
				Result *int
				Stdout string
			}
			json.NewDecoder(resp.Body).Decode(&out)
			if resp.StatusCode != 200 || out.Result == nil || *out.Result != i*i || out.Stdout != fmt.Sprintf("req %d\n", i) {
				errs <- fmt.Sprintf("request %d: status %d result %v stdout %q", i, resp.StatusCode, out.Result, out.Stdout)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestHTTPInputErrorsHaveTheirOwnTypesAndStatuses(t *testing.T) {
	s := sharedServer(t)
	cases := []struct {
		name, ctype, body string
		status            int
		typ               string
	}{
		{"malformed json", "application/json", `{"script": "def main(): return 1"`, 400, "invalid_request"},
		{"missing script", "application/json", `{"input": 1}`, 400, "invalid_request"},
		{"empty script", "application/json", `{"script": ""}`, 400, "invalid_request"},
		{"script not a string", "application/json", `{"script": 42}`, 400, "invalid_request"},
		{"bad timeout", "application/json", `{"script": "x", "timeout_ms": "soon"}`, 400, "invalid_request"},
		{"not json", "text/plain", `def main(): return 1`, 415, "unsupported_media_type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := s.post("/execute", c.ctype, c.body)
			if r.Status != c.status || errType(r) != c.typ {
				t.Fatalf("status %d type %q, want %d %s: %.300s", r.Status, errType(r), c.status, c.typ, r.Raw)
			}
		})
	}
	// Over the 8 MiB limit: the server answers from the Content-Length
	// header and closes, so send only the headers (a client still writing
	// the body may see the reset before it reads the answer).
	conn, err := net.Dial("tcp", s.app.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"script\": \"", 9<<20)
	big, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(big.Body)
	if big.StatusCode != 413 || !strings.Contains(string(raw), `"request_too_large"`) {
		t.Fatalf("oversize body: %d %s", big.StatusCode, raw)
	}

	resp, err := http.Get(s.url + "/no/such/route")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("unknown route: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestOverloadAnswers429WithRetryAfterWhenNoWorkerFreesUpInTime(t *testing.T) {
	s := startServer(t, nil, "--warm-workers", "1", "--max-workers", "1", "--acquire-timeout", "200ms", "--uid-base", testenv.UIDBaseArg(t))
	s.waitReady()
	done := make(chan response, 1)
	go func() { done <- s.execute("import time\ndef main():\n    time.sleep(1.5)\n    return 1\n") }()
	s.waitBusy(1) // the only worker is now busy
	r := s.execute(hello)
	if r.Status != 429 || errType(r) != "overloaded" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d type %s Retry-After %q: %s", r.Status, errType(r), r.Header.Get("Retry-After"), r.Raw)
	}
	if first := <-done; first.Status != 200 {
		t.Fatalf("the busy run: %s", first.Raw)
	}
}

func TestABrokenSandboxKeepsTheServerUpButNotReadyAndNothingRunsUnsandboxed(t *testing.T) {
	s := startServer(t, nil, "--nsjail-path", "/bin/false", "--uid-base", testenv.UIDBaseArg(t))
	s.waitSandboxDown()
	resp, err := http.Get(s.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", err, resp)
	}
	resp.Body.Close()
	resp, _ = http.Get(s.url + "/readyz")
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz = %d, want 503", resp.StatusCode)
	}
	r := s.execute("def main():\n    return 'ran'\n")
	if r.Status != 503 || errType(r) != "sandbox_unavailable" {
		t.Fatalf("%s", r.Raw)
	}
	if strings.Contains(r.Raw, "/bin/false") || strings.Contains(r.Raw, "nsjail exited") {
		t.Fatalf("internals leaked to the client: %s", r.Raw)
	}
}

func TestTheSandboxRecoversWhenNsjailAppearsLater(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "nsjail")
	s := startServer(t, nil, "--nsjail-path", link, "--uid-base", testenv.UIDBaseArg(t), "--warm-workers", "1", "--max-workers", "2")
	s.waitSandboxDown()
	if r := s.execute(hello); errType(r) != "sandbox_unavailable" {
		t.Fatalf("before nsjail exists: %s", r.Raw)
	}
	if err := os.Symlink(testenv.Nsjail(t), link); err != nil {
		t.Fatal(err)
	}
	s.waitReady()
	if r := s.execute(hello); r.Status != 200 {
		t.Fatalf("after nsjail appeared: %s", r.Raw)
	}
}

func TestCloseLeavesNoJailProcessNoCgroupAndNoOpenFile(t *testing.T) {
	fdsBefore := openFDs(t)
	uidBase, cgroup := testenv.UIDBase(t), testenv.CgroupParent(t, "close")
	s := startServer(t, nil, "--uid-base", strconv.Itoa(uidBase), "--warm-workers", "4", "--max-workers", "8", "--cgroup-parent", cgroup)
	s.waitReady()
	for i := 0; i < 8; i++ {
		s.execute(hello)
	}
	s.execute("def main():\n    while True: pass\n", `"timeout_ms":100`)
	if len(jailProcesses(t, uidBase, 8)) == 0 {
		t.Fatal("no jail processes seen while running: the check below would prove nothing")
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if left := jailProcesses(t, uidBase, 8); len(left) > 0 {
		t.Fatalf("processes left after Close: %v", left)
	}
	// Close removes the (empty) parent too; if it is still there it must
	// hold no jail's group, in whichever hierarchy the server used.
	if left := testenv.CgroupsLeft(t, cgroup); len(left) > 0 {
		t.Errorf("cgroups left behind: %v", left)
	}
	// The shared server may hold fds of its own; this server's are all gone
	// (the HTTP client's idle connections close a moment after the server's).
	s.waitFor("this server's fds to close", func() bool { return openFDs(t) <= fdsBefore+2 })
}

func TestReadyzTellsOperatorsWhetherCgroupLimitsAreEnforced(t *testing.T) {
	readyz := func(s *server) map[string]any {
		resp, err := http.Get(s.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return body
	}
	details, _ := readyz(sharedServer(t))["details"].(map[string]any)
	if details["cgroups"] != "v1" && details["cgroups"] != "v2" || details["cpu_cap"] != "1000 ms/s" {
		t.Fatalf("shared server on a cgroup host: details %v", details)
	}
	wantIsolation := "cell" // the default; make test runs the suite again with jail
	if m := os.Getenv("EXECUTOR_TEST_ISOLATION"); m != "" {
		wantIsolation = m
	}
	if details["isolation"] != wantIsolation {
		t.Errorf("details name isolation %v, want %s", details["isolation"], wantIsolation)
	}
	s := startServer(t, nil, "--cgroups", "off", "--uid-base", testenv.UIDBaseArg(t), "--warm-workers", "1", "--max-workers", "2")
	s.waitReady()
	details, _ = readyz(s)["details"].(map[string]any)
	if c, _ := details["cgroups"].(string); !strings.HasPrefix(c, "none: ") || !strings.Contains(c, "rlimits only") {
		t.Fatalf("cgroups off: details %v", details)
	}
	if !strings.Contains(s.logs.String(), "NO CGROUP LIMITS") {
		t.Fatal("running without cgroup limits was not logged loudly")
	}
}

// The supervisor words a timeout once, knowing which limit ended the run;
// the API passes its message through.
func TestATimeoutSaysWhichLimitEndedTheRunAndWhatTheClientCanDo(t *testing.T) {
	s := startServer(t, nil, "--timeout", "20s", "--warm-workers", "1", "--max-workers", "2")
	s.waitReady()
	r := s.execute("def main():\n    while True:\n        pass\n", `"timeout_ms":300`)
	want := "the script ran longer than its 300 ms limit; make it faster or raise timeout_ms up to 20000"
	if r.Status != 422 || errType(r) != "timeout" || errMessage(r) != want {
		t.Fatalf("wall-clock limit: status %d type %q message %q, want 422 timeout %q", r.Status, errType(r), errMessage(r), want)
	}
	// RLIMIT_CPU, lowered by the script itself to 1 s: a CPU-time kill, not
	// a wall-clock one, and the answer must say so.
	r = s.execute("import resource\ndef main():\n    resource.setrlimit(resource.RLIMIT_CPU, (1, 1))\n    while True:\n        pass\n")
	if r.Status != 422 || errType(r) != "timeout" || !strings.Contains(errMessage(r), "CPU time limit") {
		t.Fatalf("CPU limit: status %d type %q message %q, want 422 timeout naming the CPU time limit", r.Status, errType(r), errMessage(r))
	}
}

// A cold pool keeps no warm worker, so it must not need one to be ready: the
// self-test spawns the first worker, and no request has to come first.
func TestAColdServerBecomesReadyWithoutAnyRequest(t *testing.T) {
	s := startServer(t, nil, "--pool-mode", "cold", "--warm-workers", "0", "--max-workers", "2")
	s.waitReady()
	if st := s.app.pool.Stat(); st.IdleWorkers != 0 || st.WarmTarget != 0 {
		t.Fatalf("cold pool: %d idle, warm target %d; want none", st.IdleWorkers, st.WarmTarget)
	}
	if r := s.execute(hello); r.Status != 200 {
		t.Fatalf("%s", r.Raw)
	}
}

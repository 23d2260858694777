package server

// Deployment and operations: configuration errors, the graceful life cycle of
// the real binary under SIGTERM and SIGINT, API keys, a broken sandbox and
// the separate metrics listener. Every server here has its own uid range
// (270000..279999) and its own cgroup parent, so what it leaves behind can be
// told apart from every other test's.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

// lcCgroupParent names a cgroup parent for one test and removes it (v1: in
// the memory and pids hierarchies) once the test is over.
func lcCgroupParent(t *testing.T, name string) string {
	t.Helper()
	return testenv.CgroupParent(t, "lc-"+name)
}

// lcNothingLeft fails t if a jail process of the uid range or a jail cgroup
// below parent is left.
func lcNothingLeft(t *testing.T, uidBase, n int, parent string) {
	t.Helper()
	// nsjail removes a jail's cgroup right after its child is reaped; give
	// the last ones a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		procs, groups := jailProcesses(t, uidBase, n), testenv.CgroupsLeft(t, parent)
		if len(procs)+len(groups) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: processes %v, cgroups %v", procs, groups)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lcGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ---------------------------------------------------------------------------
// Configuration

func TestBadConfigurationExitsTwoAndNamesTheSetting(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want []string // all must appear in stderr
	}{
		{"PORT not a number", map[string]string{"PORT": "not-a-port"}, nil, []string{"PORT", `"not-a-port"`, "--port"}},
		{"EXECUTOR_PORT out of range", map[string]string{"EXECUTOR_PORT": "70000"}, nil, []string{"--port", "EXECUTOR_PORT", "0..65535"}},
		{"negative timeout", map[string]string{"EXECUTOR_TIMEOUT": "-1s"}, nil, []string{"--timeout", "EXECUTOR_TIMEOUT", "positive duration"}},
		{"timeout not a duration", map[string]string{"EXECUTOR_TIMEOUT": "5 minutes"}, nil, []string{"EXECUTOR_TIMEOUT", "--timeout"}},
		{"unknown pool mode", nil, []string{"--pool-mode=hot"}, []string{"--pool-mode", "EXECUTOR_POOL_MODE", "warm or cold"}},
		{"memory limit not a size", map[string]string{"EXECUTOR_MEMORY_LIMIT": "lots"}, nil, []string{"EXECUTOR_MEMORY_LIMIT", "--memory-limit", "256MiB"}},
		{"memory limit too small", nil, []string{"--memory-limit", "1MiB"}, []string{"--memory-limit", "EXECUTOR_MEMORY_LIMIT", "16MiB"}},
		{"unknown flag", nil, []string{"--no-such-flag"}, []string{"no-such-flag", "--help"}},
		{"flag value not a number", nil, []string{"--max-procs", "many"}, []string{"max-procs"}},
		{"stray argument", nil, []string{"serve"}, []string{`"serve"`}},
		{"fewer max than warm workers", nil, []string{"--warm-workers", "5", "--max-workers", "2"}, []string{"--max-workers", "EXECUTOR_MAX_WORKERS", "--warm-workers"}},
		{"max procs zero", map[string]string{"EXECUTOR_MAX_PROCS": "0"}, nil, []string{"--max-procs", "EXECUTOR_MAX_PROCS"}},
		{"relative python", nil, []string{"--python-bin", "python3"}, []string{"--python-bin", "EXECUTOR_PYTHON_BIN", "absolute"}},
		{"unknown cgroups mode", map[string]string{"EXECUTOR_CGROUPS": "maybe"}, nil, []string{"--cgroups", "EXECUTOR_CGROUPS"}},
		{"missing api keys file", nil, []string{"--api-keys-file", "/nonexistent/keys"}, []string{"--api-keys-file", "EXECUTOR_API_KEYS_FILE", "/nonexistent/keys", "no such file"}},
		{"api keys set but empty", map[string]string{"EXECUTOR_API_KEYS": " , "}, nil, []string{"--api-keys", "EXECUTOR_API_KEYS", "no key"}},
	}
	emptyKeys := filepath.Join(t.TempDir(), "keys")
	os.WriteFile(emptyKeys, []byte("# no keys yet\n\n"), 0o600)
	cases = append(cases, struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{"api keys file without a key", map[string]string{"EXECUTOR_API_KEYS_FILE": emptyKeys}, nil, []string{"--api-keys-file", "EXECUTOR_API_KEYS_FILE", "no key"}})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // should it start after all, it stops at once
			code := Main(ctx, c.args, environ(c.env), &stderr, nil)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, &stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, &stderr)
				}
			}
			if strings.Contains(stderr.String(), "Usage:") || strings.Count(stderr.String(), "\n") > 3 {
				t.Errorf("a mistake should get one clear message, not the whole usage:\n%s", &stderr)
			}
		})
	}
}

// kebab turns a config field name into its flag name: MaxIdleAge →
// max-idle-age, UIDBase → uid-base, APIKeysFile → api-keys-file.
func kebab(s string) string {
	var b strings.Builder
	for i, r := range s {
		upper := r >= 'A' && r <= 'Z'
		if i > 0 && upper {
			prevLower := s[i-1] >= 'a' && s[i-1] <= 'z'
			nextLower := i+1 < len(s) && s[i+1] >= 'a' && s[i+1] <= 'z'
			prevUpper := s[i-1] >= 'A' && s[i-1] <= 'Z'
			if prevLower || (prevUpper && nextLower) {
				b.WriteByte('-')
			}
		}
		b.WriteString(strings.ToLower(string(r)))
	}
	return b.String()
}

func TestHelpExitsZeroAndDocumentsEveryFlagWithItsEnvironmentVariable(t *testing.T) {
	var stderr bytes.Buffer
	if code := Main(context.Background(), []string{"--help"}, nil, &stderr, nil); code != 0 {
		t.Fatalf("--help exit code %d:\n%s", code, &stderr)
	}
	help := stderr.String()
	// Every setting of the config struct is a documented flag with its
	// variable (the struct is the list of settings, independent of the
	// flag set that prints the help).
	fields := reflect.TypeFor[config]()
	documented := map[string]bool{}
	for _, line := range strings.Split(help, "\n") {
		if rest, ok := strings.CutPrefix(line, "  --"); ok {
			documented[strings.Fields(rest)[0]] = true
		}
	}
	for i := range fields.NumField() {
		name := kebab(fields.Field(i).Name)
		var line string
		for _, l := range strings.Split(help, "\n") {
			if strings.HasPrefix(l, "  --"+name+" ") {
				line = l
			}
		}
		if line == "" {
			t.Errorf("--%s (field %s) is not documented", name, fields.Field(i).Name)
			continue
		}
		if !strings.Contains(line, "["+envName(name)) {
			t.Errorf("--%s is documented without %s: %q", name, envName(name), line)
		}
	}
	if len(documented) != fields.NumField() {
		t.Errorf("%d flags documented, %d settings exist", len(documented), fields.NumField())
	}
	for _, w := range []string{"EXECUTOR_PORT or PORT", "EXECUTOR_SOME_NAME"} {
		if !strings.Contains(help, w) {
			t.Errorf("help lacks %q", w)
		}
	}
}

func TestDefaultWarmWorkersFollowGOMAXPROCSAndStayWithinMaxWorkers(t *testing.T) {
	getenv := func(env map[string]string) func(string) string { return func(k string) string { return env[k] } }
	c, err := parseConfig(nil, getenv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := 4 * runtime.GOMAXPROCS(0); c.WarmWorkers != want || c.MaxWorkers != max(2*want, 4) {
		t.Fatalf("warm %d max %d, want %d and %d (GOMAXPROCS %d)", c.WarmWorkers, c.MaxWorkers, want, max(2*want, 4), runtime.GOMAXPROCS(0))
	}
	old := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(old)
	if c, _ := parseConfig(nil, getenv(nil), io.Discard); c.WarmWorkers != 4 {
		t.Fatalf("GOMAXPROCS=1 (a 1-CPU container): warm %d, want 4", c.WarmWorkers)
	}
	// Only the ceiling given (flag or variable): the default adapts instead
	// of failing with "max-workers must be at least warm-workers".
	if c, err := parseConfig(nil, getenv(map[string]string{"EXECUTOR_MAX_WORKERS": "2"}), io.Discard); err != nil || c.WarmWorkers != 2 || c.MaxWorkers != 2 {
		t.Fatalf("EXECUTOR_MAX_WORKERS=2: warm %d max %d, %v", c.WarmWorkers, c.MaxWorkers, err)
	}
	if c, err := parseConfig([]string{"--max-workers", "3"}, getenv(nil), io.Discard); err != nil || c.WarmWorkers != 3 {
		t.Fatalf("--max-workers 3: warm %d, %v", c.WarmWorkers, err)
	}
	// A flag on the command line wins over its variable.
	if c, err := parseConfig([]string{"--warm-workers", "3"}, getenv(map[string]string{"EXECUTOR_WARM_WORKERS": "9"}), io.Discard); err != nil || c.WarmWorkers != 3 {
		t.Fatalf("flag vs variable: warm %d, %v", c.WarmWorkers, err)
	}
}

// ---------------------------------------------------------------------------
// The real binary: SIGTERM, SIGINT, grace exceeded

// proc is the executor binary running as a child process.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	url     string
	logs    *syncBuffer
	exited  chan struct{}
	code    int
	uidBase int // unused: each case allocates its own
	workers int
	cgroup  string
}

// startBinary starts bin on a free loopback port and waits for /readyz.
func startBinary(t *testing.T, bin string, uidBase int, cgroup string, args ...string) *proc {
	t.Helper()
	port := freePort(t)
	p := &proc{t: t, url: "http://127.0.0.1:" + strconv.Itoa(port), logs: &syncBuffer{}, exited: make(chan struct{}),
		uidBase: uidBase, workers: 4, cgroup: cgroup}
	base := []string{"--host", "127.0.0.1", "--port", strconv.Itoa(port), "--nsjail-path", testenv.Nsjail(t),
		"--uid-base", strconv.Itoa(uidBase), "--warm-workers", "2", "--max-workers", "4",
		"--cgroup-parent", cgroup, "--log-level", "debug"}
	p.cmd = exec.Command(bin, append(base, args...)...)
	// Nothing of this test's environment may configure the server.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EXECUTOR_") && !strings.HasPrefix(kv, "PORT=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("server log:\n%s", p.logs)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("the executor exited with %d before it was ready:\n%s", p.code, p.logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the executor never became ready:\n%s", p.logs)
		}
	}
}

// wait returns the exit code and how long after since the process exited.
func (p *proc) wait(since time.Time, limit time.Duration) (int, time.Duration) {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code, time.Since(since)
	case <-time.After(limit):
		p.t.Fatalf("the executor did not exit within %s:\n%s", limit, p.logs)
		return -1, 0
	}
}

type lcResult struct {
	status int
	body   map[string]any
	raw    string
	err    error
	at     time.Time
}

// executeAsync posts a script on its own connection.
func (p *proc) executeAsync(script string) <-chan lcResult {
	out := make(chan lcResult, 1)
	b, _ := json.Marshal(map[string]any{"script": script})
	go func() {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Post(p.url+"/execute", "application/json", bytes.NewReader(b))
		if err != nil {
			out <- lcResult{err: err, at: time.Now()}
			return
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		r := lcResult{status: resp.StatusCode, raw: string(raw), err: err, at: time.Now()}
		json.Unmarshal(raw, &r.body)
		out <- r
	}()
	return out
}

// waitRunning waits until n runs hold a worker, as the binary's own
// /metrics reports it (executor_pool_acquired_workers).
func (p *proc) waitRunning(n int) {
	p.t.Helper()
	want := fmt.Sprintf("\nexecutor_pool_acquired_workers %d\n", n)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if status, body := lcGet(p.t, p.url+"/metrics"); status == 200 && strings.Contains(body, want) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("never saw %d runs in flight:\n%s", n, p.logs)
		}
	}
}

// refusedAt waits until a new TCP connection to the API is refused.
func (p *proc) refusedAt(limit time.Duration) (time.Time, error) {
	addr := strings.TrimPrefix(p.url, "http://")
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return time.Now(), nil
			}
			if errors.Is(err, syscall.ECONNRESET) {
				// The connection sat in the backlog of the listener as it
				// closed: it was never accepted. Go on until refused.
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return time.Time{}, err
		}
		c.Close()
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("new connections were still accepted %s after the signal", limit)
}

// buildExecutor builds cmd/executor into dir, as the Dockerfile does.
func buildExecutor(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "executor")
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/executor")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/executor: %v\n%s", err, out)
	}
	t.Logf("built cmd/executor in %s", time.Since(start).Round(time.Millisecond))
	return bin
}

const sleepScript = "import time\ndef main():\n    time.sleep(%s)\n    return {'slept': %s}\n"

func TestTheBinaryShutsDownGracefullyOnSignals(t *testing.T) {
	bin := buildExecutor(t, t.TempDir())

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT"}[sig], func(t *testing.T) {
			uidBase := testenv.UIDBase(t)
			cgroup := lcCgroupParent(t, "signal-"+strconv.Itoa(int(sig)))
			p := startBinary(t, bin, uidBase, cgroup, "--shutdown-grace", "10s", "--timeout", "8s")
			if len(jailProcesses(t, uidBase, p.workers)) == 0 {
				t.Fatal("no warm jail is running: the checks after exit would prove nothing")
			}

			pending := p.executeAsync(fmt.Sprintf(sleepScript, "1.5", "1.5"))
			p.waitRunning(1) // the run is now in its jail
			signalled := time.Now()
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}

			refused, err := p.refusedAt(time.Second)
			if err != nil {
				t.Fatalf("after %s: %v", sig, err)
			}
			r := <-pending
			if r.err != nil || r.status != 200 {
				t.Fatalf("the run in flight at %s: status %d err %v: %s", sig, r.status, r.err, r.raw)
			}
			jsonEq(t, r.body["result"], `{"slept": 1.5}`)
			if !refused.Before(r.at) {
				t.Fatalf("new connections were refused only %s after the run finished", refused.Sub(r.at))
			}
			t.Logf("refused new connections %s after %s; run answered %s after it",
				refused.Sub(signalled).Round(time.Millisecond), sig, r.at.Sub(signalled).Round(time.Millisecond))

			code, took := p.wait(signalled, 15*time.Second)
			if code != 0 {
				t.Fatalf("exit code %d after %s, want 0:\n%s", code, sig, p.logs)
			}
			if took > 10*time.Second {
				t.Fatalf("exited %s after %s, beyond the 10 s grace", took, sig)
			}
			t.Logf("exited 0 %s after %s", took.Round(time.Millisecond), sig)
			lcNothingLeft(t, uidBase, p.workers, cgroup)
			for _, w := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
				if !strings.Contains(p.logs.String(), w) {
					t.Errorf("log lacks %s", w)
				}
			}
		})
	}

	t.Run("grace exceeded", func(t *testing.T) {
		uidBase := testenv.UIDBase(t)
		cgroup := lcCgroupParent(t, "grace")
		p := startBinary(t, bin, uidBase, cgroup, "--shutdown-grace", "1s", "--timeout", "20s")
		pending := p.executeAsync(fmt.Sprintf(sleepScript, "15", "15"))
		p.waitRunning(1)
		signalled := time.Now()
		p.cmd.Process.Signal(syscall.SIGTERM)

		code, took := p.wait(signalled, 10*time.Second)
		// Documented in docs/DEPLOY.md: exit 1 tells the orchestrator
		// that runs were abandoned, and the abandoned client gets a JSON
		// 503 asking it to retry elsewhere.
		if code != 1 {
			t.Fatalf("exit code %d, want 1 (runs were abandoned)", code)
		}
		if took > 5*time.Second {
			t.Fatalf("exited %s after SIGTERM with a 1 s grace", took)
		}
		t.Logf("exited %d %s after SIGTERM", code, took.Round(time.Millisecond))
		var r lcResult
		select {
		case r = <-pending:
		case <-time.After(5 * time.Second):
			t.Fatal("the abandoned client got neither an answer nor a closed connection")
		}
		if r.err != nil || r.status != 503 || errType(response{Body: r.body}) != "sandbox_unavailable" ||
			!strings.Contains(errMessage(response{Body: r.body}), "shutting down") {
			t.Fatalf("abandoned run: status %d err %v body %s", r.status, r.err, r.raw)
		}
		if !r.at.Before(signalled.Add(took)) {
			t.Fatalf("answered %s after the exit", r.at.Sub(signalled.Add(took)))
		}
		lcNothingLeft(t, uidBase, p.workers, cgroup)
		if !strings.Contains(p.logs.String(), "grace") {
			t.Errorf("the log does not say the grace was exceeded:\n%s", p.logs)
		}
	})
}

// ---------------------------------------------------------------------------
// API keys

func lcPost(t *testing.T, url, auth, body string) (int, http.Header, string) {
	t.Helper()
	return postRaw(t, url, map[string]string{"Content-Type": "application/json", "Authorization": auth}, body)
}

func TestAPIKeysGuardExecuteButNotProbesAndNeverReachTheLog(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "api-keys")
	os.WriteFile(keysFile, []byte("# executor API keys, one per line\n\n  sse-file-key-alpha-93c1  \n# sse-file-key-revoked-0000\n\nsse-file-key-beta-41d7\n"), 0o600)

	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		good    []string
		bad     []string
		uidBase int // unused: each case allocates its own
	}{
		{"EXECUTOR_API_KEYS", map[string]string{"EXECUTOR_API_KEYS": "sse-env-key-one-5f1c, sse-env-key-two-77b0"}, nil,
			[]string{"sse-env-key-one-5f1c", "sse-env-key-two-77b0"}, []string{"sse-env-key-one", "sse-env-key-three-0000"}, 0},
		{"--api-keys-file", nil, []string{"--api-keys-file", keysFile},
			[]string{"sse-file-key-alpha-93c1", "sse-file-key-beta-41d7"}, []string{"sse-file-key-revoked-0000", "# executor API keys, one per line"}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cgroup := lcCgroupParent(t, "keys")
			s := startServer(t, c.env, append([]string{"--uid-base", testenv.UIDBaseArg(t), "--cgroup-parent", cgroup,
				"--warm-workers", "1", "--max-workers", "2"}, c.args...)...)
			s.waitReady()
			body := `{"script":"def main():\n    return 'ran'\n"}`

			for _, auth := range append([]string{"", "Basic " + c.good[0], "Bearer"}, prefixAll("Bearer ", c.bad)...) {
				for _, route := range []string{"/execute", "/execute/batch"} {
					status, h, raw := lcPost(t, s.url+route, auth, body)
					if status != 401 || !strings.Contains(raw, `"type":"unauthorized"`) || h.Get("WWW-Authenticate") != "Bearer" {
						t.Fatalf("%s with Authorization %q: %d WWW-Authenticate %q: %s", route, auth, status, h.Get("WWW-Authenticate"), raw)
					}
				}
			}
			for _, key := range c.good {
				for _, auth := range []string{"Bearer " + key, "bearer " + key} {
					status, _, raw := lcPost(t, s.url+"/execute", auth, body)
					if status != 200 || !strings.Contains(raw, `"result":"ran"`) {
						t.Fatalf("Authorization %q: %d %s", auth, status, raw)
					}
				}
			}
			s.waitReady() // the runs used the warm worker; wait for its replacement
			for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
				if status, raw := lcGet(t, s.url+path); status != 200 {
					t.Fatalf("%s without a key: %d %s", path, status, raw)
				}
			}
			s.stop()
			logs := s.logs.String()
			if !strings.Contains(logs, `"status":401`) || !strings.Contains(logs, "api_keys") {
				t.Fatalf("the log does not show the requests or the key count (is it the right log?):\n%s", logs)
			}
			for _, k := range append(c.good, c.bad...) {
				if strings.Contains(logs, k) {
					t.Fatalf("key %q appears in the log", k)
				}
			}
		})
	}
}

func prefixAll(p string, xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = p + x
	}
	return out
}

func TestWithoutAPIKeysTheLogWarnsThatExecuteIsOpen(t *testing.T) {
	s := startServer(t, nil, "--nsjail-path", "/bin/false", "--uid-base", testenv.UIDBaseArg(t), "--warm-workers", "1", "--max-workers", "1",
		"--cgroups", "off")
	s.stop()
	if !strings.Contains(s.logs.String(), "NO API KEYS") {
		t.Fatalf("no warning about an open /execute:\n%s", s.logs)
	}
}

// ---------------------------------------------------------------------------
// Broken sandbox (extends TestABrokenSandbox... in execute_test.go: the
// readiness reason, nsjail's own error in the log, and the fix)

func TestANsjailThatCannotCreateNamespacesIsReportedWithCauseAndFix(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "nsjail")
	os.WriteFile(fake, []byte("#!/bin/sh\n"+
		"echo '[E][2026-01-01T00:00:00+0000][1] initCloneNs():390 clone(flags=CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWNET) failed: Operation not permitted' >&2\n"+
		"echo '[F][2026-01-01T00:00:00+0000][1] runChild():474 Launching child process failed' >&2\n"+
		"exit 255\n"), 0o755)
	cgroup := lcCgroupParent(t, "broken")
	s := startServer(t, nil, "--nsjail-path", fake, "--uid-base", testenv.UIDBaseArg(t), "--cgroup-parent", cgroup,
		"--warm-workers", "1", "--max-workers", "2")

	s.waitFor("the SANDBOX UNAVAILABLE log line", func() bool { return strings.Contains(s.logs.String(), "SANDBOX UNAVAILABLE") })
	if status, raw := lcGet(t, s.url+"/healthz"); status != 200 {
		t.Fatalf("/healthz: %d %s", status, raw)
	}
	status, raw := lcGet(t, s.url+"/readyz")
	var ready struct{ Status, Reason string }
	json.Unmarshal([]byte(raw), &ready)
	if status != 503 || ready.Status != "not_ready" || !strings.Contains(ready.Reason, "Operation not permitted") {
		t.Fatalf("/readyz: %d %s", status, raw)
	}
	r := s.execute("def main():\n    return 'ran'\n")
	if r.Status != 503 || errType(r) != "sandbox_unavailable" {
		t.Fatalf("/execute: %s", r.Raw)
	}
	if strings.Contains(r.Raw, "clone(") || strings.Contains(r.Raw, fake) {
		t.Fatalf("nsjail's diagnostics leaked to the client: %s", r.Raw)
	}

	var line map[string]any
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(l, "SANDBOX UNAVAILABLE") {
			json.Unmarshal([]byte(l), &line)
			break
		}
	}
	if line == nil {
		t.Fatalf("no SANDBOX UNAVAILABLE line:\n%s", s.logs)
	}
	cause, _ := line["err"].(string)
	fix, _ := line["fix"].(string)
	if line["level"] != "ERROR" || !strings.Contains(cause, "clone(flags=CLONE_NEWUSER") || !strings.Contains(cause, "exited with status 255") {
		t.Fatalf("the log does not give nsjail's own cause: %v", line)
	}
	for _, w := range []string{"--nsjail-path", "CAP_SYS_ADMIN", "user namespaces", "docs/DEPLOY.md"} {
		if !strings.Contains(fix, w) {
			t.Fatalf("the fix %q lacks %q", fix, w)
		}
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// ---------------------------------------------------------------------------
// --metrics-addr

func TestMetricsAddrServesMetricsOnlyOnItsOwnListener(t *testing.T) {
	port := freePort(t)
	metricsURL := "http://127.0.0.1:" + strconv.Itoa(port) + "/metrics"
	cgroup := lcCgroupParent(t, "metrics")
	s := startServer(t, map[string]string{"EXECUTOR_METRICS_ADDR": "127.0.0.1:" + strconv.Itoa(port)},
		"--uid-base", testenv.UIDBaseArg(t), "--cgroup-parent", cgroup, "--warm-workers", "1", "--max-workers", "2")
	s.waitReady()
	if r := s.execute(hello); r.Status != 200 {
		t.Fatalf("%s", r.Raw)
	}
	status, raw := lcGet(t, metricsURL)
	if status != 200 || !strings.Contains(raw, "executor_executions_total{") || !strings.Contains(raw, "executor_build_info") {
		t.Fatalf("metrics listener: %d %.500s", status, raw)
	}
	if status, raw := lcGet(t, s.url+"/metrics"); status != 404 || strings.Contains(raw, "executor_") {
		t.Fatalf("API port /metrics: %d %.300s", status, raw)
	}
	for _, path := range []string{"/execute", "/healthz"} {
		if status, _ := lcGet(t, "http://127.0.0.1:"+strconv.Itoa(port)+path); status != 404 {
			t.Fatalf("metrics listener serves %s: %d", path, status)
		}
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if _, err := http.Get(metricsURL); err == nil {
		t.Fatal("the metrics listener is still open after shutdown")
	}
}

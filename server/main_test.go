package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
	"github.com/secure-script-executor/executor/pool"
)

// server is one real executor (real nsjail, real Python) started through
// Main on a loopback port, as `make run` would start it.
type server struct {
	t      testing.TB
	url    string
	app    *App
	cancel context.CancelFunc
	code   chan int
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer starts Main with args (plus test defaults) and env, and returns
// once it listens (call waitReady to wait for /readyz).
func startServer(t testing.TB, env map[string]string, args ...string) *server {
	t.Helper()
	s := startServerUnmanaged(t, env, args...)
	t.Cleanup(func() { s.stop() })
	return s
}

// startServerUnmanaged is startServer without stopping at the end of t.
func startServerUnmanaged(t testing.TB, env map[string]string, args ...string) *server {
	t.Helper()
	base := []string{"--host", "127.0.0.1", "--port", "0", "--nsjail-path", testenv.Nsjail(t),
		"--warm-workers", "4", "--max-workers", "8", "--log-level", "debug", "--shutdown-grace", "10s"}
	// Every server gets uids and a cgroup parent no other test or suite on
	// the machine uses, unless the test chose its own.
	if !slices.Contains(args, "--uid-base") {
		base = append(base, "--uid-base", testenv.UIDBaseArg(t))
	}
	if !slices.Contains(args, "--cgroup-parent") {
		// Not CgroupParent: a shared server outlives the test that started
		// it, and removes its (empty) parent itself when it closes.
		base = append(base, "--cgroup-parent", testenv.CgroupParentName("server"))
	}
	// make test runs the server's tests once more with jail isolation
	// (EXECUTOR_TEST_ISOLATION=jail; the default is cell).
	if m := os.Getenv("EXECUTOR_TEST_ISOLATION"); m != "" && !slices.Contains(args, "--isolation") {
		base = append(base, "--isolation", m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{t: t, cancel: cancel, code: make(chan int, 1), logs: &syncBuffer{}}
	started := make(chan *App, 1)
	go func() { s.code <- Main(ctx, append(base, args...), environ(env), s.logs, started) }()
	select {
	case s.app = <-started:
	case code := <-s.code:
		t.Fatalf("Main exited with %d before listening:\n%s", code, s.logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not start:\n%s", s.logs)
	}
	s.url = "http://" + s.app.Addr()
	validateAnswersOf(s.url)
	return s
}

// waitFor waits, for at most 20 s, until cond holds: tests wait on the
// server's state, never for a fixed time.
func (s *server) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s:\n%s", what, s.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitBusy waits until n workers are running a script.
func (s *server) waitBusy(n int32) {
	s.t.Helper()
	s.waitFor(fmt.Sprintf("%d busy workers", n), func() bool { return s.app.pool.Stat().AcquiredWorkers == n })
}

// waitIdle waits until n workers are warm.
func (s *server) waitIdle(n int32) {
	s.t.Helper()
	s.waitFor(fmt.Sprintf("%d idle workers", n), func() bool { return s.app.pool.Stat().IdleWorkers >= n })
}

// waitSandboxDown waits until the pool reports the sandbox unavailable.
func (s *server) waitSandboxDown() {
	s.t.Helper()
	s.waitFor("the sandbox to be reported unavailable", func() bool {
		return errors.Is(s.app.pool.Ready(), pool.ErrSandboxUnavailable)
	})
}

// environ turns a map of variables into the form of os.Environ.
func environ(env map[string]string) []string {
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	return kv
}

func (s *server) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("server never became ready:\n%s", s.logs)
}

// stop shuts the server down as SIGTERM would and returns Main's exit code.
func (s *server) stop() int {
	s.cancel()
	select {
	case code := <-s.code:
		s.code <- code
		forgetAnswersOf(s.url) // its port may be handed to another program next
		return code
	case <-time.After(30 * time.Second):
		s.t.Fatalf("server did not stop")
		return -1
	}
}

type response struct {
	Status     int
	Header     http.Header
	Body       map[string]any
	Raw        string
	RetryAfter string
}

func (s *server) post(path, contentType, body string) response {
	s.t.Helper()
	resp, err := http.Post(s.url+path, contentType, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	return readResponse(s.t, resp)
}

// postRaw posts body to url with the given headers (empty values are left
// out) and returns the status, the headers and the body as text.
func postRaw(t *testing.T, url string, headers map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

// readResponse reads and closes resp, whose body must be JSON.
func readResponse(t testing.TB, resp *http.Response) response {
	t.Helper()
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	if err := json.Unmarshal(raw, &r.Body); err != nil {
		t.Fatalf("response is not JSON (status %d): %.500q", resp.StatusCode, raw)
	}
	return r
}

// execute posts a script (and optional fields) to /execute.
func (s *server) execute(script string, extra ...string) response {
	s.t.Helper()
	b, _ := json.Marshal(script)
	body := `{"script":` + string(b)
	for _, e := range extra {
		body += "," + e
	}
	return s.post("/execute", "application/json", body+"}")
}

func errType(r response) string {
	e, _ := r.Body["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}

func errMessage(r response) string {
	e, _ := r.Body["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

func jsonEq(t *testing.T, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(g, wb) {
		t.Fatalf("got %s, want %s", g, wb)
	}
}

// jailProcesses lists what is left of jails on the host: processes running
// as a uid of the jail range, and nsjail processes started by this test binary.
func jailProcesses(t *testing.T, uidBase, maxWorkers int) []string {
	t.Helper()
	n := uidRangeSize(maxWorkers)
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var uid, ppid int
		var name string
		for _, line := range strings.Split(string(status), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 1 && f[0] == "Uid:":
				fmt.Sscan(f[1], &uid)
			case len(f) > 1 && f[0] == "PPid:":
				fmt.Sscan(f[1], &ppid)
			case len(f) > 1 && f[0] == "Name:":
				name = f[1]
			}
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		ownNsjail := ppid == os.Getpid() && name == "nsjail" && jailOfRange(string(cmdline), uidBase, n)
		if (uid >= uidBase && uid < uidBase+n) || ownNsjail {
			found = append(found, fmt.Sprintf("pid %s %s uid %d", e.Name(), name, uid))
		}
	}
	return found
}

// jailOfRange reports whether an nsjail command line maps the jail to a uid
// of the range (its --user inside:outside:1 argument).
func jailOfRange(cmdline string, uidBase, n int) bool {
	for _, arg := range strings.Split(cmdline, "\x00") {
		var in, out, count int
		if c, _ := fmt.Sscanf(arg, "%d:%d:%d", &in, &out, &count); c == 3 && out >= uidBase && out < uidBase+n {
			return true
		}
	}
	return false
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

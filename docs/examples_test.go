package docs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
	"github.com/secure-script-executor/executor/server"
)

// The documents whose examples are run. Every ```sh block line that starts
// with `curl` and targets localhost:8080 is an example, except probes of
// /readyz, /healthz and /metrics (their answers are the server's state of
// the moment: /readyz is 503 while no worker is idle); the `# ` comment
// lines right after it, when they hold JSON, are the response it shows.
var documents = []string{"../README.md", "API.md", "DEPLOY.md", "LOADTEST.md", "OBSERVABILITY.md", "PROTOCOL.md", "SECURITY.md", "BENCHMARKS.md"}

// exampleAPIKey is the key of the second server, which runs the examples
// that send an Authorization header (the 401 example sends a wrong one).
const exampleAPIKey = "docs-example-key"

type example struct {
	doc, where string // file and line, for messages
	command    string // the shell text as written, continuation lines and here-documents included
	response   string // the JSON shown after it ("" when none)
	files      map[string]string
}

// extractExamples parses one Markdown file.
func extractExamples(t *testing.T, doc string) []example {
	t.Helper()
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	files := map[string]string{}
	var out []example
	fileName := regexp.MustCompile(`^# ([\w.-]+\.(?:py|json))\b`)
	probe := regexp.MustCompile(`localhost:8080/(readyz|healthz|metrics)\b`)
	heredoc := regexp.MustCompile(`<<-?\s*'?"?(\w+)'?"?`)
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(fence, "```") {
			continue
		}
		lang := strings.TrimPrefix(fence, "```")
		start := i + 1
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
		}
		block := lines[start:min(i, len(lines))]
		// A ```python block whose first line is "# name.py: ..." is the file
		// the examples after it use.
		if lang == "python" && len(block) > 0 {
			if m := fileName.FindStringSubmatch(block[0]); m != nil {
				files[m[1]] = strings.Join(block, "\n") + "\n"
			}
			continue
		}
		if lang != "sh" {
			continue
		}
		for j := 0; j < len(block); j++ {
			if !strings.HasPrefix(block[j], "curl ") || !strings.Contains(block[j], "localhost:8080") || probe.MatchString(block[j]) {
				continue
			}
			ex := example{doc: filepath.Base(doc), where: fmt.Sprintf("%s:%d", filepath.Base(doc), start+j+1), files: map[string]string{}}
			for k, v := range files {
				ex.files[k] = v
			}
			cmd := []string{block[j]}
			for strings.HasSuffix(block[j], "\\") && j+1 < len(block) {
				j++
				cmd = append(cmd, block[j])
			}
			if m := heredoc.FindStringSubmatch(strings.Join(cmd, "\n")); m != nil {
				for j+1 < len(block) {
					j++
					cmd = append(cmd, block[j])
					if strings.TrimSpace(block[j]) == m[1] {
						break
					}
				}
			}
			ex.command = strings.Join(cmd, "\n")
			var resp []string
			for j+1 < len(block) && strings.HasPrefix(block[j+1], "#") {
				j++
				resp = append(resp, strings.TrimPrefix(strings.TrimPrefix(block[j], "#"), " "))
			}
			if r := strings.Join(resp, "\n"); json.Valid([]byte(r)) {
				ex.response = r
			}
			out = append(out, ex)
		}
	}
	return out
}

// statusOf is the HTTP status of each error type (docs/API.md's table).
var statusOf = map[string]int{
	"invalid_request": 400, "unauthorized": 401, "not_found": 404, "method_not_allowed": 405,
	"request_timeout": 408, "request_too_large": 413, "unsupported_media_type": 415, "headers_too_large": 431,
	"syntax_error": 422, "missing_main": 422, "runtime_error": 422, "result_not_json": 422,
	"timeout": 422, "memory_limit": 422, "output_limit": 422,
	"overloaded": 429, "sandbox_unavailable": 503, "internal": 500,
}

// wantStatus is the status the shown response implies: its error type's,
// else 200.
func wantStatus(t *testing.T, shown any) int {
	t.Helper()
	m, _ := shown.(map[string]any)
	e, ok := m["error"].(map[string]any)
	if !ok {
		return 200
	}
	typ, _ := e["type"].(string)
	st, ok := statusOf[typ]
	if !ok {
		t.Fatalf("shown response has an unknown error type %q", typ)
	}
	return st
}

// match compares the server's answer with the shown one. In the shown
// response a string "..." stands for any string, a string ending in "..."
// or "…" for any string with that prefix, and duration_ms and the figures of
// usage for any number; everything else must be equal, and no field may be
// missing or extra, except a top-level usage object, which most examples
// leave out (docs/API.md shows it once and describes it).
func match(path string, shown, got any) []string {
	switch s := shown.(type) {
	case string:
		g, ok := got.(string)
		switch {
		case !ok:
		case s == "..." || s == "…":
			return nil
		case strings.HasSuffix(s, "...") && strings.HasPrefix(g, strings.TrimSuffix(s, "...")):
			return nil
		case strings.HasSuffix(s, "…") && strings.HasPrefix(g, strings.TrimSuffix(s, "…")):
			return nil
		case g == s:
			return nil
		}
	case float64:
		if _, ok := got.(float64); ok && (strings.HasSuffix(path, ".duration_ms") || strings.Contains(path, ".usage.")) {
			return nil
		}
		if got == shown {
			return nil
		}
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		var diffs []string
		for k, v := range s {
			gv, ok := g[k]
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s.%s: shown but not in the answer", path, k))
				continue
			}
			diffs = append(diffs, match(path+"."+k, v, gv)...)
		}
		for k := range g {
			if _, ok := s[k]; !ok && !(k == "usage" && path == "response") {
				diffs = append(diffs, fmt.Sprintf("%s.%s: in the answer (%v) but not shown", path, k, g[k]))
			}
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(s) {
			break
		}
		var diffs []string
		for i := range s {
			diffs = append(diffs, match(fmt.Sprintf("%s[%d]", path, i), s[i], g[i])...)
		}
		return diffs
	default:
		if fmt.Sprint(shown) == fmt.Sprint(got) {
			return nil
		}
	}
	sj, _ := json.Marshal(shown)
	gj, _ := json.Marshal(got)
	return []string{fmt.Sprintf("%s: shown %s, the server says %s", path, sj, gj)}
}

type docServer struct {
	url  string
	logs lockedWriter
}

var logMu sync.Mutex

type lockedWriter struct{ b *strings.Builder }

func (w lockedWriter) String() string {
	logMu.Lock()
	defer logMu.Unlock()
	return w.b.String()
}

func (w lockedWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return w.b.Write(p)
}

// startServer runs the real server in-process with the defaults the docs
// describe (limits, run timeouts), a uid range of its own from 1200000-1299999
// and its own cgroup parent, so tests of other packages running at the same
// time cannot collide with it.
func startServer(t *testing.T, name string, uidBase int, env map[string]string) docServer {
	t.Helper()
	args := []string{"--host", "127.0.0.1", "--port", "0", "--nsjail-path", testenv.Nsjail(t),
		"--warm-workers", "2", "--max-workers", "4", "--uid-base", strconv.Itoa(uidBase),
		// No example shows a 429; a machine busy with other tests must not
		// make one appear.
		"--acquire-timeout", "15s",
		"--cgroup-parent", fmt.Sprintf("executor-ops-docs-%d-%s", os.Getpid(), name), "--shutdown-grace", "5s"}
	ctx, cancel := context.WithCancel(context.Background())
	logs := lockedWriter{&strings.Builder{}}
	code := make(chan int, 1)
	started := make(chan *server.App, 1)
	var environ []string // server.Main takes the environment as os.Environ gives it
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	go func() {
		code <- server.Main(ctx, args, environ, logs, started)
	}()
	var app *server.App
	select {
	case app = <-started:
	case c := <-code:
		cancel()
		t.Fatalf("server exited with %d:\n%s", c, logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("server did not start:\n%s", logs)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-code:
		case <-time.After(30 * time.Second):
			t.Errorf("server %s did not stop", name)
		}
	})
	s := docServer{url: "http://" + app.Addr(), logs: logs}
	// Ready: warm workers exist, so the examples measure no cold start.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", s.url+"/readyz").Output()
		if string(out) == "200" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %s not ready:\n%s", name, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run executes the example with bash in a folder holding the files the
// document defined, pointed at srv instead of localhost:8080. curl is told
// to append the status code; nothing else of the command is changed.
func run(t *testing.T, ex example, srv docServer) (int, string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range ex.files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := strings.ReplaceAll(ex.command, "localhost:8080", strings.TrimPrefix(srv.url, "http://"))
	cmd = "curl --write-out '\\n%{http_code}' " + strings.TrimPrefix(cmd, "curl ")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", cmd)
	c.Dir = dir
	out, err := c.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s: the example fails: %v\n%s\n%s", ex.where, err, ex.command, stderr)
	}
	body, code, ok := cutLast(string(out), "\n")
	status, err := strconv.Atoi(code)
	if !ok || err != nil {
		t.Fatalf("%s: no status in curl's output %q", ex.where, out)
	}
	return status, body
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", s, false
	}
	return s[:i], s[i+len(sep):], true
}

func TestEveryCurlExampleInTheDocsAnswersWhatTheDocShows(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed (scripts/setup.sh test installs it)")
	}
	var all []example
	for _, d := range documents {
		all = append(all, extractExamples(t, d)...)
	}
	// A floor, so a parser that silently stops finding examples fails.
	if len(all) < 10 {
		t.Fatalf("found only %d curl examples", len(all))
	}
	// Random uid bases in 1200000-1299999, a fresh pair of ranges per run.
	base := 1200000 + 2000*rand.IntN(50)
	open := startServer(t, "open", base, nil)
	keyed := startServer(t, "keyed", base+1000, map[string]string{"EXECUTOR_API_KEYS": exampleAPIKey})

	for _, ex := range all {
		t.Run(ex.where, func(t *testing.T) {
			srv := open
			if strings.Contains(ex.command, "Authorization:") {
				srv = keyed
			}
			status, body := run(t, ex, srv)
			if ex.response == "" {
				if status != 200 {
					t.Errorf("%s: answered %d %s (the doc shows no response, so 200 is expected)\n%s", ex.where, status, body, ex.command)
				}
				return
			}
			var shown, got any
			if err := json.Unmarshal([]byte(ex.response), &shown); err != nil {
				t.Fatalf("%s: shown response: %v", ex.where, err)
			}
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("%s: answer %d is not JSON: %v\n%s", ex.where, status, err, body)
			}
			if want := wantStatus(t, shown); status != want {
				t.Errorf("%s: status %d, the shown response implies %d\n%s", ex.where, status, want, body)
			}
			for _, d := range match("response", shown, got) {
				t.Errorf("%s: %s", ex.where, d)
			}
		})
	}
}

// The extractor itself: it must see continuation lines, here-documents and
// multi-line responses, or the test above would run truncated commands.
func TestExtractorReadsContinuationsHeredocsAndMultiLineResponses(t *testing.T) {
	md := "```python\n# f.py: a file\ndef main(): pass\n```\n\n```sh\n" +
		"curl -s localhost:8080/execute -H 'A: b' \\\n  -d '{}'\n# {\"a\":\n#  1}\n" +
		"curl -s localhost:8080/execute -d @- <<'JSON'\n{\"x\": 1}\nJSON\n" +
		"other command\n```\n"
	p := filepath.Join(t.TempDir(), "x.md")
	if err := os.WriteFile(p, []byte(md), 0o600); err != nil {
		t.Fatal(err)
	}
	exs := extractExamples(t, p)
	if len(exs) != 2 {
		t.Fatalf("%d examples: %+v", len(exs), exs)
	}
	if exs[0].command != "curl -s localhost:8080/execute -H 'A: b' \\\n  -d '{}'" || exs[0].response != "{\"a\":\n 1}" {
		t.Errorf("first: %q / %q", exs[0].command, exs[0].response)
	}
	if exs[1].command != "curl -s localhost:8080/execute -d @- <<'JSON'\n{\"x\": 1}\nJSON" || exs[1].response != "" {
		t.Errorf("second: %q / %q", exs[1].command, exs[1].response)
	}
	if exs[1].files["f.py"] != "# f.py: a file\ndef main(): pass\n" {
		t.Errorf("files: %v", exs[1].files)
	}
}

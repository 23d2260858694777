package server

// Observability end to end: what an operator sees (the /metrics scrape,
// Prometheus's own view of it, the per-request log line) is checked against
// a real executor running real jails, not against the metrics package alone.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
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
	"github.com/secure-script-executor/executor/metrics"
)

// toolPath finds an external tool. Developers without it get a skip; in CI
// (CI set) a missing tool fails, so the check cannot silently disappear.
func toolPath(t *testing.T, name, usual string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(usual); err == nil {
		return usual
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s not found (Debian: apt-get install prometheus, or run scripts/setup.sh); required when CI is set", name)
	}
	t.Fatalf("%s not found but CI=%q: install the Debian package prometheus (scripts/setup.sh does)", name, os.Getenv("CI"))
	return ""
}

// scrape fetches the text exposition format (no Accept header: promhttp then
// answers text/plain 0.0.4, what promtool check metrics reads).
func scrape(t *testing.T, s *server) string {
	t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(body)
}

// sampleValue returns the value of the series written exactly as series (for
// example `executor_executions_total{outcome="ok"}`) in a text scrape.
func sampleValue(scraped, series string) (float64, bool) {
	for _, line := range strings.Split(scraped, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// waitScrape scrapes until cond holds for the series, or fails after 10 s.
func waitScrape(t *testing.T, s *server, series string, cond func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, ok := sampleValue(scrape(t, s), series)
		if ok && cond(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %v) after 10 s", series, v, ok)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Scripts of every outcome the tests drive.
const (
	scriptOK      = "def main():\n    print('hi')\n    return 1\n"
	scriptSyntax  = "def main(:\n"
	scriptRuntime = "def main():\n    return 1 / 0\n"
	scriptLoop    = "def main():\n    while True:\n        pass\n"
	scriptSleep   = "import time\ndef main():\n    time.sleep(1)\n    return 'slept'\n"
)

// announceTooLarge sends the headers of a POST /execute whose Content-Length
// is over the server's body limit, and reads the answer. The body is never
// sent: the server refuses on the header alone, and so closes a connection
// with nothing unread on it. (Sending the whole body races the server's close
// of the connection, which can reset it before the client reads the answer.)
func announceTooLarge(t *testing.T, s *server, size int) response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST /execute HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		strings.TrimPrefix(s.url, "http://"), size)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, resp)
}

// documentedMetrics returns the executor_ metric names of the tables in
// docs/OBSERVABILITY.md (the first column of every table row).
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../docs/OBSERVABILITY.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(executor_[a-z_]+)` \\|")
	var names []string
	for _, m := range row.FindAllStringSubmatch(string(raw), -1) {
		names = append(names, m[1])
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metric rows in docs/OBSERVABILITY.md; is the table layout what this test expects?", len(names))
	}
	return names
}

// A real scrape, after requests of every kind an operator will see, must be
// clean for promtool's linter, count each outcome exactly once per request
// (including requests refused before the runner) and contain every metric
// the docs promise.
func TestARealScrapeIsPromtoolCleanCountsEveryOutcomeAndHasEveryDocumentedMetric(t *testing.T) {
	promtool := toolPath(t, "promtool", "/usr/bin/promtool")
	s := startServer(t, nil, "--uid-base", testenv.UIDBaseArg(t), "--cgroup-parent", testenv.CgroupParent(t, "obs-promtool"),
		"--warm-workers", "2", "--max-workers", "2", "--acquire-timeout", "300ms", "--max-body", "64KiB")
	s.waitReady()

	want := map[string]float64{}
	expect := func(outcome string, r response) {
		t.Helper()
		got := errType(r)
		if r.Status == 200 {
			got = "ok"
		}
		if got != outcome {
			t.Fatalf("want outcome %s, got status %d: %.300s", outcome, r.Status, r.Raw)
		}
		want[outcome]++
	}
	// Each run uses up a worker and the acquire timeout is short (for the
	// overload below): wait for a warm pool before each run, so that a spawn
	// slowed by a loaded machine cannot turn a run into a 429.
	run := func(r func() response) response { s.waitIdle(2); return r() }
	expect("ok", run(func() response { return s.execute(scriptOK) }))
	expect("ok", run(func() response {
		return s.post("/execute/batch", "application/json", `{"script":"def main(x):\n    return x","inputs":[1,2]}`)
	}))
	expect("syntax_error", run(func() response { return s.execute(scriptSyntax) }))
	expect("missing_main", run(func() response { return s.execute("x = 1\n") }))
	expect("runtime_error", run(func() response { return s.execute(scriptRuntime) }))
	expect("timeout", run(func() response { return s.execute(scriptLoop, `"timeout_ms":200`) }))
	expect("invalid_request", s.post("/execute", "application/json", `{"script": 42}`))
	expect("invalid_request", s.post("/execute/batch", "application/json", `{"script": "x"}`))
	expect("unsupported_media_type", s.post("/execute", "text/plain", scriptOK))
	expect("request_too_large", announceTooLarge(t, s, 100<<10))

	// Overloaded: both workers busy, the third request waits 300 ms for one.
	s.waitIdle(2)
	var wg sync.WaitGroup
	busy := make([]response, 2)
	for i := range busy {
		wg.Add(1)
		go func() { defer wg.Done(); busy[i] = s.execute(scriptSleep) }()
	}
	waitScrape(t, s, "executor_pool_acquired_workers", func(v float64) bool { return v == 2 })
	overloadStart := time.Now()
	expect("overloaded", s.execute(scriptOK))
	overloadTook := time.Since(overloadStart)
	wg.Wait()
	for _, r := range busy {
		expect("ok", r)
	}
	// Not execution requests: HTTP metrics only.
	if resp, err := http.Get(s.url + "/no/such/route"); err == nil {
		resp.Body.Close()
	}
	if resp, err := http.Get(s.url + "/execute"); err == nil {
		resp.Body.Close()
	}

	// The overloaded request's log line shows where its time went: waiting
	// for a worker (the 300 ms acquire timeout), not running.
	var overloadLines []map[string]any
	for _, line := range jsonLines(s.logs.String()) {
		if line["msg"] == "http request" && line["outcome"] == "overloaded" {
			overloadLines = append(overloadLines, line)
		}
	}
	if len(overloadLines) != 1 {
		t.Errorf("%d log lines with outcome overloaded, want 1", len(overloadLines))
	} else {
		wait, _ := overloadLines[0]["queue_wait_ms"].(float64)
		if wait < 300 || wait > float64(overloadTook.Microseconds())/1000 || overloadLines[0]["exec_duration_ms"] != 0.0 {
			t.Errorf("overloaded after %s: queue_wait_ms %v, exec_duration_ms %v; want 300 ms or more, and 0",
				overloadTook, overloadLines[0]["queue_wait_ms"], overloadLines[0]["exec_duration_ms"])
		}
	}

	body := scrape(t, s)

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// Exact counts: every outcome is present, at 0 unless driven above.
	for _, outcome := range metrics.Outcomes {
		series := fmt.Sprintf("executor_executions_total{outcome=%q}", outcome)
		got, ok := sampleValue(body, series)
		if !ok || got != want[outcome] {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want[outcome])
		}
	}
	// Refused requests are counted but have no run time; runs that ran do.
	for series, wantV := range map[string]float64{
		`executor_execution_duration_seconds_count{outcome="invalid_request"}`:    0,
		`executor_execution_duration_seconds_count{outcome="overloaded"}`:         0,
		`executor_execution_duration_seconds_count{outcome="ok"}`:                 want["ok"],
		`executor_execution_duration_seconds_count{outcome="timeout"}`:            1,
		`executor_overload_rejections_total`:                                      1,
		`executor_http_requests_total{code="404",method="GET",route="unmatched"}`: 1,
		`executor_http_requests_total{code="405",method="GET",route="/execute"}`:  1,
		`executor_http_requests_total{code="413",method="POST",route="/execute"}`: 1,
		`executor_executions_in_flight`:                                           0,
	} {
		if got, ok := sampleValue(body, series); !ok || got != wantV {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, wantV)
		}
	}

	// Every metric the docs list is a family of the real scrape.
	for _, name := range documentedMetrics(t) {
		if !regexp.MustCompile(`(?m)^# TYPE ` + name + ` `).MatchString(body) {
			t.Errorf("docs/OBSERVABILITY.md lists %s, but the real scrape has no such family", name)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", body)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// promResult is one element of an instant vector from /api/v1/query.
type promResult struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // [unix time, "value"]
}

func (r promResult) value() float64 {
	s, _ := r.Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// promQuery runs an instant query against a Prometheus server.
func promQuery(base, query string) ([]promResult, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promResult `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if out.Status != "success" || out.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: status %s, type %s: %s", query, out.Status, out.Data.ResultType, out.Error)
	}
	return out.Data.Result, nil
}

// startPrometheus runs a real Prometheus scraping target every second and
// returns its base URL once it is ready. It is killed when t ends.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin := toolPath(t, "prometheus", "/usr/bin/prometheus")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: executor
    metrics_path: /metrics
    static_configs:
      - targets: [%q]
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	forgetAnswersOf("http://" + addr) // Prometheus, not the API, answers there now
	logs := &syncBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("prometheus (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", logs)
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, logs)
		default:
		}
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 15 s:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A real Prometheus, scraping a real executor, sees the series the
// dashboard and alerts are built on, with the values the traffic produced.
func TestARealPrometheusScrapesTheSeriesTheDashboardAndAlertsQuery(t *testing.T) {
	s := startServer(t, nil, "--uid-base", testenv.UIDBaseArg(t), "--cgroup-parent", testenv.CgroupParent(t, "obs-prometheus"),
		"--warm-workers", "4", "--max-workers", "8")
	s.waitReady()
	prom := startPrometheus(t, strings.TrimPrefix(s.url, "http://"))
	// Prometheus applies discovered targets on a 5 s tick, so its first
	// scrape comes a few seconds after it is ready; traffic sent before that
	// would reach it as one step with no rate.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if rs, err := promQuery(prom, `up{job="executor"} == 1`); err == nil && len(rs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus did not scrape the executor within 15 s")
		}
	}

	// Several seconds of mixed traffic, so that several scrapes see the
	// counters rise and rate() has samples to work on.
	sent := map[string]float64{}
	trafficEnd := time.Now().Add(4 * time.Second)
	for i := 0; time.Now().Before(trafficEnd); i++ {
		var r response
		switch i % 5 {
		case 0, 1:
			r = s.execute(scriptOK)
		case 2:
			r = s.execute(scriptSyntax)
		case 3:
			r = s.execute(scriptRuntime)
		case 4:
			r = s.post("/execute", "application/json", `{"script": 42}`)
		}
		outcome := errType(r)
		if r.Status == 200 {
			outcome = "ok"
		}
		sent[outcome]++
		time.Sleep(50 * time.Millisecond)
	}
	if r := s.execute(scriptLoop, `"timeout_ms":200`); errType(r) != "timeout" {
		t.Fatalf("want timeout: %s", r.Raw)
	}
	sent["timeout"]++
	for _, o := range []string{"ok", "syntax_error", "runtime_error", "invalid_request"} {
		if sent[o] == 0 {
			t.Fatalf("no %s request was sent in 4 s: %v", o, sent)
		}
	}

	// Prometheus needs a scrape or two to catch up; the counts it holds
	// must then equal what was sent, exactly.
	type check struct {
		query string
		ok    func([]promResult) string // "" when satisfied, else why not
	}
	checks := []check{
		{`executor_executions_total{job="executor"}`, func(rs []promResult) string {
			got := map[string]float64{}
			for _, r := range rs {
				got[r.Metric["outcome"]] = r.value()
			}
			for o, n := range sent {
				if got[o] != n {
					return fmt.Sprintf("outcome %s = %v, want %v (all: %v)", o, got[o], n, got)
				}
			}
			return ""
		}},
		{`executor_pool_idle_workers{job="executor"}`, func(rs []promResult) string {
			if len(rs) != 1 || rs[0].value() < 0 || rs[0].value() > 8 {
				return fmt.Sprintf("want one series in [0, 8], got %v", rs)
			}
			return ""
		}},
		{`executor_pool_workers_spawned_total{job="executor"}`, func(rs []promResult) string {
			// Every request used up one single-use worker, each replaced.
			if len(rs) != 1 || rs[0].value() < 4 {
				return fmt.Sprintf("want one series >= 4, got %v", rs)
			}
			return ""
		}},
		{`histogram_quantile(0.5, sum by (le) (rate(executor_http_request_duration_seconds_bucket{route="/execute"}[30s])))`, func(rs []promResult) string {
			if len(rs) != 1 {
				return fmt.Sprintf("want one series, got %v", rs)
			}
			if v := rs[0].value(); math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 || v > 30 {
				return fmt.Sprintf("p50 = %v, want a finite positive number of seconds", v)
			}
			return ""
		}},
		{`up{job="executor"}`, func(rs []promResult) string {
			if len(rs) != 1 || rs[0].value() != 1 {
				return fmt.Sprintf("want up 1, got %v", rs)
			}
			return ""
		}},
		{`scrape_samples_post_metric_relabeling{job="executor"}`, func(rs []promResult) string {
			if len(rs) != 1 || rs[0].value() < 100 {
				return fmt.Sprintf("want one scrape of 100+ samples, got %v", rs)
			}
			return ""
		}},
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, c := range checks {
		for {
			rs, err := promQuery(prom, c.query)
			why := ""
			if err != nil {
				why = err.Error()
			} else {
				why = c.ok(rs)
			}
			if why == "" {
				break
			}
			if time.Now().After(deadline) {
				for _, q := range []string{
					`executor_http_request_duration_seconds_count{route="/execute"}`,
					`rate(executor_http_request_duration_seconds_count{route="/execute"}[30s])`,
					`count_over_time(executor_http_request_duration_seconds_count{route="/execute"}[30s])`,
				} {
					rs, err := promQuery(prom, q)
					t.Logf("%s = %v %v", q, rs, err)
				}
				t.Fatalf("%s: %s", c.query, why)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// postWithID posts body with an X-Request-Id (none if id is empty).
func postWithID(t *testing.T, s *server, ctype, body, id string) (int, string, string) {
	t.Helper()
	status, h, raw := postRaw(t, s.url+"/execute", map[string]string{"Content-Type": ctype, "X-Request-Id": id}, body)
	return status, h.Get("X-Request-Id"), raw
}

// jsonLines returns the lines of logs that are JSON objects.
func jsonLines(logs string) []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil {
			lines = append(lines, line)
		}
	}
	return lines
}

// requestLines returns the "http request" log lines carrying request_id id.
func requestLines(logs string, id string) []map[string]any {
	var found []map[string]any
	for _, line := range jsonLines(logs) {
		if line["msg"] == "http request" && line["request_id"] == id {
			found = append(found, line)
		}
	}
	return found
}

// Each request produces exactly one JSON log line, found by the id the client
// got back, with the outcome, the total, queue-wait and in-jail durations and
// the sizes; the script, its input and its output never reach the log.
func TestEachRequestLogsOneJSONLineWithItsIDOutcomeDurationsAndSizesButNoScriptOrOutput(t *testing.T) {
	s := sharedServer(t)
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	secret := func(what string) string { return "SECRET-" + what + "-" + nonce }

	okScript := "# " + secret("SOURCE") + "\nimport sys\ndef main(x):\n    print('" + secret("STDOUT") + "')\n    sys.stderr.write('" + secret("STDERR") + "')\n    return '" + secret("RESULT") + "'\n"
	failScript := "# " + secret("SOURCE2") + "\ndef main():\n    raise ValueError('" + secret("EXCEPTION") + "')\n"
	body := func(script string, extra string) string {
		b, _ := json.Marshal(script)
		return `{"script":` + string(b) + extra + `}`
	}
	cases := []struct {
		name, id, ctype, body string
		status                int
		outcome               string
		ran                   bool
		script                string
	}{
		{"ok", "obs-ok-" + nonce, "application/json", body(okScript, `,"input":"`+secret("INPUT")+`"`), 200, "ok", true, okScript},
		{"runtime error", "obs-rt-" + nonce, "application/json", body(failScript, ""), 422, "runtime_error", true, failScript},
		{"timeout", "obs-to-" + nonce, "application/json", body(scriptLoop+"# "+secret("SOURCE3"), `,"timeout_ms":200`), 422, "timeout", true, scriptLoop + "# " + secret("SOURCE3")},
		{"invalid request", "obs-inv-" + nonce, "application/json", body(secret("SOURCE4"), `,"timeout_ms":"soon"`), 400, "invalid_request", false, ""},
		{"generated id", "", "application/json", body(scriptOK, ""), 200, "ok", true, scriptOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, gotID, raw := postWithID(t, s, c.ctype, c.body, c.id)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, raw)
			}
			if c.id != "" && gotID != c.id {
				t.Fatalf("X-Request-Id %q, want the client's %q echoed", gotID, c.id)
			}
			if gotID == "" {
				t.Fatal("no X-Request-Id in the answer")
			}
			// The line is written before the answer is sent; a short wait
			// only guards against a slow writer.
			var lines []map[string]any
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if lines = requestLines(s.logs.String(), gotID); len(lines) > 0 || time.Now().After(deadline) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
			lines = requestLines(s.logs.String(), gotID)
			if len(lines) != 1 {
				t.Fatalf("%d log lines with request_id %s, want 1", len(lines), gotID)
			}
			line := lines[0]
			var answer struct{ Stdout, Stderr string }
			json.Unmarshal([]byte(raw), &answer)
			for k, want := range map[string]any{
				"route": "/execute", "method": "POST", "status": float64(c.status), "outcome": c.outcome,
				"request_bytes": float64(len(c.body)), "response_bytes": float64(len(raw)),
			} {
				if line[k] != want {
					t.Errorf("%s = %v, want %v", k, line[k], want)
				}
			}
			total, _ := line["duration_ms"].(float64)
			if total <= 0 {
				t.Errorf("duration_ms = %v, want > 0", line["duration_ms"])
			}
			if !c.ran {
				for _, k := range []string{"exec_duration_ms", "queue_wait_ms", "script_bytes"} {
					if _, has := line[k]; has {
						t.Errorf("a request refused before the runner logs %s", k)
					}
				}
				return
			}
			execMS, _ := line["exec_duration_ms"].(float64)
			wait, hasWait := line["queue_wait_ms"].(float64)
			if execMS <= 0 || !hasWait || wait < 0 || execMS+wait > total+0.01 {
				t.Errorf("exec_duration_ms %v + queue_wait_ms %v must be positive parts of duration_ms %v", line["exec_duration_ms"], line["queue_wait_ms"], total)
			}
			if c.outcome == "timeout" && (execMS < 200 || execMS > 2000) {
				t.Errorf("exec_duration_ms = %v for a 200 ms timeout", execMS)
			}
			for k, want := range map[string]float64{
				"script_bytes": float64(len(c.script)),
				"stdout_bytes": float64(len(answer.Stdout)),
				"stderr_bytes": float64(len(answer.Stderr)),
			} {
				if line[k] != want {
					t.Errorf("%s = %v, want %v", k, line[k], want)
				}
			}
		})
	}
	all := s.logs.String()
	for _, what := range []string{"SOURCE", "SOURCE2", "SOURCE3", "SOURCE4", "STDOUT", "STDERR", "RESULT", "INPUT", "EXCEPTION"} {
		if strings.Contains(all, secret(what)) {
			t.Errorf("the server log holds the script's %s", what)
		}
	}
}

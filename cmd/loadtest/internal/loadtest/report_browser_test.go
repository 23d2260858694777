package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// These tests open the -html report in a real headless Chromium (Debian's
// `chromium`, installed by `scripts/setup.sh test`) with every host name
// unresolvable, and read back the DOM the page's script built: the page must
// load without errors or network, and draw every series of the run.
//
// LOADTEST_KEEP_REPORTS=DIR copies the generated pages there, to look at.

func chromiumPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("chromium not on PATH (Debian: apt-get install chromium, or scripts/setup.sh test); required when CI is set")
		}
		t.Fatalf("chromium not on PATH but CI=%q: run scripts/setup.sh test", os.Getenv("CI"))
	}
	return p
}

// chromiumArgs are the flags every run uses: headless, no sandbox (tests run
// as root), a private profile (other test runs may use Chromium at the same
// time), and no name resolution, so a page that fetched anything (a CDN
// script, a font) would log a load error.
func chromiumArgs(t *testing.T) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(),
		"--host-resolver-rules=MAP * ~NOTFOUND",
		"--enable-logging=stderr", "--v=0",
		"--virtual-time-budget=5000",
	}
}

// renderedDOM loads path and returns the DOM after the page's scripts ran,
// and Chromium's log.
func renderedDOM(t *testing.T, path string) (*html.Node, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath(t), append(chromiumArgs(t), "--dump-dom", "file://"+path)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v\n%s", err, stderr.String())
	}
	doc, err := html.Parse(strings.NewReader(string(out)))
	if err != nil {
		t.Fatalf("dumped DOM does not parse: %v", err)
	}
	return doc, stderr.String()
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && match(c) {
			out = append(out, c)
		}
	}
	return out
}

func byID(t *testing.T, doc *html.Node, id string) *html.Node {
	t.Helper()
	ns := findAll(doc, func(n *html.Node) bool { v, _ := attr(n, "id"); return v == id })
	if len(ns) != 1 {
		t.Fatalf("page has %d elements with id %q, want 1", len(ns), id)
	}
	return ns[0]
}

// seriesIn maps data-series to the element carrying it inside the chart.
func seriesIn(t *testing.T, doc *html.Node, chartID string) map[string]*html.Node {
	t.Helper()
	m := map[string]*html.Node{}
	for _, n := range findAll(byID(t, doc, chartID), func(n *html.Node) bool { _, ok := attr(n, "data-series"); return ok }) {
		k, _ := attr(n, "data-series")
		m[k] = n
	}
	return m
}

func intAttr(t *testing.T, n *html.Node, key string) float64 {
	t.Helper()
	v, _ := attr(n, key)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("<%s %s=%q>: %v", n.Data, key, v, err)
	}
	return f
}

func text(n *html.Node) string {
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// consoleProblems returns the lines of Chromium's log that come from the
// page's console (Chromium logs console.error, console.log and uncaught
// exceptions alike as INFO:CONSOLE; the report logs nothing) or report a
// failed load.
func consoleProblems(log string) []string {
	var bad []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, ":CONSOLE") || strings.Contains(l, "Uncaught") || strings.Contains(l, "ERR_") {
			bad = append(bad, l)
		}
	}
	return bad
}

// reportRun runs loadtest against a fake API configured by opts and returns
// the summary and the report's path.
func reportRun(t *testing.T, name string, opts func(*fakeAPI), args ...string) (*Summary, string) {
	t.Helper()
	_, srv := newFakeAPI(t, opts)
	path := filepath.Join(t.TempDir(), name+".html")
	s := runJSON(t, append([]string{"-url", srv.URL + "/execute", "-html", path}, args...)...)
	if dir := os.Getenv("LOADTEST_KEEP_REPORTS"); dir != "" {
		if b, err := os.ReadFile(path); err == nil {
			_ = os.WriteFile(filepath.Join(dir, name+".html"), b, 0o644)
		}
	}
	return s, path
}

// checkPage asserts what any rendered report must show: no errors, the three
// percentile lines, a band per outcome the run had, histogram bars for each,
// and the summary's counts.
func checkPage(t *testing.T, doc *html.Node, log string, s *Summary, outcomes []string) {
	t.Helper()
	body := findAll(doc, func(n *html.Node) bool { return n.Data == "body" })[0]
	if v, _ := attr(body, "data-rendered"); v != "ok" {
		t.Errorf("the page's script did not finish drawing (data-rendered=%q)", v)
	}
	if v, ok := attr(body, "data-errors"); ok {
		t.Errorf("script errors on the page: %s", v)
	}
	if bad := consoleProblems(log); len(bad) > 0 {
		t.Errorf("chromium logged problems:\n%s", strings.Join(bad, "\n"))
	}

	lat := seriesIn(t, doc, "lat-chart")
	for _, q := range []string{"p50", "p90", "p99"} {
		g, ok := lat[q]
		if !ok {
			t.Errorf("latency chart has no %s line", q)
			continue
		}
		paths := findAll(g, func(n *html.Node) bool { return n.Data == "path" })
		d := ""
		if len(paths) == 1 {
			d, _ = attr(paths[0], "d")
		}
		if pts := intAttr(t, g, "data-points"); pts < 2 || strings.Count(d, "L") < 1 {
			t.Errorf("%s line has %v points, path %q: nothing to see", q, pts, d)
		}
	}

	tput, hist := seriesIn(t, doc, "tput-chart"), seriesIn(t, doc, "hist-chart")
	for _, k := range outcomes {
		if p, ok := tput[k]; !ok {
			t.Errorf("throughput chart has no %s band (has %v)", k, keys(tput))
		} else if intAttr(t, p, "data-bins") < 1 || intAttr(t, p, "data-max-px") <= 0 {
			t.Errorf("%s band is empty: %v", k, p.Attr)
		}
		if g, ok := hist[k]; !ok || intAttr(t, g, "data-bars") < 1 {
			t.Errorf("histogram has no %s bars", k)
		}
	}
	if len(tput) != len(outcomes) {
		t.Errorf("throughput bands %v, want exactly %v", keys(tput), outcomes)
	}

	statuses := text(byID(t, doc, "statuses"))
	for code, n := range s.StatusCodes {
		if want := fmt.Sprint(n); !strings.Contains(statuses, code) || !strings.Contains(statuses, want) {
			t.Errorf("status table %q lacks %s: %s", statuses, code, want)
		}
	}
	for typ := range s.ErrorTypes {
		if !strings.Contains(text(byID(t, doc, "error-types")), typ) {
			t.Errorf("error type table lacks %s", typ)
		}
	}
	errs := s.Requests - s.Successes
	tile := findAll(doc, func(n *html.Node) bool { v, _ := attr(n, "data-tile"); return v == "errors" })
	if want := fmt.Sprintf("%.1f %%", 100*float64(errs)/float64(s.Requests)); len(tile) != 1 || !strings.Contains(text(tile[0]), want) {
		t.Errorf("errors tile does not say %s", want)
	}
	latency := text(byID(t, doc, "latency"))
	if want := fmtMs(s.Latency.P99); !strings.Contains(latency, want) {
		t.Errorf("latency table %q lacks the summary's p99 %s", latency, want)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// hoverScript moves the mouse to the middle of the throughput chart and
// records the tooltip's text on <body data-tip>.
const hoverScript = `<script>
(function () {
  const box = document.getElementById("tput-chart"), hit = box.querySelector('rect[fill="transparent"]');
  const r = hit.getBoundingClientRect();
  hit.dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: r.left + r.width / 2, clientY: r.top + r.height / 2 }));
  document.body.setAttribute("data-tip", box.querySelector(".tip").textContent);
})();
</script>
</body>`

func TestHTMLReportOfANormalRunDrawsEverySeriesInChromium(t *testing.T) {
	chromiumPath(t)
	// The fake API's default plan: mostly 200, some 422, 429 and 502; and
	// every 23rd connection closed without an answer.
	s, path := reportRun(t, "normal", func(f *fakeAPI) {
		f.plan = func(n int) (int, string) {
			if n%23 == 0 {
				return -1, ""
			}
			return plan(n)
		}
		f.delay = func(n int) time.Duration { return time.Duration(n%7) * time.Millisecond }
	}, "-rate", "200", "-warmup", "300ms", "-duration", "1500ms")
	if s.TransportErrors == 0 {
		t.Fatalf("no transport errors in the run: %+v", s)
	}
	doc, log := renderedDOM(t, path)
	checkPage(t, doc, log, s, []string{"2xx", "429", "4xx", "5xx", "transport"})
	if !strings.Contains(text(byID(t, doc, "transport")), "EOF") {
		t.Errorf("transport error examples: %q", text(byID(t, doc, "transport")))
	}
	if len(findAll(byID(t, doc, "tput-chart"), func(n *html.Node) bool { v, _ := attr(n, "class"); return v == "warmup" })) != 1 {
		t.Error("the warmup is not shaded in the throughput chart")
	}

	// Hovering shows the bin's time and each outcome's rate.
	page, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hovered := filepath.Join(t.TempDir(), "hovered.html")
	if err := os.WriteFile(hovered, []byte(strings.Replace(string(page), "</body>", hoverScript, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	doc, log = renderedDOM(t, hovered)
	body := findAll(doc, func(n *html.Node) bool { return n.Data == "body" })[0]
	tip, _ := attr(body, "data-tip")
	for _, want := range []string{"s –", "2xx OK", "429 overloaded", "other 4xx", "5xx", "transport error", "/s"} {
		if !strings.Contains(tip, want) {
			t.Errorf("hover tooltip %q lacks %q", tip, want)
		}
	}
	if v, ok := attr(body, "data-errors"); ok || len(consoleProblems(log)) > 0 {
		t.Errorf("hovering: %s %v", v, consoleProblems(log))
	}
}

// An overloaded server answers a large share with 429: that share must take
// its part of the throughput chart's height, not hide behind the OKs.
func TestHTMLReportOfAnOverloadRunShowsThe429sPlainly(t *testing.T) {
	chromiumPath(t)
	s, path := reportRun(t, "overload", func(f *fakeAPI) {
		f.plan = func(n int) (int, string) {
			if n%50 < 21 { // 42 %
				return http.StatusTooManyRequests, "overloaded"
			}
			return http.StatusOK, ""
		}
		f.delay = func(n int) time.Duration {
			if n%50 < 21 {
				return 20 * time.Millisecond
			}
			return time.Duration(n%5) * time.Millisecond
		}
	}, "-rate", "200", "-duration", "1500ms")
	if s.StatusCodes["429"] == 0 || s.Successes == 0 {
		t.Fatalf("run had no 429s or no successes: %v", s.StatusCodes)
	}
	doc, log := renderedDOM(t, path)
	checkPage(t, doc, log, s, []string{"2xx", "429"})

	band := seriesIn(t, doc, "tput-chart")["429"]
	if band == nil {
		t.Fatal("no 429 band")
	}
	share := float64(s.StatusCodes["429"]) / float64(s.Requests)
	thick, plot := intAttr(t, band, "data-max-px"), intAttr(t, band, "data-plot-px")
	if thick < plot*share/2 {
		t.Errorf("%.0f %% of responses were 429 but their band is at most %.0f px of %.0f px", 100*share, thick, plot)
	}
	if v, _ := attr(band, "fill"); v == "" || v == attrOf(seriesIn(t, doc, "tput-chart")["2xx"], "fill") {
		t.Errorf("429 band colour %q is the OK colour", v)
	}
	if !strings.Contains(text(byID(t, doc, "error-types")), "overloaded") {
		t.Error("error types table lacks overloaded")
	}
}

func attrOf(n *html.Node, key string) string {
	if n == nil {
		return ""
	}
	v, _ := attr(n, key)
	return v
}

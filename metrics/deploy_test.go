package metrics_test

// These tests keep deploy/ and docs/ honest: the dashboard, the alert rules
// and the metric table may only name metrics that metrics.New registers, so
// renaming a metric breaks `go test`, not a graph or a page at 3 a.m.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v2"

	"github.com/secure-script-executor/executor/pool"
)

var (
	repoRoot      = ".."
	dashboardPath = filepath.Join(repoRoot, "deploy", "grafana", "executor-dashboard.json")
	alertsPath    = filepath.Join(repoRoot, "deploy", "prometheus", "alerts.yml")
	docsPath      = filepath.Join(repoRoot, "docs", "OBSERVABILITY.md")
)

// registeredNames returns every series name a query may use against what New
// registers (histograms and summaries contribute their _bucket/_sum/_count
// series too), and the families themselves with their types.
func registeredNames(t *testing.T) (queryable map[string]bool, families map[string]dto.MetricType) {
	t.Helper()
	reg, m := newRegistry(t, fixedStat(pool.Stat{}))
	// Vectors only appear in Gather once they have a child.
	exerciseAll(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	queryable = map[string]bool{}
	families = map[string]dto.MetricType{}
	for _, mf := range mfs {
		name := mf.GetName()
		families[name] = mf.GetType()
		queryable[name] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			queryable[name+"_bucket"] = true
			fallthrough
		case dto.MetricType_SUMMARY:
			queryable[name+"_sum"] = true
			queryable[name+"_count"] = true
		}
	}
	return queryable, families
}

var (
	promqlString    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promqlMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promqlRange     = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	grafanaVariable = regexp.MustCompile(`\$\{?\w+\}?`)
	promqlToken     = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*`)
	labelValuesCall = regexp.MustCompile(`label_values\(\s*([^,)]*)(?:,[^)]*)?\)`)
)

var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "inf": true, "nan": true, "atan2": true,
}

// metricNamesIn returns the metric names a PromQL expression (or a Grafana
// label_values() query) selects. It is a tokenizer, not a parser: strings,
// label matchers, ranges, grouping label lists and Grafana variables are cut
// out, and what remains that is neither a number, a keyword nor followed by
// "(" (a function or aggregation) is a metric name. promtool parses the same
// expressions for real in promtool_test.go.
func metricNamesIn(expr string) []string {
	expr = labelValuesCall.ReplaceAllString(expr, "$1")
	expr = promqlString.ReplaceAllString(expr, `""`)
	expr = grafanaVariable.ReplaceAllString(expr, "")
	expr = promqlMatchers.ReplaceAllString(expr, "")
	expr = promqlRange.ReplaceAllString(expr, "")
	expr = promqlGrouping.ReplaceAllString(expr, "")
	var names []string
	for _, loc := range promqlToken.FindAllStringIndex(expr, -1) {
		tok := expr[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || promqlKeywords[strings.ToLower(tok)] {
			continue
		}
		if rest := strings.TrimLeft(expr[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue
		}
		names = append(names, tok)
	}
	return names
}

func TestMetricNameExtractionFindsSelectorsAndIgnoresFunctionsLabelsAndVariables(t *testing.T) {
	for expr, want := range map[string]string{
		`histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"$route", x="b{c}"}[$__rate_interval])))`: "a_bucket",
		`sum(rate(a_total[5m])) / sum without (instance) (rate(b_total[5m])) > bool 0.5`:                             "a_total b_total",
		`x == 0 and on (job, instance) y offset 5m`:                                                                  "x y",
		`label_values(executor_build_info{job=~"$job"}, instance)`:                                                   "executor_build_info",
		`job:executor_errors:ratio_rate5m > (14.4 * 0.001)`:                                                          "job:executor_errors:ratio_rate5m",
	} {
		if got := strings.Join(metricNamesIn(expr), " "); got != want {
			t.Errorf("metricNamesIn(%q) = %q, want %q", expr, got, want)
		}
	}
}

// dashboard is the part of the Grafana JSON model the tests look at.
type dashboard struct {
	SchemaVersion int    `json:"schemaVersion"`
	UID           string `json:"uid"`
	Title         string `json:"title"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *datasourceRef   `json:"datasource"`
	Panels     []dashboardPanel `json:"panels"` // collapsed rows nest panels
	Targets    []struct {
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	return d
}

func flattenPanels(ps []dashboardPanel) []dashboardPanel {
	var out []dashboardPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flattenPanels(p.Panels)...)
	}
	return out
}

// dashboardExprs returns every PromQL expression in the dashboard, keyed by
// where it was found, including template variable queries.
func dashboardExprs(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			// Older dashboards store the query as a plain string.
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: unreadable query %s", v.Name, v.Query)
			}
		}
		exprs["variable "+v.Name] = q.Query
	}
	for _, p := range flattenPanels(d.Panels) {
		for i, tg := range p.Targets {
			exprs[p.Title+" #"+string(rune('A'+i))] = tg.Expr
		}
	}
	return exprs
}

func TestDashboardIsAGrafanaDashboardWhosePanelsAllUseTheDSPrometheusVariable(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion < 36 || d.UID == "" || d.Title == "" {
		t.Errorf("schemaVersion %d, uid %q, title %q: want schemaVersion >= 36 and a uid and title", d.SchemaVersion, d.UID, d.Title)
	}
	hasDSVar := false
	for _, v := range d.Templating.List {
		if v.Name == "DS_PROMETHEUS" && v.Type == "datasource" {
			hasDSVar = true
		}
	}
	if !hasDSVar {
		t.Error("no datasource template variable DS_PROMETHEUS")
	}
	ids := map[int]string{}
	for _, p := range flattenPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource %+v, want uid ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if tg.Datasource != nil && tg.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: target datasource %+v, want uid ${DS_PROMETHEUS}", p.Title, tg.Datasource)
			}
		}
	}
}

func TestDashboardQueriesOnlyMetricsThatNewRegisters(t *testing.T) {
	queryable, _ := registeredNames(t)
	d := loadDashboard(t)
	exprs := dashboardExprs(t, d)
	if len(exprs) < 10 {
		t.Fatalf("found only %d expressions in the dashboard; is the JSON layout what this test expects?", len(exprs))
	}
	for where, expr := range exprs {
		names := metricNamesIn(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric found in %q", where, expr)
		}
		for _, n := range names {
			if !queryable[n] {
				t.Errorf("%s: %q is not registered by metrics.New (expr %q)", where, n, expr)
			}
		}
	}
}

func TestDashboardHasThePanelsOperatorsAskedFor(t *testing.T) {
	d := loadDashboard(t)
	var all []string
	for where, expr := range dashboardExprs(t, d) {
		all = append(all, where+": "+expr)
	}
	joined := strings.Join(all, "\n")
	for _, want := range []string{
		"executor_executions_total", // throughput and outcomes
		"histogram_quantile(0.99, sum by (le) (rate(executor_http_request_duration_seconds_bucket", // latency p99
		"histogram_quantile(0.5, sum by (le) (rate(executor_http_request_duration_seconds_bucket",  // latency p50
		"executor_pool_idle_workers",
		"executor_pool_acquired_workers",
		"executor_pool_constructing_workers",
		"executor_pool_empty_acquires_total",
		"executor_pool_spawn_duration_seconds_bucket",
		"executor_pool_spawn_failures_total",
		"executor_overload_rejections_total",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("no dashboard query contains %q", want)
		}
	}
}

// alertRules is the part of a Prometheus rule file the tests look at.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestAlertRulesQueryOnlyRegisteredOrRecordedMetricsAndCarryRunbooks(t *testing.T) {
	queryable, _ := registeredNames(t)
	raw, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	if err := yaml.UnmarshalStrict(raw, &rules); err != nil {
		// Strict so that a typo in a key (anotations:) is caught here too.
		t.Fatalf("%s: %v", alertsPath, err)
	}
	known := map[string]bool{"up": true} // written by Prometheus per target
	for n := range queryable {
		known[n] = true
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				known[r.Record] = true
			}
		}
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, n := range metricNamesIn(r.Expr) {
				if !known[n] {
					t.Errorf("rule %s%s: %q is neither registered by metrics.New nor recorded in %s", r.Alert, r.Record, n, alertsPath)
				}
			}
			if r.Alert == "" {
				continue
			}
			alerts++
			for _, a := range []string{"summary", "description", "runbook"} {
				if r.Annotations[a] == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
			if anchor := "docs/OBSERVABILITY.md#" + strings.ToLower(r.Alert); !strings.HasPrefix(r.Annotations["runbook"], anchor) {
				t.Errorf("alert %s: runbook %q should start with %q", r.Alert, r.Annotations["runbook"], anchor)
			}
		}
	}
	if alerts < 5 {
		t.Fatalf("found %d alerts in %s, want at least 5", alerts, alertsPath)
	}
}

func TestObservabilityDocListsEveryExecutorMetricAndEveryAlert(t *testing.T) {
	_, families := registeredNames(t)
	raw, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	var missing []string
	for name := range families {
		if strings.HasPrefix(name, "executor_") && !strings.Contains(doc, "`"+name+"`") {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	for _, n := range missing {
		t.Errorf("%s does not document `%s`", docsPath, n)
	}

	alertsRaw, err := os.ReadFile(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	if err := yaml.Unmarshal(alertsRaw, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && !strings.Contains(doc, "### "+r.Alert) {
				t.Errorf("%s has no section \"### %s\" for the runbook link", docsPath, r.Alert)
			}
		}
	}
}

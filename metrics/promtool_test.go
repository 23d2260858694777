package metrics_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var prometheusDir = filepath.Join(repoRoot, "deploy", "prometheus")

// promtool returns the path of promtool. Developers without it get a skip;
// CI (CI set) must have it, so there a missing promtool fails rather than
// silently dropping the only real check of the rule files.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("promtool not on PATH (Debian: apt-get install prometheus); required when CI is set")
		}
		t.Fatalf("promtool not on PATH but CI=%q: install it (Debian package prometheus)", os.Getenv("CI"))
	}
	return path
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestPromtoolAcceptsTheAlertRules(t *testing.T) {
	runPromtool(t, prometheusDir, "check", "rules", "alerts.yml")
}

func TestPromtoolUnitTestsProveTheAlertsFireAndStayQuiet(t *testing.T) {
	runPromtool(t, prometheusDir, "test", "rules", "alerts_test.yml")
}

func TestPromtoolAcceptsTheExampleScrapeConfig(t *testing.T) {
	runPromtool(t, prometheusDir, "check", "config", "prometheus.yml")
}

// grafanaVariableValues stands in for Grafana's variables so that promtool
// can parse the dashboard's expressions as PromQL.
var grafanaVariableValues = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "1m",
	"$__range", "1h",
	"$job", ".*",
	"$instance", ".*",
	"$route", "/execute",
)

// The name-only check in deploy_test.go tokenizes; this one has Prometheus's
// own parser read every panel query (as recording rules), so a typo in a
// bracket or a function name cannot ship in the dashboard either.
func TestPromtoolParsesEveryDashboardQuery(t *testing.T) {
	bin := promtool(t)
	exprs := dashboardExprs(t, loadDashboard(t))
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		if !strings.HasPrefix(k, "variable ") { // label_values() is Grafana's, not PromQL
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, k := range keys {
		expr := grafanaVariableValues.Replace(exprs[k])
		if strings.Contains(expr, "$") {
			t.Fatalf("%s: unknown Grafana variable left in %q; add it to grafanaVariableValues", k, expr)
		}
		// %q yields a valid double-quoted YAML scalar for these expressions.
		fmt.Fprintf(&b, "      - record: dashboard_query_%d\n        expr: %q\n", i, expr)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool rejected a dashboard query: %v\n%s\n%s", err, out, b.String())
	}
}

package deploy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

const (
	alertsFile       = "prometheus/alerts.yml"
	prometheusConfig = "prometheus/prometheus.yml"
	// maxScrapeInterval is what README.md and docs/OBSERVABILITY.md promise.
	maxScrapeInterval = 15 * time.Second
)

// ruleTimings returns the shortest range selector ([1m]) in any alert
// expression and the shortest non-zero `for:` of alerts.yml.
func ruleTimings(t *testing.T) (minWindow, minFor time.Duration) {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert  string `json:"alert"`
				Record string `json:"record"`
				Expr   string `json:"expr"`
				For    string `json:"for"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	rangeSel := regexp.MustCompile(`\[([0-9]+[smhdwy])(:[0-9]*[smhdwy]?)?\]`)
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			for _, m := range rangeSel.FindAllStringSubmatch(r.Expr, -1) {
				d, err := model.ParseDuration(m[1])
				if err != nil {
					t.Fatalf("%s%s: window %q: %v", r.Alert, r.Record, m[1], err)
				}
				if minWindow == 0 || time.Duration(d) < minWindow {
					minWindow = time.Duration(d)
				}
			}
			if r.For != "" {
				d, err := model.ParseDuration(r.For)
				if err != nil {
					t.Fatalf("%s: for %q: %v", r.Alert, r.For, err)
				}
				if d > 0 && (minFor == 0 || time.Duration(d) < minFor) {
					minFor = time.Duration(d)
				}
			}
		}
	}
	if minWindow == 0 || minFor == 0 {
		t.Fatalf("%s: found no range windows (%v) or no for: (%v); the parser is out of date", alertsFile, minWindow, minFor)
	}
	return minWindow, minFor
}

// checkInterval asserts a scrape interval feeds the alert rules: every
// rate() window sees at least four samples (Prometheus' rule of thumb; two
// are the bare minimum for rate() to return anything), and the shortest
// `for:` spans at least two scrapes, so one late scrape does not decide an
// alert. And it keeps the documented promise of 15 s or less.
func checkInterval(t *testing.T, what string, interval, timeout time.Duration) {
	t.Helper()
	minWindow, minFor := ruleTimings(t)
	if interval <= 0 {
		t.Fatalf("%s: no scrape interval", what)
	}
	if interval > maxScrapeInterval {
		t.Errorf("%s scrapes every %s; README and docs/OBSERVABILITY.md require %s or less", what, interval, maxScrapeInterval)
	}
	if 4*interval > minWindow {
		t.Errorf("%s scrapes every %s: the %s rate() window in %s gets fewer than 4 samples", what, interval, minWindow, alertsFile)
	}
	if 2*interval > minFor {
		t.Errorf("%s scrapes every %s: `for: %s` in %s spans fewer than 2 scrapes", what, interval, minFor, alertsFile)
	}
	if timeout <= 0 || timeout > interval {
		t.Errorf("%s: scrape timeout %s must be set and no longer than the interval %s", what, timeout, interval)
	}
}

func TestServiceMonitorScrapesOftenEnoughForTheAlertRules(t *testing.T) {
	sm := only[*monitoringv1.ServiceMonitor](t, loadManifests(t))
	if len(sm.Spec.Endpoints) == 0 {
		t.Fatal("ServiceMonitor has no endpoints")
	}
	for _, ep := range sm.Spec.Endpoints {
		// An empty interval means the Prometheus resource's default (30 s in
		// the Operator), which is too slow: it must be explicit.
		if ep.Interval == "" {
			t.Errorf("ServiceMonitor endpoint %q has no interval (the Operator's default is 30s)", ep.Port)
			continue
		}
		interval, err := model.ParseDuration(string(ep.Interval))
		if err != nil {
			t.Fatalf("interval %q: %v", ep.Interval, err)
		}
		var timeout model.Duration
		if ep.ScrapeTimeout != "" {
			if timeout, err = model.ParseDuration(string(ep.ScrapeTimeout)); err != nil {
				t.Fatalf("scrapeTimeout %q: %v", ep.ScrapeTimeout, err)
			}
		}
		checkInterval(t, "ServiceMonitor "+ep.Port, time.Duration(interval), time.Duration(timeout))
	}
}

func TestPrometheusConfigScrapesOftenEnoughForTheAlertRules(t *testing.T) {
	b, err := os.ReadFile(prometheusConfig)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Global struct {
			ScrapeInterval string `json:"scrape_interval"`
			ScrapeTimeout  string `json:"scrape_timeout"`
		} `json:"global"`
		ScrapeConfigs []struct {
			JobName        string `json:"job_name"`
			ScrapeInterval string `json:"scrape_interval"`
			ScrapeTimeout  string `json:"scrape_timeout"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	dur := func(vals ...string) time.Duration {
		for _, v := range vals {
			if v != "" {
				d, err := model.ParseDuration(v)
				if err != nil {
					t.Fatalf("%s: %q: %v", prometheusConfig, v, err)
				}
				return time.Duration(d)
			}
		}
		return 0
	}
	found := false
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName != "executor" {
			continue
		}
		found = true
		interval := dur(sc.ScrapeInterval, cfg.Global.ScrapeInterval, "1m") // Prometheus' default is 1m
		checkInterval(t, "job executor", interval, dur(sc.ScrapeTimeout, cfg.Global.ScrapeTimeout, "10s"))
	}
	if !found {
		t.Errorf("%s has no job executor", prometheusConfig)
	}
}

// kubernetesSteps returns the shell lines of the first fenced or indented
// block of doc that runs `kubectl apply -k`.
func kubernetesSteps(t *testing.T, doc string) []string {
	t.Helper()
	b, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "```"):
			if inFence && hasApplyK(block) {
				return block
			}
			inFence, block = !inFence, nil
		case inFence || strings.HasPrefix(line, "    "):
			block = append(block, trimmed)
		default:
			if hasApplyK(block) {
				return block
			}
			block = nil
		}
	}
	t.Fatalf("%s has no block with `kubectl apply -k`", doc)
	return nil
}

func hasApplyK(lines []string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, "kubectl apply -k") {
			return true
		}
	}
	return false
}

// The Secret lives in the namespace that deploy/k8s/namespace.yaml
// creates: `kubectl -n script-executor create secret` before that fails
// with `namespaces "script-executor" not found`. Every doc's steps must
// create the namespace first, with its Pod Security labels (the manifest,
// not a bare `kubectl create namespace`), and the Secret before the
// Deployment needs it.
func TestKubernetesStepsCreateTheNamespaceBeforeTheSecret(t *testing.T) {
	for _, doc := range []string{"../README.md", "../docs/DEPLOY.md", "k8s/kustomization.yaml"} {
		var steps []string
		if strings.HasSuffix(doc, ".yaml") {
			// The kustomization's comment: lines "#   kubectl ...".
			b, err := os.ReadFile(doc)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if l = strings.TrimSpace(strings.TrimPrefix(l, "#")); strings.HasPrefix(l, "kubectl") {
					steps = append(steps, l)
				}
			}
		} else {
			steps = kubernetesSteps(t, doc)
		}
		at := func(prefix string) int {
			for i, l := range steps {
				if strings.HasPrefix(l, prefix) {
					return i
				}
			}
			return -1
		}
		ns := at("kubectl apply -f deploy/k8s/namespace.yaml")
		secret := at("kubectl -n script-executor create secret generic executor-api-keys")
		apply := at("kubectl apply -k deploy/k8s")
		if ns < 0 || secret < 0 || apply < 0 {
			t.Errorf("%s: steps %q lack the namespace (%d), secret (%d) or apply -k (%d) step", doc, steps, ns, secret, apply)
			continue
		}
		if !(ns < secret && secret < apply) {
			t.Errorf("%s: order is namespace %d, secret %d, apply -k %d; want namespace, then secret, then apply", doc, ns, secret, apply)
		}
	}
}

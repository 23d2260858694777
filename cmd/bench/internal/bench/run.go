package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Run measures everything, writes the raw outputs and RESULTS.md into
// o.OutDir, and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	logf := func(format string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", a...)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the bench creates cgroups and maps uids for nsjail: run it as root")
	}
	for _, p := range []string{o.Executor, o.Loadtest, o.Nsjail} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%s is missing (build it first: `make bench` does)", p)
		}
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	r := &Report{Date: start, Command: o.Command, OutDir: o.OutDir, Machine: describeMachine(o),
		Duration: o.Duration, Warmup: o.Warmup, CeilingDuration: o.CeilingDuration, AcquireTimeout: o.AcquireTimeout, RecoveryMs: -1}
	logf("bench: load average before the run: %s; raw outputs in %s", r.Machine.LoadBefore, o.OutDir)
	save := func(name string, v any) error {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(o.OutDir, name), append(b, '\n'), 0o644)
	}

	var err error
	r.Ceiling, err = measureCeiling(ctx, o, logf)
	if err != nil {
		return r, fmt.Errorf("raw ceiling: %w", err)
	}
	if err := save("ceiling.json", r.Ceiling); err != nil {
		return r, err
	}
	ceil := r.CeilingRate()
	rate25, rate50 := max(1, int(math.Round(ceil/4))), max(1, int(math.Round(ceil/2)))
	logf("bench: ceiling %.1f jails/s: open-loop rates %d/s (25%%) and %d/s (50%%)", ceil, rate25, rate50)

	if err := warmPhase(ctx, o, r, rate25, rate50, save, logf); err != nil {
		return r, fmt.Errorf("warm server: %w", err)
	}
	if err := coldPhase(ctx, o, r, rate25, rate50, logf); err != nil {
		return r, fmt.Errorf("cold server: %w", err)
	}
	if err := cellPhase(ctx, o, r, save, logf); err != nil {
		return r, fmt.Errorf("cell server: %w", err)
	}
	r.Machine.LoadAfter = loadAvg()
	r.Elapsed = time.Since(start)
	if err := save("report.json", r); err != nil {
		return r, err
	}
	if err := os.WriteFile(filepath.Join(o.OutDir, "RESULTS.md"), []byte(r.Markdown()), 0o644); err != nil {
		return r, err
	}
	return r, nil
}

type saver func(name string, v any) error

func describe(mode, key string, rate, conc int) string {
	if mode == "cell-numpy" {
		return fmt.Sprintf("closed loop c=%d, a numpy transform, `--preload numpy`", conc)
	}
	if mode == "cell" && key == "open50" {
		return fmt.Sprintf("open loop %d/s (50%% of its c=16 capacity)", rate)
	}
	switch key {
	case "open25":
		return fmt.Sprintf("open loop %d/s (25%% of ceiling)", rate)
	case "open50":
		return fmt.Sprintf("open loop %d/s (50%% of ceiling)", rate)
	case "c16":
		if mode == "warm" {
			return "closed loop c=16 (capacity T16)"
		}
	}
	return fmt.Sprintf("closed loop c=%d", conc)
}

// runRow waits for a full pool (warm mode) and runs one loadtest.
func runRow(ctx context.Context, o Options, r *Report, s *server, key string, rate, conc int, logf func(string, ...any)) (LoadResult, error) {
	if s.mode != "cold" {
		if _, err := s.waitWarm(ctx, r.WarmTarget, 50*time.Millisecond, 30*time.Second); err != nil {
			return LoadResult{}, err
		}
	}
	file := fmt.Sprintf("%s-%s.json", s.mode, key)
	busy0 := busyCPU()
	res, err := s.loadtest(ctx, o, rate, conc, filepath.Join(o.OutDir, file))
	if err != nil {
		return res, err
	}
	row := Row{Server: s.mode, Key: key, Load: describe(s.mode, key, rate, conc), File: file, Result: res}
	if res.Requests > 0 {
		// loadtest's warmup is in the window too: per request of both.
		row.CPUPerRequestMs = float64((busyCPU() - busy0).Microseconds()) / 1000 / float64(res.Requests+res.WarmupRequests)
	}
	r.Rows = append(r.Rows, row)
	logf("bench: %s %-34s %7.1f/s  p50 %8.2f ms  p99 %8.2f ms  status %v  transport errors %d",
		s.mode, describe(s.mode, key, rate, conc), res.Throughput, res.Latency.P50, res.Latency.P99, res.StatusCodes, res.TransportErrors)
	return res, nil
}

func dumpMetrics(ctx context.Context, s *server, path string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/metrics", nil)
	resp, err := s.client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	os.WriteFile(path, b, 0o644)
}

func warmPhase(ctx context.Context, o Options, r *Report, rate25, rate50 int, save saver, logf func(string, ...any)) (err error) {
	s, stop, err := startReady(ctx, o, "warm", o.UIDBase+1000, "executor-warm.log", "warm", logf)
	if err != nil {
		return err
	}
	defer stop()
	if r.WarmTarget, err = s.warmTarget(ctx); err != nil {
		return err
	}
	if m, err := s.metrics(ctx); err == nil {
		r.MaxWorkers = int(m["executor_pool_max_workers"])
	}
	measurePSS(ctx, r, s, logf)
	for _, run := range []struct {
		key        string
		rate, conc int
	}{{"c16", 0, 16}, {"open25", rate25, 0}, {"open50", rate50, 0}, {"c1", 0, 1}, {"c4", 0, 4}} {
		if _, err := runRow(ctx, o, r, s, run.key, run.rate, run.conc, logf); err != nil {
			return err
		}
	}
	if _, err := runRow(ctx, o, r, s, "c64", 0, 64, logf); err != nil {
		return err
	}
	// Recovery: from the end of the overload until the pool is full again.
	if d, err := s.waitWarm(ctx, r.WarmTarget, 50*time.Millisecond, 30*time.Second); err == nil {
		r.RecoveryMs = float64(d.Microseconds()) / 1000
		logf("bench: warm pool back at %d idle workers %.0f ms after the c=64 overload", r.WarmTarget, r.RecoveryMs)
	} else {
		logf("bench: recovery: %v", err)
	}
	// Burst: W simultaneous requests on a full pool.
	if _, err := s.waitWarm(ctx, r.WarmTarget, 50*time.Millisecond, 30*time.Second); err != nil {
		return err
	}
	r.Burst = burst(ctx, s.base, r.WarmTarget)
	logf("bench: warm burst of %d: p50 %.2f ms  p99 %.2f ms  status %v", r.WarmTarget, r.Burst.P50, r.Burst.P99, r.Burst.StatusCodes)
	if err := save("burst.json", r.Burst); err != nil {
		return err
	}
	dumpMetrics(ctx, s, filepath.Join(o.OutDir, "warm-metrics.txt"))
	// Keep rows in reading order: open loop, then closed loop by concurrency.
	order := map[string]int{"open25": 0, "open50": 1, "c1": 2, "c4": 3, "c16": 4, "c64": 5}
	sortRows(r.Rows, order)
	return nil
}

func coldPhase(ctx context.Context, o Options, r *Report, rate25, rate50 int, logf func(string, ...any)) error {
	s, stop, err := startReady(ctx, o, "cold", o.UIDBase+2000, "executor-cold.log", "cold", logf)
	if err != nil {
		return err
	}
	defer stop()
	for _, run := range []struct {
		key        string
		rate, conc int
	}{{"open25", rate25, 0}, {"open50", rate50, 0}, {"c1", 0, 1}, {"c16", 0, 16}} {
		if _, err := runRow(ctx, o, r, s, run.key, run.rate, run.conc, logf); err != nil {
			return err
		}
	}
	dumpMetrics(ctx, s, filepath.Join(o.OutDir, "cold-metrics.txt"))
	return nil
}

// startReady starts a server of the given mode and waits until it is ready.
// stop stops it and logs what its cgroups left; it is also called here when
// the server never became ready.
func startReady(ctx context.Context, o Options, mode string, uidBase int, logFile, name string, logf func(string, ...any), extra ...string) (s *server, stop func(), err error) {
	if s, err = startServer(o, mode, uidBase, filepath.Join(o.OutDir, logFile), extra...); err != nil {
		return nil, nil, err
	}
	stop = func() {
		if e := s.stop(); e != nil {
			logf("bench: cleaning up the %s server's cgroups: %v", name, e)
		}
	}
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		stop()
		return nil, nil, err
	}
	return s, stop, nil
}

// cellBurstSize is issue 14's burst on the cell server.
const cellBurstSize = 32

// cellPhase measures the warm pool with cell isolation: capacity (c=16),
// an open loop at half of that capacity, c=1, and a burst of 32.
func cellPhase(ctx context.Context, o Options, r *Report, save saver, logf func(string, ...any)) error {
	s, stop, err := startReady(ctx, o, "cell", o.UIDBase+2500, "executor-cell.log", "cell", logf)
	if err != nil {
		return err
	}
	defer stop()
	measurePSS(ctx, r, s, logf)
	c16, err := runRow(ctx, o, r, s, "c16", 0, 16, logf)
	if err != nil {
		return err
	}
	half := max(1, int(math.Round(c16.Throughput/2)))
	for _, run := range []struct {
		key        string
		rate, conc int
	}{{"open50", half, 0}, {"c1", 0, 1}} {
		if _, err := runRow(ctx, o, r, s, run.key, run.rate, run.conc, logf); err != nil {
			return err
		}
	}
	if _, err := s.waitWarm(ctx, r.WarmTarget, 50*time.Millisecond, 30*time.Second); err != nil {
		return err
	}
	r.CellBurst = burst(ctx, s.base, cellBurstSize)
	logf("bench: cell burst of %d: p50 %.2f ms  p99 %.2f ms  status %v", cellBurstSize, r.CellBurst.P50, r.CellBurst.P99, r.CellBurst.StatusCodes)
	dumpMetrics(ctx, s, filepath.Join(o.OutDir, "cell-metrics.txt"))
	if err := save("cell-burst.json", r.CellBurst); err != nil {
		return err
	}
	if err := cellFullBurst(ctx, o, r, save, logf); err != nil {
		return err
	}
	return numpyPhase(ctx, o, r, logf)
}

// numpyTransform is the script of the --preload numpy run: a record
// transform that uses numpy, as the data-sync platform's customers write.
const numpyTransform = `import numpy as np

def main(record=None):
    xs = np.array([1.5, 2.5, 3.0, 4.0])
    return {"mean": float(xs.mean()), "total": float(xs.sum())}
`

// numpyPhase measures issue 14's --preload numpy target: a cell server that
// imports numpy once per cell, under the c=16 closed loop of a numpy
// transform, against the plain cell server's c=16 with the hello example.
// It is skipped (and the check says why) when the interpreter has no numpy.
func numpyPhase(ctx context.Context, o Options, r *Report, logf func(string, ...any)) error {
	out, err := exec.CommandContext(ctx, o.Python, "-c", "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))").Output()
	if err != nil {
		r.NumpySkipped = fmt.Sprintf("%s cannot import numpy (%v)", o.Python, err)
		logf("bench: %s", r.NumpySkipped)
		return nil
	}
	script := filepath.Join(o.OutDir, "numpy-transform.py")
	if err := os.WriteFile(script, []byte(numpyTransform), 0o644); err != nil {
		return err
	}
	s, stop, err := startReady(ctx, o, "cell-numpy", o.UIDBase+2900, "executor-cell-numpy.log", "cell --preload numpy", logf,
		"--preload", "numpy", "--python-path", strings.TrimSpace(string(out)))
	if err != nil {
		return err
	}
	defer stop()
	s.script = script
	measurePSS(ctx, r, s, logf)
	_, err = runRow(ctx, o, r, s, "c16", 0, 16, logf)
	return err
}

// measurePSS records the memory of one idle warm worker of s once its warm
// pool is full; a failure is logged, not fatal.
func measurePSS(ctx context.Context, r *Report, s *server, logf func(string, ...any)) {
	if _, err := s.waitWarm(ctx, r.WarmTarget, 50*time.Millisecond, 30*time.Second); err != nil {
		logf("bench: PSS of the %s server: %v", s.mode, err)
		return
	}
	time.Sleep(200 * time.Millisecond) // the last spawn's set-up settles
	v, err := s.idlePSS(r.WarmTarget)
	if err != nil {
		logf("bench: PSS of the %s server: %v", s.mode, err)
		return
	}
	if r.PSSMiB == nil {
		r.PSSMiB = map[string]float64{}
	}
	r.PSSMiB[s.mode] = v
	logf("bench: %s server: PSS per idle warm worker %.1f MiB (%d idle)", s.mode, v, r.WarmTarget)
}

// cellFullBurst is issue 14's burst on a full warm pool: a cell server whose
// warm pool holds cellBurstSize idle workers, each request finding one.
func cellFullBurst(ctx context.Context, o Options, r *Report, save saver, logf func(string, ...any)) error {
	o.WarmWorkers, o.MaxWorkers = cellBurstSize, 2*cellBurstSize
	s, stop, err := startReady(ctx, o, "cell", o.UIDBase+2700, "executor-cell-burst.log", "cell burst", logf)
	if err != nil {
		return err
	}
	defer stop()
	if _, err := s.waitWarm(ctx, cellBurstSize, 50*time.Millisecond, 30*time.Second); err != nil {
		return err
	}
	r.CellBurstFull = burst(ctx, s.base, cellBurstSize)
	logf("bench: cell burst of %d on a full warm pool: p50 %.2f ms  p99 %.2f ms  status %v", cellBurstSize, r.CellBurstFull.P50, r.CellBurstFull.P99, r.CellBurstFull.StatusCodes)
	return save("cell-burst-full.json", r.CellBurstFull)
}

// busyCPU is the machine's busy CPU time so far (/proc/stat: user, nice,
// system, irq, softirq, steal).
func busyCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		if i < len(f) {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ 100
}

func sortRows(rows []Row, order map[string]int) {
	for i := 1; i < len(rows); i++ {
		for j := i; j > 0 && rows[j].Server == rows[j-1].Server && order[rows[j].Key] < order[rows[j-1].Key]; j-- {
			rows[j], rows[j-1] = rows[j-1], rows[j]
		}
	}
}

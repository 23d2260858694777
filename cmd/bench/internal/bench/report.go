package bench

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Report is everything one run measured.
type Report struct {
	Date    time.Time     `json:"date"`
	Command string        `json:"command"`
	OutDir  string        `json:"out_dir"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Machine Machine       `json:"machine"`

	Duration, Warmup, CeilingDuration time.Duration
	AcquireTimeout                    time.Duration

	Ceiling Ceiling `json:"ceiling"`

	WarmTarget int   `json:"warm_target"`
	MaxWorkers int   `json:"max_workers"`
	Rows       []Row `json:"rows"`

	Burst      BurstResult `json:"burst"`
	RecoveryMs float64     `json:"recovery_ms"` // -1: not recovered within the limit

	// CellBurst is cellBurstSize simultaneous requests on the cell server
	// (its default warm pool: fewer idle workers than requests);
	// CellBurstFull the same on a cell server whose warm pool holds them all.
	CellBurst     BurstResult `json:"cell_burst"`
	CellBurstFull BurstResult `json:"cell_burst_full"`

	// PSSMiB is the memory of one idle warm worker (idlePSS) by server:
	// "warm" (jail), "cell", "cell-numpy" (--preload numpy).
	PSSMiB map[string]float64 `json:"pss_mib"`
	// NumpySkipped says why the --preload numpy phase did not run ("" if it
	// ran: its row is server "cell-numpy", key "c16").
	NumpySkipped string `json:"numpy_skipped,omitempty"`
}

// Row is one loadtest run.
type Row struct {
	Server string     `json:"server"` // warm, cold or cell (warm pool, cell isolation)
	Key    string     `json:"key"`    // open25, open50, c1, c4, c16, c64
	Load   string     `json:"load"`   // human description
	File   string     `json:"file"`   // raw JSON, relative to OutDir
	Result LoadResult `json:"result"`
	// CPUPerRequestMs is the machine's busy CPU time (/proc/stat, every
	// process and kernel thread) during the run, per request: on a quiet
	// machine, what one request costs.
	CPUPerRequestMs float64 `json:"cpu_per_request_ms"`
}

// CeilingRate is the reference spawn rate: the best `import json` loop.
func (r *Report) CeilingRate() float64 { return Best(r.Ceiling.ImportJSON).PerSecond }

func (r *Report) row(server, key string) (Row, bool) {
	for _, x := range r.Rows {
		if x.Server == server && x.Key == key {
			return x, true
		}
	}
	return Row{}, false
}

// Service table columns; the test parses these.
var serviceColumns = []string{"server", "load", "sent/s", "requests", "2xx/s", "p50 ms", "p90 ms", "p99 ms",
	"2xx p99 ms", "max ms", "200", "429 (Retry-After)", "other", "transport errors", "raw output"}

func count(m map[string]uint64, code string) uint64 { return m[code] }

func others(m map[string]uint64) uint64 {
	var n uint64
	for k, v := range m {
		if k != "200" && k != "429" {
			n += v
		}
	}
	return n
}

func ms(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func rate(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func yesNo(ok bool) string {
	if ok {
		return "**yes**"
	}
	return "**NO**"
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	r.writeHeader(p)
	r.writeCeiling(p)
	r.writeService(p)
	r.writeRatios(p)
	b.WriteString(r.cellTargets())
	return b.String()
}

// printer is fmt.Fprintf into the report being written.
type printer func(format string, a ...any)

func (r *Report) writeHeader(p printer) {
	m := r.Machine
	p("# Benchmark results\n\n")
	p("- Date: %s\n", r.Date.UTC().Format("2006-01-02 15:04:05 UTC"))
	p("- Command: `%s`\n", r.Command)
	p("- Machine: %d CPUs (`nproc`), %s, Linux %s, %.1f GiB RAM\n", m.CPUs, m.Model, m.Kernel, m.MemoryGiB)
	p("- Software: %s, %s, nsjail from the %s\n", m.Go, m.Python, m.Nsjail)
	p("- Load average (1/5/15 min): %s before the run, %s after it\n", m.LoadBefore, m.LoadAfter)
	p("- Durations: %v per loadtest run after a %v warmup; %v per nsjail loop measurement; the whole run took %v\n",
		r.Duration, r.Warmup, r.CeilingDuration, r.Elapsed.Round(time.Second))
	p("- Raw outputs: `%s`\n\n", r.OutDir)
	p("> The machine is shared with other engineers (see the load average) and these\n")
	p("> figures come from one run: expect a few percent of noise, more on the tails.\n\n")
}

func (r *Report) writeCeiling(p printer) {
	ceil := r.CeilingRate()
	p("## Raw ceiling: single-use jails per second, no server\n\n")
	p("The server's nsjail command line (jailproc.Supervisor.CommandLine: same user mapping, binds, tmpfs /tmp, rlimits,\n")
	p("memory+pids cgroups, seccomp policy, --iface_no_lo) in parallel loops, each jail running one interpreter.\n\n")
	p("| command | loops | spawns | failures | seconds | spawns/s | wall ms/spawn | CPU ms/spawn |\n")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, rs := range [][]SpawnResult{r.Ceiling.ImportJSON, r.Ceiling.Pass} {
		for _, s := range rs {
			p("| %s | %d | %d | %d | %.1f | %s | %s | %s |\n", s.Name, s.Loops, s.Spawns, s.Failures, s.Seconds, rate(s.PerSecond), ms(s.WallMs), ms(s.CPUMs))
		}
	}
	bj, bp := Best(r.Ceiling.ImportJSON), Best(r.Ceiling.Pass)
	p("\n**Ceiling** (reference, best of the loops): **%s jails/s** with `import json` (%d loops); %s jails/s with `pass` (%d loops).\n\n",
		rate(ceil), bj.Loops, rate(bp.PerSecond), bp.Loops)
	if len(r.Ceiling.Breakdown) > 0 {
		p("### Where a spawn's time goes (one loop, back to back)\n\n")
		p("| command | spawns | wall ms/spawn | CPU ms/spawn |\n| --- | ---: | ---: | ---: |\n")
		for _, s := range r.Ceiling.Breakdown {
			p("| %s | %d | %s | %s |\n", s.Name, s.Spawns, ms(s.WallMs), ms(s.CPUMs))
		}
		p("\nCPU is user+sys of nsjail and what it waited for (rusage); kernel work done\n")
		p("asynchronously (namespace teardown in kworkers) is not in it.\n\n")
	}
}

func (r *Report) writeService(p printer) {
	p("## Service: bin/executor under bin/loadtest\n\n")
	p("Warm pool: warm target %d, max workers %d, acquire timeout %v. Script: the API's hello example; every\n", r.WarmTarget, r.MaxWorkers, r.AcquireTimeout)
	p("request consumes one single-use worker. Open-loop rates are 25%% and 50%% of the ceiling above.\n")
	p("Latency columns cover every measured request (errors included); `2xx p99` only the successful ones.\n\n")
	p("| %s |\n|%s\n", strings.Join(serviceColumns, " | "), strings.Repeat(" --- |", len(serviceColumns)))
	for _, x := range r.Rows {
		r.writeRow(p, x)
	}
	if r.RecoveryMs >= 0 {
		p("\nRecovery after the c=64 overload: idle workers back at the warm target (%d) **%s ms** after the load ended (polled every 50 ms).\n\n", r.WarmTarget, ms(r.RecoveryMs))
	} else {
		p("\nRecovery after the c=64 overload: idle workers **did not** get back to the warm target (%d) within 30 s.\n\n", r.WarmTarget)
	}
	if errs := r.errorSummary(); errs != "" {
		p("Error types seen: %s\n\n", errs)
	}
}

func (r *Report) writeRatios(p printer) {
	ceil := r.CeilingRate()
	p("## Ratios and targets\n\n")
	p("| check | measured | target | met |\n| --- | --- | --- | --- |\n")
	w50, _ := r.row("warm", "open50")
	c50, _ := r.row("cold", "open50")
	w25, _ := r.row("warm", "open25")
	c25, _ := r.row("cold", "open25")
	w16, _ := r.row("warm", "c16")
	w64, _ := r.row("warm", "c64")
	ratio := func(a, b float64) float64 {
		if b <= 0 {
			return 0
		}
		return a / b
	}
	p("| warm p50, open loop at 50%% of ceiling (%d/s) | %s ms | < 2 ms | %s |\n", w50.Result.TargetRate, ms(w50.Result.Latency.P50), yesNo(w50.Result.Latency.P50 < 2))
	p("| warm p99, open loop at 50%% of ceiling | %s ms | < 10 ms | %s |\n", ms(w50.Result.Latency.P99), yesNo(w50.Result.Latency.P99 < 10))
	p("| cold p50 / warm p50 at 50%% of ceiling | %.1fx (%s / %s ms) | >= 10x | %s |\n", ratio(c50.Result.Latency.P50, w50.Result.Latency.P50),
		ms(c50.Result.Latency.P50), ms(w50.Result.Latency.P50), yesNo(ratio(c50.Result.Latency.P50, w50.Result.Latency.P50) >= 10))
	p("| cold p50 / warm p50 at 25%% of ceiling (%d/s) | %.1fx (%s / %s ms) | (information) | |\n", w25.Result.TargetRate,
		ratio(c25.Result.Latency.P50, w25.Result.Latency.P50), ms(c25.Result.Latency.P50), ms(w25.Result.Latency.P50))
	t16 := w16.Result.Throughput
	all16 := w16.Result.Successes == w16.Result.Requests && w16.Result.TransportErrors == 0
	p("| T16 / ceiling | %.2f (%s / %s per s) | >= 0.85 | %s |\n", ratio(t16, ceil), rate(t16), rate(ceil), yesNo(ratio(t16, ceil) >= 0.85))
	p("| c=16: every answer 200 | %d of %d | all | %s |\n", w16.Result.Successes, w16.Result.Requests, yesNo(all16))
	res := w64.Result
	only := count(res.StatusCodes, "200")+count(res.StatusCodes, "429") == res.Requests && res.RetryAfter429 == count(res.StatusCodes, "429")
	p("| c=64: only 200, or 429 with Retry-After | %d x 200, %d x 429 (%d with Retry-After), %d other | only those | %s |\n",
		count(res.StatusCodes, "200"), count(res.StatusCodes, "429"), res.RetryAfter429, others(res.StatusCodes), yesNo(only))
	p("| c=64: no transport errors | %d | 0 | %s |\n", res.TransportErrors, yesNo(res.TransportErrors == 0))
	bound := float64(r.AcquireTimeout.Milliseconds()) + 500
	p("| c=64: p99 of admitted (2xx) requests within the acquire deadline | %s ms (max of all %s ms) | <= %v + 0.5 s run/queue margin | %s |\n",
		ms(res.SuccessLatency.P99), ms(res.Latency.Max), r.AcquireTimeout, yesNo(res.SuccessLatency.P99 <= bound))
	rec := "not within 30 s"
	if r.RecoveryMs >= 0 {
		rec = ms(r.RecoveryMs) + " ms"
	}
	p("| recovery to full warmth after c=64 | %s | ~1 s | %s |\n", rec, yesNo(r.RecoveryMs >= 0 && r.RecoveryMs <= 1100))
}

// writeRow writes one loadtest run, and after warm c=64 the burst.
func (r *Report) writeRow(p printer, x Row) {
	res := x.Result
	p("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %d | %d (%d) | %d | %d | `%s` |\n",
		x.Server, x.Load, rate(res.Rate), res.Requests, rate(res.Throughput), ms(res.Latency.P50), ms(res.Latency.P90),
		ms(res.Latency.P99), ms(res.SuccessLatency.P99), ms(res.Latency.Max), count(res.StatusCodes, "200"),
		count(res.StatusCodes, "429"), res.RetryAfter429, others(res.StatusCodes), res.TransportErrors, x.File)
	if x.Server == "cell" && x.Key == "c1" {
		p("%s", burstRow("cell", r.CellBurst, "cell-burst.json"))
		if r.CellBurstFull.Requests > 0 {
			p("%s", strings.Replace(burstRow("cell", r.CellBurstFull, "cell-burst-full.json"), "on a warm pool", fmt.Sprintf("on a full warm pool of %d", r.CellBurstFull.Requests), 1))
		}
	}
	if x.Server == "warm" && x.Key == "c64" {
		bu := r.Burst
		var other int
		for k, v := range bu.StatusCodes {
			if k != "200" && k != "429" {
				other += v
			}
		}
		p("| warm | burst: %d simultaneous on a warm pool | - | %d | - | %s | - | %s | - | %s | %d | %d (%d) | %d | %d | `burst.json` |\n",
			bu.Requests, bu.Requests, ms(bu.P50), ms(bu.P99), ms(bu.Max), bu.StatusCodes["200"], bu.StatusCodes["429"],
			bu.RetryAfter429, other, bu.TransportErrors)
	}
}

// cellTargets are issue 14's targets for cell isolation against the warm
// (jail) server.
func (r *Report) cellTargets() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w16, _ := r.row("warm", "c16")
	c16, ok := r.row("cell", "c16")
	if !ok {
		return ""
	}
	c50, _ := r.row("cell", "open50")
	x := 0.0
	if w16.Result.Throughput > 0 {
		x = c16.Result.Throughput / w16.Result.Throughput
	}
	p("| cell c=16 / jail c=16 | %.1fx (%s / %s per s) | >= 5x | %s |\n", x, rate(c16.Result.Throughput), rate(w16.Result.Throughput), yesNo(x >= 5))
	p("| cell c=16 throughput | %s per s | >= 600 per s | %s |\n", rate(c16.Result.Throughput), yesNo(c16.Result.Throughput >= 600))
	p("| CPU per request, cell c=16 (jail c=16: %s ms) | %s ms | <= 3 ms | %s |\n", ms(w16.CPUPerRequestMs), ms(c16.CPUPerRequestMs), yesNo(c16.CPUPerRequestMs <= 3))
	p("| cell p50, open loop at 50%% of its c=16 capacity (%d/s) | %s ms | <= 1.5 ms | %s |\n", c50.Result.TargetRate, ms(c50.Result.Latency.P50), yesNo(c50.Result.Latency.P50 <= 1.5))
	p("| cell p99, open loop at 50%% of its c=16 capacity | %s ms | <= 5 ms | %s |\n", ms(c50.Result.Latency.P99), yesNo(c50.Result.Latency.P99 <= 5))
	p("| cell burst of %d: every answer 200 | %d of %d | all | %s |\n", r.CellBurst.Requests, r.CellBurst.StatusCodes["200"], r.CellBurst.Requests, yesNo(r.CellBurst.StatusCodes["200"] == r.CellBurst.Requests))
	if bu := r.CellBurstFull; bu.Requests > 0 {
		p("| cell burst of %d on a full warm pool of %d: p99 | %s ms | <= 20 ms | %s |\n", bu.Requests, bu.Requests, ms(bu.P99), yesNo(bu.P99 <= 20 && bu.StatusCodes["200"] == bu.Requests))
	}
	if np, ok := r.row("cell-numpy", "c16"); ok && c16.Result.Throughput > 0 {
		f := np.Result.Throughput / c16.Result.Throughput
		p("| cell `--preload numpy`, a numpy transform, c=16 / cell c=16 (hello) | %.0f %% (%s / %s per s; %s ms CPU per request) | >= 50 %% | %s |\n",
			100*f, rate(np.Result.Throughput), rate(c16.Result.Throughput), ms(np.CPUPerRequestMs), yesNo(f >= 0.5 && np.Result.StatusCodes["200"] == np.Result.Requests))
	} else if r.NumpySkipped != "" {
		p("| cell `--preload numpy` capacity | not measured: %s | >= 50 %% of plain | **NO** |\n", r.NumpySkipped)
	}
	for _, k := range []struct{ key, name string }{{"warm", "jail"}, {"cell", "cell"}, {"cell-numpy", "cell `--preload numpy`"}} {
		if v, ok := r.PSSMiB[k.key]; ok {
			p("| PSS per idle warm worker, %s (its nsjail, zygote and workers shared over the idle workers) | %.1f MiB | (information) | |\n", k.name, v)
		}
	}
	return b.String()
}

// burstRow is the service-table row of a burst.
func burstRow(server string, bu BurstResult, file string) string {
	var other int
	for k, v := range bu.StatusCodes {
		if k != "200" && k != "429" {
			other += v
		}
	}
	return fmt.Sprintf("| %s | burst: %d simultaneous on a warm pool | - | %d | - | %s | - | %s | - | %s | %d | %d (%d) | %d | %d | `%s` |\n",
		server, bu.Requests, bu.Requests, ms(bu.P50), ms(bu.P99), ms(bu.Max), bu.StatusCodes["200"], bu.StatusCodes["429"],
		bu.RetryAfter429, other, bu.TransportErrors, file)
}

func (r *Report) errorSummary() string {
	var parts []string
	for _, x := range r.Rows {
		keys := make([]string, 0, len(x.Result.ErrorTypes))
		for k := range x.Result.ErrorTypes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %s: %s x %d", x.Server, x.Key, k, x.Result.ErrorTypes[k]))
		}
		for _, e := range x.Result.TransportEx {
			parts = append(parts, fmt.Sprintf("%s %s: transport: %s", x.Server, x.Key, e))
		}
	}
	return strings.Join(parts, "; ")
}

package loadtest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/tsenart/vegeta/v12/lib/plot"
)

// Exit codes of Main.
const (
	ExitOK          = 0 // the run completed; the summary says how the server fared
	ExitFailure     = 1 // target unreachable, interrupted, or an output could not be written
	ExitUsage       = 2 // bad flags (same code the flag package uses)
	maxResponseBody = 1 << 20
	// preflightTimeout caps the start-up reachability check independently of
	// -timeout, which may legitimately be minutes for slow scripts.
	preflightTimeout = 5 * time.Second
	// plotPointsPerSeries keeps the HTML file small enough for a browser to
	// open after a long run; vegeta downsamples with LTTB, which preserves
	// the spikes a person is looking for.
	plotPointsPerSeries = 4000
)

// Main is the whole command: parse args, check the target, run, report.
// It returns the process exit code; ctx cancellation (Ctrl-C) stops the run
// early and still prints what was measured.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: %v\nRun 'loadtest -h' for usage.\n", err)
		return ExitUsage
	}

	// Create the plot file before sending any load so that a typo in its
	// directory does not throw away a long run's results at the end.
	var htmlFile *os.File
	if cfg.HTMLPath != "" {
		if htmlFile, err = os.Create(cfg.HTMLPath); err != nil {
			fmt.Fprintf(stderr, "loadtest: %v\n", flagErr("html", "%v", err))
			return ExitUsage
		}
		defer htmlFile.Close()
	}

	if err := CheckReachable(ctx, cfg.URL); err != nil {
		fmt.Fprintf(stderr, "loadtest: target unreachable: %v\n", err)
		if htmlFile != nil {
			htmlFile.Close()
			os.Remove(cfg.HTMLPath) // don't leave an empty "plot" behind
		}
		return ExitFailure
	}

	sum, plt, err := Run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: %v\n", err)
		return ExitFailure
	}

	code := ExitOK
	if htmlFile != nil && !finishPlot(htmlFile, plt, cfg.HTMLPath, stderr) {
		code = ExitFailure
	}
	if cfg.JSON {
		err = WriteJSON(stdout, sum)
	} else {
		err = WriteText(stdout, sum)
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: writing summary: %v\n", err)
		return ExitFailure
	}
	if sum.Interrupted {
		fmt.Fprintln(stderr, "loadtest: interrupted; the summary covers only what completed")
		return ExitFailure
	}
	return code
}

// finishPlot writes the plot into f and closes it; it reports the error
// and false if that failed.
func finishPlot(f *os.File, plt *plot.Plot, path string, stderr io.Writer) bool {
	err := writePlot(f, plt)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadtest: writing %s: %v\n", path, err)
		return false
	}
	return true
}

// vegetaSeriesOpts is how vegeta v12.13's plot template configures each
// series. It hides points and breaks lines at gaps, so a series whose samples
// are isolated (a few 429s among many OKs: every other series is NaN at their
// timestamps) draws nothing at all. spanGaps joins them so error series are
// visible. If a vegeta upgrade changes the template this is a no-op and the
// plot is merely as vegeta draws it
// (TestHTMLPlotFileIsWrittenAndContainsTheLatencyChart notices).
const (
	vegetaSeriesOpts  = "points: { show: false },"
	patchedSeriesOpts = "points: { show: false }, spanGaps: true,"
)

func writePlot(w io.Writer, plt *plot.Plot) error {
	plt.Close()
	var buf bytes.Buffer
	if _, err := plt.WriteTo(&buf); err != nil {
		return err
	}
	html := bytes.Replace(buf.Bytes(), []byte(vegetaSeriesOpts), []byte(patchedSeriesOpts), 1)
	_, err := w.Write(html)
	return err
}

// plotLabel splits the plot into series a person can tell apart: "ERROR"
// in a label makes vegeta draw it in red. Labels are a small fixed set so a
// server returning many odd statuses cannot produce an unreadable legend.
func plotLabel(warmup bool, r *vegeta.Result) string {
	switch {
	case warmup:
		return "WARMUP"
	case r.Code == 0:
		return "ERROR transport"
	case isSuccess(r.Code):
		return "OK"
	case r.Code == http.StatusTooManyRequests:
		return "ERROR 429"
	case r.Code >= 400 && r.Code < 500:
		return "ERROR 4xx"
	case r.Code >= 500 && r.Code < 600:
		return "ERROR 5xx"
	default:
		return "ERROR other"
	}
}

func modeDescription(cfg *Config) string {
	if cfg.Rate == 0 {
		return fmt.Sprintf("closed loop, %d workers", cfg.Concurrency)
	}
	return fmt.Sprintf("%d req/s", cfg.Rate)
}

// CheckReachable opens (and closes) one TCP connection to the target. It
// deliberately sends no HTTP request: a probe script would be an unmeasured
// execution that counts against the server's rate limit, and all we want to
// catch here is a wrong host/port or a server that is not up yet.
func CheckReachable(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	d := net.Dialer{Timeout: preflightTimeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return err
	}
	return conn.Close()
}

// Run sends the load described by cfg and returns its summary and, when
// cfg.HTMLPath is set, the latency plot of every result (nil otherwise).
// Progress lines (if cfg.Progress > 0) go to progressOut. Cancelling ctx
// stops the attack early; the summary then has Interrupted set.
func Run(ctx context.Context, cfg *Config, progressOut io.Writer) (*Summary, *plot.Plot, error) {
	// vegeta only reports completed requests; counting targeter calls gives
	// "sent", so progress can show requests still in flight.
	var sent atomic.Uint64
	static := newTargeter(cfg)
	targeter := func(t *vegeta.Target) error {
		sent.Add(1)
		return static(t)
	}
	atk, pacer := newAttacker(cfg)

	start := time.Now()
	var warmupEnd time.Time
	if cfg.Warmup > 0 {
		warmupEnd = start.Add(cfg.Warmup)
	}
	col := NewCollector(warmupEnd)
	name := "execute"
	if cfg.Batch {
		name = "batch"
	}
	var plt *plot.Plot
	if cfg.HTMLPath != "" {
		plt = plot.New(
			plot.Title(fmt.Sprintf("loadtest %s (%s)", cfg.URL, modeDescription(cfg))),
			plot.Downsample(plotPointsPerSeries),
			plot.Label(func(r *vegeta.Result) string { return plotLabel(col.InWarmup(r), r) }),
		)
	}
	results := atk.Attack(targeter, pacer, cfg.Warmup+cfg.Duration, name)

	stopProgress := startProgress(cfg, progressOut, start, &sent, col)
	defer stopProgress()
	interrupted, err := collect(ctx, atk, results, col, plt)
	if err != nil {
		return nil, nil, err
	}
	stopProgress()
	sum := col.Summary(cfg)
	sum.Interrupted = interrupted
	return sum, plt, nil
}

// newTargeter is the one request every attack sends.
func newTargeter(cfg *Config) vegeta.Targeter {
	header := http.Header{}
	header.Set("Content-Type", "application/json")
	header.Set("User-Agent", "secure-script-executor-loadtest")
	if cfg.APIKey != "" {
		header.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	return vegeta.NewStaticTargeter(vegeta.Target{
		Method: http.MethodPost,
		URL:    cfg.URL,
		Body:   cfg.Body,
		Header: header,
	})
}

// newAttacker builds the attacker and pacer of an open loop (a rate, maybe
// capped in flight) or a closed loop (N back-to-back workers).
func newAttacker(cfg *Config) (*vegeta.Attacker, vegeta.Pacer) {
	opts := []func(*vegeta.Attacker){
		vegeta.Timeout(cfg.Timeout),
		// Only error bodies are inspected and they are small; the cap stops
		// a misbehaving server from making us buffer huge responses.
		vegeta.MaxBody(maxResponseBody),
		vegeta.KeepAlive(true),
		// The API never redirects; following one would silently measure a
		// different endpoint, so surface it as a 3xx instead.
		vegeta.Redirects(vegeta.NoFollow),
	}
	var pacer vegeta.Pacer = vegeta.ConstantPacer{Freq: cfg.Rate, Per: time.Second}
	if cfg.Rate == 0 {
		// Closed loop: vegeta treats a zero rate as "as fast as possible";
		// pinning both the initial and the maximum worker count to N makes
		// that exactly N workers, each sending its next request as soon as
		// its previous one returns.
		pacer = vegeta.ConstantPacer{}
		n := uint64(cfg.Concurrency)
		opts = append(opts, vegeta.Workers(n), vegeta.MaxWorkers(n), vegeta.Connections(cfg.Concurrency))
	} else if cfg.Concurrency > 0 {
		// Open loop with a cap: once N requests are in flight the
		// attacker stops spawning workers and the achieved rate drops
		// below the target (visible in the summary's rate).
		n := uint64(cfg.Concurrency)
		opts = append(opts, vegeta.Workers(min(n, vegeta.DefaultWorkers)), vegeta.MaxWorkers(n))
	}
	return vegeta.NewAttacker(opts...), pacer
}

// collect adds every result to col (and plt) until the attack ends; ctx
// stops sending early, and it then reports interrupted.
func collect(ctx context.Context, atk *vegeta.Attacker, results <-chan *vegeta.Result, col *Collector, plt *plot.Plot) (interrupted bool, err error) {
	done := ctx.Done()
	for {
		select {
		case r, ok := <-results:
			if !ok {
				return interrupted, nil
			}
			col.Add(r)
			if plt == nil {
				continue
			}
			// Warmup results go in too (labelled): the plot orders points
			// by sequence number and would stall on a gap.
			if err := plt.Add(r); err != nil {
				atk.Stop()
				go func() { // let vegeta's workers finish and exit
					for range results {
					}
				}()
				return interrupted, fmt.Errorf("plot: %w", err)
			}
		case <-done:
			// Stop sending; in-flight requests still complete and are
			// drained from results before the channel closes.
			atk.Stop()
			interrupted = true
			done = nil
		}
	}
}

// startProgress prints a line every cfg.Progress until the returned func is
// called; that func waits for the printer to exit so nothing is written to
// out after Run returns (out may be a test's buffer).
func startProgress(cfg *Config, out io.Writer, start time.Time, sent *atomic.Uint64, col *Collector) func() {
	if cfg.Progress <= 0 {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(cfg.Progress)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case now := <-t.C:
				fmt.Fprintln(out, progressLine(now.Sub(start), sent.Load(), col.Snapshot(), cfg.Warmup))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
		})
	}
}

func progressLine(elapsed time.Duration, sent uint64, p Progress, warmup time.Duration) string {
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(sent) / s
	}
	// sent counts warmup requests too, so in-flight is sent minus every
	// completed response; the quality figures cover only the measured window.
	inFlight := sent - min(sent, p.Done+p.WarmupDone)
	line := fmt.Sprintf("[%7.1fs] sent %d (%.1f/s)  in flight %d", elapsed.Seconds(), sent, rate, inFlight)
	if elapsed < warmup {
		return line + fmt.Sprintf("  warming up (%d responses excluded)", p.WarmupDone)
	}
	if p.Done == 0 {
		return line + "  measured 0"
	}
	return line + fmt.Sprintf("  measured %d  success %.1f%%  p50 %s  p99 %s",
		p.Done, 100*p.SuccessRate, p.P50.Round(time.Microsecond), p.P99.Round(time.Microsecond))
}

package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/secure-script-executor/executor/httpapi"
	"github.com/secure-script-executor/executor/jailproc"
	"github.com/secure-script-executor/executor/metrics"
	"github.com/secure-script-executor/executor/pool"
)

// App is the assembled server: supervisor, pool, metrics and HTTP API.
type App struct {
	cfg     config
	log     *slog.Logger
	sup     *jailproc.Supervisor
	pool    *pool.Pool
	metrics *metrics.Metrics
	api     *httpapi.Server

	ln         *answerTracker
	metricsSrv *http.Server
	failed     chan error

	selftestOK  atomic.Bool
	python      atomic.Pointer[httpapi.PythonRuntime] // for GET /runtime; see probeRuntime
	stopSelf    context.CancelFunc
	selftestEnd chan struct{}
}

// NewApp builds every part from cfg. It starts the pool (warming begins in the
// background) but does not listen yet.
func NewApp(cfg config, log *slog.Logger) (*App, error) {
	sup, err := jailproc.New(jailproc.Config{
		NsjailPath:        cfg.NsjailPath,
		PythonBin:         cfg.PythonBin,
		PythonPath:        cfg.PythonPath,
		Preload:           cfg.Preload,
		Timeout:           cfg.Timeout,
		MaxLifetime:       cfg.MaxIdleAge + cfg.Timeout + time.Minute,
		MemoryLimit:       cfg.MemoryLimit,
		AddressSpaceLimit: cfg.AddressSpaceLimit,
		MaxProcs:          cfg.MaxProcs,
		CPUMsPerSec:       cfg.CPUMsPerSec,
		MaxOpenFiles:      cfg.MaxOpenFiles,
		TmpSize:           cfg.TmpSize,
		MaxStdout:         int(cfg.MaxStdout),
		MaxStderr:         int(cfg.MaxStderr),
		MaxResult:         int(cfg.MaxResult),
		Cgroups:           jailproc.CgroupMode(cfg.Cgroups),
		CgroupRoot:        cfg.CgroupRoot,
		CgroupParent:      cfg.CgroupParent,
		SeccompPolicy:     cfg.SeccompPolicy,
		Log: func(msg string, args ...any) {
			log.Warn(msg, args...)
		},
	}, jailproc.UIDRange{Base: cfg.UIDBase, Size: uidRangeSize(cfg.MaxWorkers)})
	if err != nil {
		return nil, err
	}
	if v, why := sup.Cgroups(); v == jailproc.CgroupNone {
		log.Warn("NO CGROUP LIMITS: jails are limited by rlimits only (memory by RLIMIT_AS, processes by RLIMIT_NPROC); set --cgroups=required to refuse this",
			"reason", why)
	} else {
		attrs := []any{"version", v.String(), "memory_limit", formatSize(cfg.MemoryLimit), "max_procs", cfg.MaxProcs}
		if why != "" {
			// What the setup had to do, such as moving the container's
			// processes out of a cgroup v2 namespace root.
			attrs = append(attrs, "setup", why)
		}
		if on, _ := sup.CPUCap(); on {
			attrs = append(attrs, "cpu_ms_per_sec", cfg.CPUMsPerSec)
		}
		log.Info("cgroup limits enforced", attrs...)
		if on, why := sup.CPUCap(); !on && why != "" {
			log.Warn("NO CPU CAP: a jail may use every core while it runs (RLIMIT_CPU still bounds its total)", "reason", why)
		}
	}
	if len(cfg.APIKeys) == 0 {
		log.Warn("NO API KEYS: /execute and /execute/batch are open to anyone who can reach the port; set --api-keys-file or EXECUTOR_API_KEYS")
	}

	a := &App{cfg: cfg, log: log, sup: sup, failed: make(chan error, 2), selftestEnd: make(chan struct{})}
	reg := prometheus.NewRegistry()
	a.metrics = metrics.New(reg, metrics.StatFunc(func() pool.Stat { return a.pool.Stat() }), buildInfo())
	a.pool, err = pool.New(pool.Config{
		Spawn: func(ctx context.Context) (pool.Worker, error) {
			p, err := sup.Start(ctx)
			if err != nil {
				return nil, err
			}
			return p, nil
		},
		WarmTarget:     cfg.WarmWorkers,
		MaxWorkers:     cfg.MaxWorkers,
		Cold:           cfg.PoolMode == "cold",
		AcquireTimeout: cfg.AcquireTimeout,
		MaxIdleAge:     cfg.MaxIdleAge,
		Observer:       a.metrics,
	})
	if err != nil {
		return nil, err
	}

	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)})
	apiCfg := httpapi.Config{
		MaxBodyBytes:    int(cfg.MaxBody),
		Timeout:         cfg.Timeout,
		MemoryLimit:     cfg.MemoryLimit,
		AcquireMargin:   cfg.AcquireTimeout + time.Second,
		MaxBatchRecords: cfg.MaxBatchRecords,
		APIKeys:         cfg.APIKeys,
		APIKeyNames:     cfg.keyNames(),
		FairShareSlots:  cfg.MaxWorkers,
		FairShareWait:   cfg.AcquireTimeout,
		Logger:          log,
		Recorder:        a.metrics,
		LogScripts:      cfg.LogScripts,
		ReadTimeout:     cfg.ReadTimeout,
		IdleTimeout:     cfg.IdleTimeout,
	}
	if len(cfg.APIKeys) > 0 {
		apiCfg.KeyRecorder = metrics.NewKeys(reg, httpapi.KeyNames(apiCfg.APIKeys, apiCfg.APIKeyNames))
	}
	if cfg.MetricsAddr == "" {
		apiCfg.MetricsHandler = metricsHandler
	} else {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metricsHandler)
		a.metricsSrv = &http.Server{Addr: cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	a.api = httpapi.New(apiCfg, (*runner)(a))
	return a, nil
}

// uidRangeSize is how many host uids jails may use. More than MaxWorkers:
// puddle frees a destroyed worker's slot at once while the jail is still being
// torn down in the background, holding its uid for a few milliseconds more,
// so a replacement must find another uid free.
func uidRangeSize(maxWorkers int) int { return 4*maxWorkers + 16 }

// runner adapts the pool to the API: ready also requires the self-test.
type runner App

func (r *runner) Run(ctx context.Context, req executor.Request) (executor.Result, error) {
	return r.pool.Run(ctx, req)
}

func (r *runner) Ready() error {
	if err := r.pool.Ready(); err != nil {
		return err
	}
	if !r.selftestOK.Load() {
		return errors.New("the sandbox self-test has not passed yet")
	}
	return nil
}

// ReadyDetails tells operators, in /readyz, how the jails are limited: above
// all whether cgroup limits are enforced or only rlimits.
func (r *runner) ReadyDetails() map[string]string {
	v, why := r.sup.Cgroups()
	d := map[string]string{"pool_mode": r.cfg.PoolMode, "cgroups": v.String(), "cpu_cap": "off"}
	if v == jailproc.CgroupNone {
		d["cgroups"] = "none: memory and processes are limited by rlimits only (" + why + ")"
	}
	if on, why := r.sup.CPUCap(); on {
		d["cpu_cap"] = fmt.Sprintf("%d ms/s", r.cfg.CPUMsPerSec)
	} else if why != "" {
		d["cpu_cap"] = "off: " + why
	}
	return d
}

// Start listens on the configured address and starts the sandbox self-test.
func (a *App) Start() error {
	inner, err := net.Listen("tcp", net.JoinHostPort(a.cfg.Host, strconv.Itoa(a.cfg.Port)))
	if err != nil {
		return err
	}
	ln := &answerTracker{Listener: inner, conns: make(map[*trackedConn]struct{})}
	a.ln = ln
	go func() {
		if err := a.api.Listen(ln); err != nil {
			a.failed <- fmt.Errorf("api listener: %w", err)
		}
	}()
	if a.metricsSrv != nil {
		mln, err := net.Listen("tcp", a.metricsSrv.Addr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
		go func() {
			if err := a.metricsSrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.failed <- fmt.Errorf("metrics listener: %w", err)
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stopSelf = cancel
	go a.selftest(ctx)
	a.log.Info("listening", "addr", ln.Addr().String(), "metrics_addr", a.cfg.MetricsAddr, "pool_mode", a.cfg.PoolMode,
		"warm_workers", a.cfg.WarmWorkers, "max_workers", a.cfg.MaxWorkers, "api_keys", len(a.cfg.APIKeys), "nsjail", a.cfg.NsjailPath)
	return nil
}

// selftestScript must come back exactly as selftestWant; anything else means
// the jail does not work as built (missing mounts, a broken interpreter).
const selftestScript = "def main(x):\n    return {'sum': sum(x), 'ok': True}\n"

var selftestWant = []byte(`{"sum":6,"ok":true}`)

// selftest runs one jailed script before the server reports ready, and again
// every few seconds until it passes: the sandbox may start working later
// (nsjail installed, a capability granted).
func (a *App) selftest(ctx context.Context) {
	defer close(a.selftestEnd)
	delay := 100 * time.Millisecond
	var lastErr string
	for {
		if a.pool.Ready() == nil {
			res, err := a.pool.Run(ctx, executor.Request{Mode: executor.ModeSingle, Script: []byte(selftestScript), Input: []byte("[1,2,3]")})
			var msg string
			switch {
			case err != nil:
				msg = err.Error()
			case res.Status != executor.StatusOK:
				msg = fmt.Sprintf("status %s: %+v", res.Status, res.Error)
			case !bytes.Equal(bytes.ReplaceAll(res.Value, []byte(" "), nil), selftestWant):
				msg = fmt.Sprintf("unexpected result %s", res.Value)
			default:
				a.probeRuntime(ctx)
				a.selftestOK.Store(true)
				a.log.Info("sandbox self-test passed", "duration_ms", float64(res.Duration.Microseconds())/1000)
				return
			}
			if msg != lastErr {
				a.log.Error("sandbox self-test failed; not ready", "err", msg)
				lastErr = msg
			}
		} else if err := a.pool.Ready(); errors.Is(err, pool.ErrSandboxUnavailable) && err.Error() != lastErr {
			lastErr = err.Error()
			a.log.Error("SANDBOX UNAVAILABLE: no script will run until nsjail can start jails; retrying in the background",
				"err", err, "fix", "check --nsjail-path, that the server runs as root with CAP_SYS_ADMIN and that user namespaces are allowed; "+
					"in a container: docker run --privileged, or privileged: true in Kubernetes (docs/DEPLOY.md)")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// Addr is the API's listening address.
func (a *App) Addr() string { return a.ln.Addr().String() }

// Failed delivers an error if a listener stops unexpectedly.
func (a *App) Failed() <-chan error { return a.failed }

// Close shuts down in order: stop accepting and drain in-flight requests
// (bounded by ctx), then close the pool, which destroys every worker.
func (a *App) Close(ctx context.Context) error {
	var errs []error
	if a.stopSelf != nil {
		a.stopSelf()
		<-a.selftestEnd
	}
	if a.ln != nil {
		if err := a.api.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
			// Past the grace, Shutdown cancelled the runs in flight. Their
			// handlers answer 503 within milliseconds; let them, so a
			// client gets "shutting down, retry" rather than a connection
			// closed by the exiting process.
			a.ln.waitAnswered(2 * time.Second)
		}
	}
	if a.metricsSrv != nil {
		a.metricsSrv.Shutdown(ctx)
	}
	a.pool.Close()
	if err := a.sup.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// answerTracker is the API listener. It knows which connections have read a
// request that has not been answered yet, so a shutdown past its grace can
// wait for the answers to the runs it cancelled.
type answerTracker struct {
	net.Listener
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	t *answerTracker
	// awaiting: bytes were read since the last write, i.e. a request is
	// being handled (a partial request counts too).
	awaiting atomic.Bool
	closed   sync.Once
}

func (t *answerTracker) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc, nil
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.awaiting.Store(true)
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.awaiting.Store(false)
	return n, err
}

func (c *trackedConn) Close() error {
	c.closed.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// waitAnswered waits until no connection awaits an answer, or limit.
func (t *answerTracker) waitAnswered(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		waiting := false
		t.mu.Lock()
		for c := range t.conns {
			waiting = waiting || c.awaiting.Load()
		}
		t.mu.Unlock()
		if !waiting {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func buildInfo() metrics.BuildInfo {
	info := metrics.BuildInfo{Version: "dev", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				info.Revision = s.Value
			}
		}
	}
	return info
}

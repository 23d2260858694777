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

	ln         net.Listener
	metricsSrv *http.Server
	failed     chan error

	selftestOK  atomic.Bool
	python      atomic.Pointer[httpapi.PythonRuntime] // for GET /runtime; see probeRuntime
	stopSelf    context.CancelFunc
	selftestEnd chan struct{}
}

// NewApp builds every part from cfg, a complete configuration from
// parseConfig: every package gets every value from it. It starts the pool
// (warming begins in the background) but does not listen yet.
func NewApp(cfg config, log *slog.Logger) (*App, error) {
	sup, err := newSupervisor(cfg, log)
	if err != nil {
		return nil, err
	}
	uids := sup.UIDs()
	log.Info("host uid range claimed for jails", "uids", fmt.Sprintf("%d-%d", uids.Base, uids.Base+uids.Size-1), "lock_dir", sup.Config().UIDLockDir)
	logSandboxLimits(cfg, log, sup)
	if len(cfg.APIKeys) == 0 {
		log.Warn("NO API KEYS: /execute and /execute/batch are open to anyone who can reach the port; set --api-keys-file or EXECUTOR_API_KEYS")
	}
	a := &App{cfg: cfg, log: log, sup: sup, failed: make(chan error, 2), selftestEnd: make(chan struct{})}
	reg := prometheus.NewRegistry()
	a.metrics = metrics.New(reg, metrics.StatFunc(func() pool.Stat { return a.pool.Stat() }), buildInfo())
	a.pool, err = pool.New(a.poolConfig())
	if err != nil {
		sup.Close() // releases the uid range
		return nil, err
	}
	a.api = httpapi.New(a.apiConfig(reg), (*runner)(a))
	applyMemoryLimit(cfg, log)
	applyGCPercent(log)
	return a, nil
}

// newSupervisor claims the jails' uid range host-wide: the one --uid-base
// names, or, when --uid-base was left at its default, the first free range
// at or above it, so that several servers started with default settings on
// one host (replicas on one node, a second `make run`) each get their own
// instead of the second refusing to start. A --uid-base given explicitly is
// taken as meant: if another server holds it, starting fails (exit 2).
func newSupervisor(cfg config, log *slog.Logger) (*jailproc.Supervisor, error) {
	size := uidRangeSize(cfg.MaxWorkers)
	step := (size + uidChunk - 1) / uidChunk * uidChunk
	base := cfg.UIDBase.Base
	for try := 1; ; try++ {
		sup, err := jailproc.New(supervisorConfig(cfg, log), jailproc.UIDRange{Base: base, Size: size})
		if cfg.UIDBase.Explicit || !errors.Is(err, jailproc.ErrUIDRangeTaken) || try == maxUIDRangeTries || base+step+size > 1<<31-2 {
			return sup, err
		}
		log.Info("uid range held by another server; trying the next one", "uids", fmt.Sprintf("%d-%d", base, base+size-1), "err", err)
		base += step
	}
}

// uidChunk is the granularity of jailproc's host-wide uid claims; ranges
// tried one after the other start on its multiples, so they never share a
// chunk. maxUIDRangeTries bounds the search.
const (
	uidChunk         = 64
	maxUIDRangeTries = 256
)

// spawnTimeout bounds one spawn plus its ready handshake, in the pool and in
// the supervisor alike.
var spawnTimeout = jailproc.DefaultConfig().StartTimeout

func supervisorConfig(cfg config, log *slog.Logger) jailproc.Config {
	return jailproc.Config{
		NsjailPath:        cfg.NsjailPath,
		PythonBin:         cfg.PythonBin,
		PythonPath:        cfg.PythonPath,
		Preload:           cfg.Preload,
		Timeout:           cfg.Timeout,
		StartTimeout:      spawnTimeout,
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
		Isolation:         jailproc.Isolation(cfg.Isolation),
		CellMaxForks:      cfg.CellMaxForks,
		CellMaxAge:        cfg.CellMaxAge,
		Log: func(msg string, args ...any) {
			log.Warn(msg, args...)
		},
	}
}

// logSandboxLimits says at start how the jails are limited, loudly when
// cgroup limits or the CPU cap are missing.
func logSandboxLimits(cfg config, log *slog.Logger, sup *jailproc.Supervisor) {
	v, why := sup.Cgroups()
	if v == jailproc.CgroupNone {
		log.Warn("NO CGROUP LIMITS: jails are limited by rlimits only (memory by RLIMIT_AS, processes by RLIMIT_NPROC); set --cgroups=required to refuse this",
			"reason", why)
		return
	}
	attrs := []any{"version", v.String(), "memory_limit", formatSize(cfg.MemoryLimit), "max_procs", cfg.MaxProcs}
	if why != "" {
		// What the setup had to do, such as moving the container's
		// processes out of a cgroup v2 namespace root.
		attrs = append(attrs, "setup", why)
	}
	on, cpuWhy := sup.CPUCap()
	if on {
		attrs = append(attrs, "cpu_ms_per_sec", cfg.CPUMsPerSec)
	}
	log.Info("cgroup limits enforced", attrs...)
	if !on && cpuWhy != "" {
		log.Warn("NO CPU CAP: a jail may use every core while it runs (RLIMIT_CPU still bounds its total)", "reason", cpuWhy)
	}
}

func (a *App) poolConfig() pool.Config {
	return pool.Config{
		Spawn: func(ctx context.Context) (pool.Worker, error) {
			p, err := a.sup.Start(ctx)
			if err != nil {
				return nil, err
			}
			return p, nil
		},
		WarmTarget:     a.cfg.WarmWorkers,
		MaxWorkers:     a.cfg.MaxWorkers,
		Cold:           a.cfg.PoolMode == "cold",
		AcquireTimeout: a.cfg.AcquireTimeout,
		MaxIdleAge:     a.cfg.MaxIdleAge,
		SpawnTimeout:   spawnTimeout,
		Observer:       poolObserver{a.metrics, a.log},
	}
}

// apiConfig is the HTTP API's configuration; /metrics is served on the API
// port unless --metrics-addr names its own.
func (a *App) apiConfig(reg *prometheus.Registry) httpapi.Config {
	cfg := a.cfg
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelError)})
	apiCfg := httpapi.Config{
		MaxBodyBytes:    int(cfg.MaxBody),
		Timeout:         cfg.Timeout,
		MemoryLimit:     cfg.MemoryLimit,
		MaxBatchRecords: cfg.MaxBatchRecords,
		APIKeys:         cfg.APIKeys,
		APIKeyNames:     cfg.keyNames(),
		FairShareSlots:  cfg.MaxWorkers,
		FairShareWait:   cfg.AcquireTimeout,
		Logger:          a.log,
		Recorder:        a.metrics,
		LogScripts:      cfg.LogScripts,
		ReadTimeout:     cfg.ReadTimeout,
		IdleTimeout:     cfg.IdleTimeout,
	}
	apiCfg.MaxInflightBodyBytes = cfg.MaxInflightBody
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
	return apiCfg
}

// poolObserver forwards the pool's measurements to the metrics and logs
// every failed worker teardown, which the pool also counts
// (executor_pool_kill_failures_total).
type poolObserver struct {
	*metrics.Metrics
	log *slog.Logger
}

func (o poolObserver) ObserveKillError(err error) {
	o.log.Warn("worker teardown failed; something of the jail may be left behind", "err", err)
	o.Metrics.ObserveKillError(err)
}

// uidRangeSize is how many host uids jails may use. MaxWorkers would be
// enough: the pool keeps a destroyed worker's slot until its Kill has
// returned, and Kill frees the uid before it returns, so at most MaxWorkers
// uids are ever taken. The spare ones let a freed uid rest before it is
// handed out again (uids are reused least recently freed first), so nothing
// left of an old jail could ever share a uid with a new jail's script.
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
	d := map[string]string{"isolation": r.cfg.Isolation, "pool_mode": r.cfg.PoolMode, "cgroups": v.String(), "cpu_cap": "off"}
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
	ln, err := net.Listen("tcp", net.JoinHostPort(a.cfg.Host, strconv.Itoa(a.cfg.Port)))
	if err != nil {
		return err
	}
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
		"isolation", a.cfg.Isolation, "warm_workers", a.cfg.WarmWorkers, "max_workers", a.cfg.MaxWorkers, "api_keys", len(a.cfg.APIKeys), "nsjail", a.cfg.NsjailPath)
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
			res, err := a.pool.Run(ctx, executor.Request{Mode: executor.ModeSingle, Script: []byte(selftestScript), Input: []byte("[1,2,3]"), Timeout: a.cfg.Timeout})
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
// (bounded by ctx; past it, httpapi cancels the runs and lets their clients
// be answered 503), then close the pool, which destroys every worker.
func (a *App) Close(ctx context.Context) error {
	var errs []error
	if a.stopSelf != nil {
		a.stopSelf()
		<-a.selftestEnd
	}
	if a.ln != nil {
		if err := a.api.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		}
	}
	if a.metricsSrv != nil {
		if err := a.metricsSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("metrics listener: %w", err))
		}
	}
	a.pool.Close()
	if err := a.sup.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// buildInfo is the server's version, as executor --version prints it and
// executor_build_info exports it.
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

// Package httpapi is the HTTP front of the executor: it decodes and checks
// requests, hands each run to a Runner, and maps results and errors to the
// JSON API documented in docs/API.md. It does not know about processes,
// jails or pools beyond the Runner interface and the pool's sentinel errors.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
)

// Runner runs scripts. *pool.Pool implements it.
type Runner interface {
	// Run executes one request in one single-use worker.
	// Errors: pool.ErrOverloaded, errors wrapping pool.ErrSandboxUnavailable,
	// pool.ErrClosed; anything else is internal.
	Run(ctx context.Context, req executor.Request) (executor.Result, error)
	// Ready returns nil when warm workers exist and the sandbox works, else
	// an error whose text is safe to show operators in /readyz.
	Ready() error
}

// Route templates, used as the route label in logs and metrics.
const (
	RouteExecute   = "/execute"
	RouteBatch     = "/execute/batch"
	RouteHealthz   = "/healthz"
	RouteReadyz    = "/readyz"
	RouteRuntime   = "/runtime"
	RouteOpenAPI   = "/openapi.json"
	RouteMetrics   = "/metrics"
	RouteUnmatched = "unmatched"
)

// Server is the HTTP API. Create it with New.
type Server struct {
	cfg    Config
	runner Runner
	app    *fiber.App
	log    *slog.Logger
	rec    Recorder
	budget *bodyBudget
	keys   KeyRecorder
	gate   *fairGate // nil: no fair sharing (no API keys, or FairShareSlots 0)

	// routes maps each served path to its template and methods, for route
	// labels and 405 answers.
	routes map[string]*routeInfo

	// runBase is the parent of every run's context. Shutdown cancels it once
	// its grace has passed, so runs still in flight are abandoned instead of
	// holding the process open; until then a client's run is never cut short
	// by a shutdown.
	runBase    context.Context
	cancelRuns context.CancelFunc
	// inflight knows which requests still await their answer.
	inflight *inflight

	mu     sync.Mutex
	ln     net.Listener
	closed bool
}

// New builds a Server. It does not listen; call Listen, or use App with
// app.Test in tests.
func New(cfg Config, runner Runner) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:      cfg,
		runner:   runner,
		log:      cfg.Logger,
		rec:      cfg.Recorder,
		keys:     cfg.KeyRecorder,
		routes:   make(map[string]*routeInfo),
		inflight: newInflight(),
		budget:   newBodyBudget(cfg.MaxInflightBodyBytes),
	}
	if len(cfg.APIKeys) > 0 && cfg.FairShareSlots > 0 {
		s.gate = newFairGate(cfg.FairShareSlots)
	}
	s.runBase, s.cancelRuns = context.WithCancel(context.Background())

	s.app = fiber.New(fiber.Config{
		BodyLimit:    cfg.MaxBodyBytes,
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout,
		IdleTimeout:  cfg.IdleTimeout,
		ErrorHandler: s.handleError,
		// Exact paths only: what docs/API.md lists is what is served, and
		// route labels stay exact.
		CaseSensitive:         true,
		StrictRouting:         true,
		DisableStartupMessage: true,
	})
	s.app.Server().ConnState = s.inflight.connState
	s.app.Use(s.observe, s.recoverPanic)

	s.route(fiber.MethodPost, RouteExecute, s.requireAPIKey, s.handleExecute)
	s.route(fiber.MethodPost, RouteBatch, s.requireAPIKey, s.handleBatch)
	s.route(fiber.MethodGet, RouteHealthz, s.handleHealthz)
	s.route(fiber.MethodGet, RouteReadyz, s.handleReadyz)
	s.route(fiber.MethodGet, RouteRuntime, s.handleRuntime)
	s.route(fiber.MethodGet, RouteOpenAPI, s.handleOpenAPI)
	if cfg.MetricsHandler != nil {
		s.route(fiber.MethodGet, RouteMetrics, adaptor.HTTPHandler(cfg.MetricsHandler))
	}
	return s
}

type routeInfo struct {
	template string
	methods  []string
}

func (s *Server) route(method, path string, handlers ...fiber.Handler) {
	r := s.routes[path]
	if r == nil {
		r = &routeInfo{template: path}
		s.routes[path] = r
	}
	s.app.Add(method, path, handlers...)
	r.methods = append(r.methods, method)
	if method == fiber.MethodGet {
		// Add, unlike app.Get, does not register HEAD for GET.
		s.app.Add(fiber.MethodHead, path, handlers...)
		r.methods = append(r.methods, fiber.MethodHead)
	}
}

// routeLabel maps a path to its route template. Routes are exact
// (StrictRouting, CaseSensitive), so a map lookup is the whole match. The
// template, not path, is returned: path aliases a buffer fasthttp reuses, and
// metric labels live forever.
func (s *Server) routeLabel(path string) string {
	if r, ok := s.routes[path]; ok {
		return r.template
	}
	return RouteUnmatched
}

// allowedMethods lists the methods path accepts; nil for unknown paths.
func (s *Server) allowedMethods(path string) []string {
	if r, ok := s.routes[path]; ok {
		return r.methods
	}
	return nil
}

// App returns the underlying fiber app, for app.Test and custom listeners.
func (s *Server) App() *fiber.App { return s.app }

// ErrServerClosed is returned by Listen after Shutdown was called.
var ErrServerClosed = errors.New("httpapi: server closed")

// Listen serves on ln until Shutdown, then returns nil. It returns
// ErrServerClosed if Shutdown was called first.
func (s *Server) Listen(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	// Every connection's bytes go through the strict request framer and the
	// body budget first (conncheck.go); keep this wrapper the outermost, the
	// error handler finds its refusals through fasthttp's conn.
	if err := s.app.Listener(s.checkConns(ln)); err != nil {
		return fmt.Errorf("httpapi: serve: %w", err)
	}
	return nil
}

// answerGrace bounds how long Shutdown, past its grace, waits for the
// handlers of the runs it cancelled to write their 503 answers (normally a
// few milliseconds).
const answerGrace = 2 * time.Second

// Shutdown stops accepting connections and waits for in-flight requests to
// be answered. If ctx ends first, runs still in flight are cancelled, Shutdown
// waits (at most answerGrace) until their clients have been answered 503
// sandbox_unavailable, and returns ctx's error. Close the pool only after
// Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	ln := s.ln
	s.mu.Unlock()

	err := s.app.ShutdownWithContext(ctx)
	// fasthttp only closes listeners Serve has registered; a Listen that
	// raced with us may not have been, so close ours too. A second Close of
	// an already-closed listener only returns an error, which is ignored.
	if ln != nil {
		_ = ln.Close()
	}
	// Past the grace, in-flight runs are abandoned; with nothing in flight
	// this just releases the context.
	s.cancelRuns()
	if err != nil {
		if !s.inflight.wait(answerGrace) {
			s.log.Warn("httpapi: shutdown: requests still unanswered after cancelling their runs", "waited", answerGrace.String())
		}
		return fmt.Errorf("httpapi: shutdown: %w", err)
	}
	return nil
}

// infoKey is the fiber Locals key of a request's *requestInfo.
const infoKey = "httpapi.request"

// requestInfo collects what the request's one log line and metrics need.
// Handlers fill it in; observe (or handleError, for unrouted requests)
// reports it.
type requestInfo struct {
	id      string
	start   time.Time
	outcome string // "ok" or an error type
	cause   error  // logged only

	ran         bool          // the request reached the runner
	usage       *usageJSON    // the run's usage, for script-error answers
	runTime     time.Duration // the whole Runner.Run call
	execTime    time.Duration // the script's own run (Result.Duration)
	scriptBytes int
	stdoutBytes int
	stderrBytes int

	// Only with Config.LogScripts.
	script, input, stdout, stderr string

	// key is the index of the request's API key in Config.APIKeys (-1: none
	// or no keys configured), keyName its name for metrics.
	key     int
	keyName string
}

// rejectedOutcomes are the outcomes of /execute and /execute/batch requests
// refused before reaching the runner that are counted as executions (with no
// duration). Other refusals (not_found, method_not_allowed, request_timeout,
// headers_too_large) are not execution requests and show only in the HTTP
// metrics.
var rejectedOutcomes = map[string]bool{
	TypeInvalidRequest:       true,
	TypeUnauthorized:         true,
	TypeRequestTooLarge:      true,
	TypeUnsupportedMediaType: true,
	TypeOverloaded:           true, // by the body budget; the runner's are counted as ran
}

// beginRequest assigns the request id and starts the clock.
func (s *Server) beginRequest(c *fiber.Ctx) *requestInfo {
	info := &requestInfo{id: requestID(c.Get(fiber.HeaderXRequestID)), start: time.Now(), outcome: "ok", key: -1}
	c.Locals(infoKey, info)
	c.Set(fiber.HeaderXRequestID, info.id)
	return info
}

// finishRequest writes the request's log line and HTTP metrics.
func (s *Server) finishRequest(c *fiber.Ctx, info *requestInfo) {
	elapsed := time.Since(info.start)
	status := c.Response().StatusCode()
	route := s.routeLabel(c.Path())
	method := methodLabel(c.Method())
	s.rec.ObserveHTTP(route, method, status, elapsed)
	if !info.ran && (route == RouteExecute || route == RouteBatch) && rejectedOutcomes[info.outcome] {
		// A request refused before it reached the runner is still an
		// execution request: counting it keeps executions_total the
		// denominator of every ratio and shows client mistakes by type.
		s.rec.ObserveExecution(info.outcome, 0, 0, 0)
	}
	level := slog.LevelInfo
	switch {
	case status >= 500 && info.outcome == TypeInternal:
		level = slog.LevelError
	case status >= 500 || status == fiber.StatusTooManyRequests:
		level = slog.LevelWarn
	}
	// Background: the request's own context is not a context.Context here,
	// and the log line must be written even for cancelled requests.
	s.log.LogAttrs(context.Background(), level, "http request", s.logAttrs(c, info, method, route, elapsed)...)

	// fasthttp keeps a connection's body buffer for its next request, and
	// pooled contexts keep theirs: idle keep-alive connections would pin
	// the largest body they ever read. Retire large ones now; everything
	// that outlives the request was copied out. (ReduceMemoryUsage would do
	// it too, but in fasthttp 1.51 it drops pipelined responses.)
	c.Request().ReleaseBody(smallBody)
}

// logAttrs are the fields of a request's log line.
func (s *Server) logAttrs(c *fiber.Ctx, info *requestInfo, method, route string, elapsed time.Duration) []slog.Attr {
	reqBytes := len(c.Request().Body())
	if cl := c.Request().Header.ContentLength(); reqBytes == 0 && cl > 0 {
		reqBytes = cl // the body was refused before it was read
	}
	attrs := []slog.Attr{
		slog.String("request_id", info.id),
		slog.String("method", method),
		slog.String("route", route),
		slog.Int("status", c.Response().StatusCode()),
		slog.String("outcome", info.outcome),
		slog.Float64("duration_ms", ms(elapsed)),
		slog.Int("request_bytes", reqBytes),
		slog.Int("response_bytes", len(c.Response().Body())),
	}
	if info.scriptBytes > 0 {
		attrs = append(attrs, slog.Int("script_bytes", info.scriptBytes))
	}
	if info.ran {
		// queue_wait_ms is derived: the time Runner.Run took minus the
		// script's own run time, so it is the wait for a worker plus the
		// hand-over and output collection around the run (normally well
		// under a millisecond). See docs/OBSERVABILITY.md#logs.
		attrs = append(attrs,
			slog.Float64("queue_wait_ms", ms(max(info.runTime-info.execTime, 0))),
			slog.Float64("exec_duration_ms", ms(info.execTime)),
			slog.Int("stdout_bytes", info.stdoutBytes),
			slog.Int("stderr_bytes", info.stderrBytes))
	}
	if info.cause != nil {
		attrs = append(attrs, slog.String("error", info.cause.Error()))
	}
	if s.cfg.LogScripts && info.scriptBytes > 0 {
		attrs = append(attrs,
			slog.String("script", info.script),
			slog.String("input", info.input),
			slog.String("stdout", info.stdout),
			slog.String("stderr", info.stderr))
	}
	return attrs
}

// observe is the outermost middleware. It turns a handler's error into its
// answer right here, rather than letting fiber call the ErrorHandler after
// the chain, so the status is final when the request is logged and counted.
func (s *Server) observe(c *fiber.Ctx) error {
	info := s.beginRequest(c)
	if err := c.Next(); err != nil {
		if werr := s.handleError(c, err); werr != nil {
			info.outcome, info.cause = TypeInternal, werr
			c.Status(fiber.StatusInternalServerError)
		}
	}
	s.finishRequest(c, info)
	if info.keyName != "" {
		// Only requests that reached the handlers carry a key.
		s.keys.ObserveKeyRequest(info.keyName, info.outcome)
	}
	return nil
}

// panicError carries a recovered panic to handleError.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string {
	return fmt.Sprintf("panic: %v\n%s", p.value, p.stack)
}

// recoverPanic turns a panic in a handler into a 500 internal answer; left
// alone, a panic would take down the whole fasthttp server.
func (s *Server) recoverPanic(c *fiber.Ctx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = internalError(&panicError{value: v, stack: debug.Stack()})
		}
	}()
	return c.Next()
}

// requestID returns the client's id when it is sane (so ids can be followed
// across services), else a new one. Sane: 1 to 128 printable ASCII
// characters without spaces, so it cannot forge log fields or headers.
func requestID(incoming string) string {
	if n := len(incoming); n > 0 && n <= 128 {
		ok := true
		for i := 0; i < n; i++ {
			if incoming[i] < 0x21 || incoming[i] > 0x7e {
				ok = false
				break
			}
		}
		if ok {
			// fiber's strings alias fasthttp's buffers; this one outlives
			// nothing, but copying costs little and removes the doubt.
			return strings.Clone(incoming)
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// methodLabel returns a constant string for the standard methods and "other"
// for anything else; the same labels as the metrics (executor.MethodLabels).
func methodLabel(m string) string { return executor.MethodLabel(m) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

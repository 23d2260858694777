package httpapi

import (
	"log/slog"

	"github.com/secure-script-executor/executor"
	"net/http"
	"strings"
	"time"
)

// Defaults for Config. They are applied in one place, Config.withDefaults;
// the server takes its flags' defaults from them and passes every value.
const (
	DefaultMaxBodyBytes    = 8 << 20 // 8 MiB
	DefaultTimeout         = executor.DefaultTimeout
	DefaultMaxBatchRecords = 10000
	DefaultReadTimeout     = 10 * time.Second
	DefaultIdleTimeout     = 60 * time.Second
	DefaultRetryAfter      = time.Second
	DefaultFairShareWait   = 2 * time.Second

	// writeTimeoutSlack is added to Timeout for the default WriteTimeout.
	writeTimeoutSlack = 30 * time.Second
)

// Config configures a Server. The zero value is usable: every field has a
// default, stated in its comment.
type Config struct {
	// MaxBodyBytes is the largest request body accepted; larger bodies are
	// answered with 413 request_too_large before they are read in full.
	// Default 8 MiB.
	MaxBodyBytes int

	// Timeout is the server's wall-clock limit for one run. A request's
	// timeout_ms may lower it, never raise it: the result is the request's
	// effective timeout, decided once and carried in executor.Request.Timeout
	// (the runner enforces it; the context handed to Runner.Run has no
	// deadline of its own). Default 5s.
	Timeout time.Duration

	// MemoryLimit is the server's memory limit of one run in bytes (the
	// sandbox's --memory-limit). A request's memory_limit_mb may lower it,
	// never raise it: larger values are clamped to it, as timeout_ms is.
	// Default 0: unknown, so a requested limit is passed on as asked and the
	// runner must not let it raise its own.
	MemoryLimit int64

	// MaxBatchRecords is the largest number of records /execute/batch accepts
	// in one request. Default 10000.
	MaxBatchRecords int

	// APIKeys, when not empty, makes /execute and /execute/batch require
	// "Authorization: Bearer <key>" with one of these keys. Keys are compared
	// in constant time and never logged. Empty strings are ignored, so a list
	// holding only empty strings leaves the API open. Health, readiness and
	// metrics never need a key. Default: none (open).
	APIKeys []string

	// APIKeyNames[i] names APIKeys[i] in metrics (the executor_api_key_*
	// series) and logs, so no secret is ever a label. A missing or empty
	// name is "key-N", N being the key's 1-based position among the
	// non-blank keys. Default: all positional.
	APIKeyNames []string

	// FairShareSlots, when positive and API keys are configured, is how many
	// requests may wait in the runner for a worker at once (give the pool's
	// MaxWorkers: the pool spawns for each waiting request, up to that many
	// at once, and fewer would slow spawning down). A request that finds
	// every slot taken waits in its own key's queue, and a freed slot goes
	// to the next key in round-robin order, so one key flooding the service
	// cannot starve the others. A slot is held only until the request has a
	// worker (pool.WithAcquired), so it does not bound how many scripts run.
	// Default 0: off, every request waits in the runner's own queue.
	FairShareSlots int

	// FairShareWait bounds a request's wait for its key's turn; past it the
	// request is answered 429 overloaded. Default 2s.
	FairShareWait time.Duration

	// KeyRecorder receives per-key metrics. Default: a no-op recorder.
	KeyRecorder KeyRecorder

	// Logger receives one line per request. Default: discard.
	Logger *slog.Logger

	// Recorder receives metrics. Default: a no-op recorder.
	Recorder Recorder

	// MetricsHandler, when set, is served at GET /metrics (e.g. a promhttp
	// handler). Default nil: the route does not exist.
	MetricsHandler http.Handler

	// LogScripts adds the script source, input, stdout and stderr to each
	// request's log line. For debugging only: scripts and their data may be
	// confidential. Default false.
	LogScripts bool

	// ReadTimeout bounds reading one request, headers and body, so a client
	// that drips bytes cannot hold a connection. Default 10s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one response. Default 30s + Timeout.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection may wait for its
	// next request. Default 60s.
	IdleTimeout time.Duration

	// RetryAfter is sent, rounded up to whole seconds (at least 1), in the
	// Retry-After header of 429 overloaded answers. Default 1s.
	RetryAfter time.Duration

	// MaxInflightBodyBytes bounds the request bodies held in memory at once,
	// across all connections. A body is reserved by its Content-Length (or
	// chunk by chunk) before it is read, and given back when its answer is
	// written; one that does not fit is refused with 429 overloaded and
	// Retry-After, unread. Bodies over 64 KiB may use only three quarters of
	// it, so small requests still get in. It must be at least
	// 4/3 x MaxBodyBytes for a largest body to fit at all.
	// Default: 4 x MaxBodyBytes, at least 16 MiB.
	MaxInflightBodyBytes int64
}

// withDefaults returns a copy of c with every unset field set to its default.
func (c Config) withDefaults() Config {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxBatchRecords <= 0 {
		c.MaxBatchRecords = DefaultMaxBatchRecords
	}
	// Copy the keys so a caller mutating its slice later cannot change who
	// is let in, and drop blanks so "" can never be a valid key.
	keys := make([]string, 0, len(c.APIKeys))
	for _, k := range c.APIKeys {
		if strings.TrimSpace(k) != "" {
			keys = append(keys, k)
		}
	}
	c.APIKeys, c.APIKeyNames = keys, KeyNames(c.APIKeys, c.APIKeyNames)
	if c.FairShareWait <= 0 {
		c.FairShareWait = DefaultFairShareWait
	}
	if c.KeyRecorder == nil {
		c.KeyRecorder = nopRecorder{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Recorder == nil {
		c.Recorder = nopRecorder{}
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = writeTimeoutSlack + c.Timeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.MaxInflightBodyBytes <= 0 {
		c.MaxInflightBodyBytes = max(4*int64(c.MaxBodyBytes), 16<<20)
	}
	return c
}

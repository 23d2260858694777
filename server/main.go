// Package server assembles the executor: configuration, the jail supervisor,
// the warm pool, metrics and the HTTP API, and their start-up and shutdown
// order. cmd/executor only adds signal handling.
package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Main runs the server until ctx is done, then shuts it down in order and
// returns the process exit code: 0 after a clean shutdown (or --help,
// --version), 2 for bad configuration, 1 when the server could not start.
// environ is the process environment as os.Environ returns it. started, when
// not nil, receives the running app once it listens (for tests).
func Main(ctx context.Context, args, environ []string, stderr io.Writer, started chan<- *App) int {
	cfg, err := parseConfig(args, getenvFrom(environ), stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errVersion):
		fmt.Fprintln(stderr, versionLine())
		return 0
	case err == nil:
		err = checkFiles(cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "executor: %v\n(run executor --help for every setting and its EXECUTOR_ variable)\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	for _, w := range unknownEnv(environ) {
		log.Warn(w)
	}
	app, err := NewApp(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if err := app.Start(); err != nil {
		log.Error("cannot listen", "err", err)
		app.Close(context.Background())
		return 1
	}
	if started != nil {
		started <- app
	}
	return serve(ctx, app, cfg, log)
}

// serve runs app until ctx is done or a listener fails, then closes it.
func serve(ctx context.Context, app *App, cfg config, log *slog.Logger) int {
	select {
	case <-ctx.Done():
		log.Info("shutting down", "grace", cfg.ShutdownGrace.String())
	case err := <-app.Failed():
		log.Error("server failed", "err", err)
		if err := app.Close(context.Background()); err != nil {
			log.Error("shutdown", "err", err)
		}
		return 1
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := app.Close(shutdownCtx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			// Exit 1: work was lost, which an operator may want to see.
			log.Error("shutdown grace exceeded: runs still in flight were cancelled and their clients answered 503 sandbox_unavailable",
				"grace", cfg.ShutdownGrace.String(), "err", err)
		} else {
			log.Error("shutdown", "err", err)
		}
		return 1
	}
	log.Info("stopped")
	return 0
}

// getenvFrom looks variables up in environ; the last entry of a name wins,
// as in os.Getenv.
func getenvFrom(environ []string) func(string) string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return func(k string) string { return env[k] }
}

// versionLine is what executor --version prints: the same build info as the
// executor_build_info metric.
func versionLine() string {
	bi := buildInfo()
	rev := bi.Revision
	if rev == "" {
		rev = "unknown revision"
	}
	return fmt.Sprintf("executor %s (%s, %s)", bi.Version, rev, bi.GoVersion)
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

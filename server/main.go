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

	"github.com/secure-script-executor/executor/jailproc"
)

// Main runs the server until ctx is done, then shuts it down in order and
// returns the process exit code: 0 after a clean shutdown, 2 for bad
// configuration (including a --uid-base range another server on this host
// holds), 1 when the server could not start. started, when not nil,
// receives the running app once it listens (for tests).
func Main(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, started chan<- *App) int {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "executor: %v\n(run executor --help for every setting and its EXECUTOR_ variable)\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	app, err := NewApp(cfg, log)
	if errors.Is(err, jailproc.ErrUIDRangeTaken) {
		// Configuration: another server on this host has these uids.
		log.Error("cannot start", "err", err)
		return 2
	}
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
	select {
	case <-ctx.Done():
		log.Info("shutting down", "grace", cfg.ShutdownGrace.String())
	case err := <-app.Failed():
		log.Error("server failed", "err", err)
		app.Close(context.Background())
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

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

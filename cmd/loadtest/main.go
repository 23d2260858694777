// Command loadtest sends load to the executor's POST /execute (or
// /execute/batch) and prints throughput, latency quantiles and counts per
// HTTP status and API error type. See docs/LOADTEST.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/secure-script-executor/executor/cmd/loadtest/internal/loadtest"
)

func main() {
	// Ctrl-C stops sending but still prints the summary of what completed,
	// which is usually what one wants from a run that was going badly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := loadtest.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Command bench is `make bench`: the raw spawn ceiling of this machine, then
// the warm and the cold server under bin/loadtest, as one markdown table
// (stdout and bench/out/<timestamp>/RESULTS.md). See docs/BENCHMARKS.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/secure-script-executor/executor/cmd/bench/internal/bench"
)

func main() {
	o, err := bench.ParseOptions(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	o.Log = os.Stderr
	o.Command = strings.Join(os.Args, " ")
	if c := strings.TrimSpace(os.Getenv("BENCH_COMMAND")); c != "" {
		o.Command = c
	}
	// Ctrl-C stops the loops and load, then servers and cgroups are cleaned up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	r, err := bench.Run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Print(r.Markdown())
	fmt.Fprintf(os.Stderr, "bench: wrote %s/RESULTS.md\n", o.OutDir)
}

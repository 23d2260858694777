// Command executor is the Secure Script Executor server: POST /execute runs a
// Python script's main() in a warm, single-use nsjail sandbox. Everything but
// signal handling lives in package server.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/secure-script-executor/executor/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := server.Main(ctx, os.Args[1:], os.Environ(), os.Stderr, nil)
	stop()
	os.Exit(code)
}

package server

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// memoryLimitFor is the Go runtime's soft memory limit for a body budget:
// what the server itself needs, plus each budgeted body byte about five times
// over (fasthttp's buffer, the decoded script, the request the runner gets,
// the frame written to the worker, and garbage not yet collected).
func memoryLimitFor(budget int64) int64 { return 64<<20 + 5*budget }

// applyMemoryLimit sets the soft memory limit derived from the body budget,
// unless the operator set GOMEMLIMIT (the runtime already applied it). Near
// the limit the collector runs more often instead of letting the heap double,
// so a burst of large bodies does not leave the process at twice its live
// memory. It is a soft limit: the server never fails for reaching it.
func applyMemoryLimit(cfg config, log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := memoryLimitFor(cfg.MaxInflightBody)
	debug.SetMemoryLimit(limit)
	log.Debug("Go memory limit set from --max-inflight-body", "limit", formatSize(limit), "max_inflight_body", formatSize(cfg.MaxInflightBody))
}

// gcPercent is the collector's GOGC unless the operator set one. The
// server's live heap is a few MiB and nearly all it allocates is one run's
// garbage, so at Go's default of 100 the collector ran every few
// milliseconds under load: 1.7% of the machine's CPU at 600 runs/s (perf,
// cell mode, closed loop c=16), beside 1.4% allocating. At 400 it runs a
// quarter as often, for a heap of a few tens of MiB; the soft memory limit
// above still bounds it (near the limit the collector runs more often).
const gcPercent = 400

// applyGCPercent sets gcPercent, unless the operator set GOGC (the runtime
// already applied it).
func applyGCPercent(log *slog.Logger) {
	if os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(gcPercent)
	log.Debug("Go collector target set", "gogc", gcPercent)
}

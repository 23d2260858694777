package httpapi

import (
	"encoding/json"
	"math"

	"github.com/secure-script-executor/executor"
)

// usageJSON is the "usage" object of every answer to a run that happened
// (200, and 422 script errors): what the run consumed. cpu_ms and
// memory_peak_bytes are left out when the server could not measure them (no
// cgroups): a made-up number would be worse than none.
type usageJSON struct {
	CPUMS           *float64 `json:"cpu_ms,omitempty"`
	MemoryPeakBytes *int64   `json:"memory_peak_bytes,omitempty"`
	WallMS          float64  `json:"wall_ms"`
}

// usageOf converts the runner's figures. A runner that does not fill in
// Usage.Wall still reports Duration, which measures the same interval (from
// handing the request to the worker to having its result).
func usageOf(res executor.Result) *usageJSON {
	u := res.Usage
	wall := u.Wall
	if wall == 0 {
		wall = res.Duration
	}
	out := &usageJSON{WallMS: ms(wall)}
	if u.CPUMeasured {
		cpu := ms(u.CPU)
		out.CPUMS = &cpu
	}
	if u.MemoryPeakMeasured {
		peak := u.MemoryPeak
		out.MemoryPeakBytes = &peak
	}
	return out
}

// MinMemoryLimitMB is the smallest memory_limit_mb a request may ask for:
// below it the interpreter itself does not fit, and the run would fail for a
// reason the script cannot fix. It equals the server's own minimum for
// --memory-limit.
const MinMemoryLimitMB = 16

const mib = 1 << 20

// memoryLimitMB decodes memory_limit_mb: an integral JSON number of at
// least MinMemoryLimitMB (so 64 and 64.0 both mean 64 MiB), or null for "not
// given". Values too large are saturated here and clamped to the server's
// limit later, as timeout_ms is.
func memoryLimitMB(raw json.RawMessage) (int64, *apiError) {
	n, ok := positiveInteger(raw)
	if !ok || (n != 0 && n < MinMemoryLimitMB) {
		return 0, invalidRequest("memory_limit_mb must be an integer number of MiB, at least %d; leave it out to get the server's limit",
			MinMemoryLimitMB)
	}
	return min(n, math.MaxInt64/mib), nil
}

// effectiveMemoryLimit applies the client's memory_limit_mb, which can only
// lower the server's MemoryLimit: larger values are clamped silently, like
// timeout_ms. It returns 0 ("the server's limit") when the request does not
// lower it, so the runner has nothing extra to do for the common case.
func (s *Server) effectiveMemoryLimit(mb int64) int64 {
	if mb <= 0 {
		return 0
	}
	want := mb * mib
	if s.cfg.MemoryLimit > 0 && want >= s.cfg.MemoryLimit {
		return 0
	}
	return want
}

package httpapi

import (
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Body budget tuning.
const (
	// smallBody: bodies up to this size may use the whole budget; larger
	// ones only its first three quarters, so that ordinary requests still
	// get in while large uploads fill the budget.
	smallBody = 64 << 10
	// trimAfter: once the bodies in flight have reached this many bytes and
	// then dropped back to none, freed memory is handed back to the OS.
	trimAfter = 16 << 20
	// trimDelay: how long the budget must stay empty before that, so that a
	// steady stream of large requests does not trigger it each time.
	trimDelay = time.Second
)

// bodyBudget bounds the bytes of request bodies held in memory at once.
// fasthttp reads a whole body before the handler runs (into a buffer of the
// announced Content-Length), and the handler and the runner copy it a few
// times more while the run lasts; so the connection reserves a body's size
// when its head arrives, before fasthttp allocates anything, and gives it
// back when the answer is written. A body that does not fit is refused with
// 429 overloaded and Retry-After, without being read.
type bodyBudget struct {
	limit int64

	inUse atomic.Int64
	peak  atomic.Int64 // highest inUse since the last trim

	mu      sync.Mutex
	pending bool // a trim is scheduled
}

func newBodyBudget(limit int64) *bodyBudget {
	return &bodyBudget{limit: limit}
}

// reserve takes n bytes for a body that has total bytes so far (n included).
func (b *bodyBudget) reserve(n, total int64) bool {
	ceiling := b.limit
	if total > smallBody {
		ceiling -= b.limit / 4
	}
	for {
		cur := b.inUse.Load()
		if cur+n > ceiling {
			return false
		}
		if b.inUse.CompareAndSwap(cur, cur+n) {
			for p := b.peak.Load(); cur+n > p && !b.peak.CompareAndSwap(p, cur+n); p = b.peak.Load() {
			}
			return true
		}
	}
}

func (b *bodyBudget) release(n int64) {
	if n == 0 {
		return
	}
	if b.inUse.Add(-n) == 0 && b.peak.Load() >= trimAfter {
		b.scheduleTrim()
	}
}

// InflightBodyBytes reports the body bytes currently reserved.
func (s *Server) InflightBodyBytes() int64 { return s.budget.inUse.Load() }

// scheduleTrim hands memory back to the OS once the budget has stayed empty
// for trimDelay. Without it the Go runtime keeps the freed body buffers:
// nothing allocates after a burst, so no collection runs, and fasthttp's
// buffer pools hold them until two collections have passed.
func (b *bodyBudget) scheduleTrim() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending {
		return
	}
	b.pending = true
	time.AfterFunc(trimDelay, func() {
		b.mu.Lock()
		b.pending = false
		b.mu.Unlock()
		if b.inUse.Load() != 0 {
			return // busy again: the next drain schedules it
		}
		b.peak.Store(0)
		runtime.GC() // sync.Pool keeps objects for one extra collection
		debug.FreeOSMemory()
	})
}

package httpapi

import (
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// inflight counts the connections that have read a request and not yet
// written its answer, from fasthttp's connection states: a connection turns
// active once a request's headers are read, and idle (or closed) only after
// its response has been written. Shutdown uses it, past its grace, to let the
// handlers of cancelled runs deliver their 503 before the process exits.
type inflight struct {
	mu     sync.Mutex
	active map[net.Conn]bool
	zero   chan struct{} // closed while no connection is active
}

func newInflight() *inflight {
	z := make(chan struct{})
	close(z)
	return &inflight{active: make(map[net.Conn]bool), zero: z}
}

// connState is the fasthttp.Server ConnState hook.
func (f *inflight) connState(c net.Conn, st fasthttp.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	was := len(f.active)
	if st == fasthttp.StateActive {
		f.active[c] = true
	} else {
		delete(f.active, c)
	}
	switch n := len(f.active); {
	case was == 0 && n > 0:
		f.zero = make(chan struct{})
	case was > 0 && n == 0:
		close(f.zero)
	}
}

// wait blocks until no request awaits its answer, or for at most limit. It
// reports whether every answer was written.
func (f *inflight) wait(limit time.Duration) bool {
	f.mu.Lock()
	zero := f.zero
	f.mu.Unlock()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-zero:
		return true
	case <-t.C:
		return false
	}
}

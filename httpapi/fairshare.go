package httpapi

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/pool"
)

// fairGate shares the wait for a worker between API keys. At most slots
// requests wait in the runner for a worker at once; a request that finds
// every slot taken waits in its own key's queue, and a freed slot goes to
// the head of the next key's queue in round-robin order. A slot is freed as
// soon as its request has a worker (pool.WithAcquired), so the runs
// themselves are bounded only by the pool. A key sending 64 requests at once
// therefore gets every other worker at most: another key's request waits
// for about one worker per other busy key, not for the flooder's whole
// backlog, and the flooder is the one answered 429 when its queue cannot
// drain within the wait.
//
// Without it, every request waits in the pool's single FIFO queue, and one
// client's burst is served before anyone else's.
type fairGate struct {
	mu     sync.Mutex
	free   int
	queues map[int][]*fairWaiter // by key index
	ring   []int                 // keys with waiters, in arrival order
	next   int                   // index into ring of the key served next
}

type fairWaiter struct {
	ready   chan struct{}
	granted bool
}

func newFairGate(slots int) *fairGate {
	return &fairGate{free: slots, queues: make(map[int][]*fairWaiter)}
}

// acquire takes a slot for key, waiting at most wait (or until ctx ends).
// It returns pool.ErrOverloaded when no slot came in time; the caller must
// call release exactly once after a nil error.
func (g *fairGate) acquire(ctx context.Context, key int, wait time.Duration) error {
	g.mu.Lock()
	if g.free > 0 && len(g.ring) == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	w := &fairWaiter{ready: make(chan struct{})}
	if len(g.queues[key]) == 0 {
		g.ring = append(g.ring, key)
	}
	g.queues[key] = append(g.queues[key], w)
	g.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	var err error
	select {
	case <-w.ready:
		return nil
	case <-timer.C:
		err = pool.ErrOverloaded
	case <-ctx.Done():
		err = ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.granted {
		// The slot arrived as we gave up: it is ours, use it.
		return nil
	}
	g.remove(key, w)
	return err
}

// release hands the slot to the next waiting key, or frees it.
func (g *fairGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.ring) == 0 {
		g.free++
		return
	}
	g.next %= len(g.ring)
	key := g.ring[g.next]
	q := g.queues[key]
	w := q[0]
	if len(q) == 1 {
		delete(g.queues, key)
		g.ring = append(g.ring[:g.next], g.ring[g.next+1:]...)
	} else {
		g.queues[key] = q[1:]
		g.next++
	}
	w.granted = true
	close(w.ready)
}

// remove drops a waiter that gave up. g.mu is held.
func (g *fairGate) remove(key int, w *fairWaiter) {
	q := g.queues[key]
	for i, x := range q {
		if x == w {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) > 0 {
		g.queues[key] = q
		return
	}
	delete(g.queues, key)
	for i, k := range g.ring {
		if k == key {
			g.ring = append(g.ring[:i], g.ring[i+1:]...)
			if i < g.next {
				g.next--
			}
			break
		}
	}
}

// KeyNames returns the metrics name of every non-blank key of keys, in
// order: names[i] for keys[i] when given, else "key-N" for the N-th
// non-blank key. It is how Config names its keys.
func KeyNames(keys, names []string) []string {
	out := make([]string, 0, len(keys))
	for i, k := range keys {
		if strings.TrimSpace(k) == "" {
			continue
		}
		if i < len(names) && names[i] != "" {
			out = append(out, names[i])
		} else {
			out = append(out, "key-"+strconv.Itoa(len(out)+1))
		}
	}
	return out
}

// KeyRecorder receives per-API-key metrics. Key names are configured names
// or positional ("key-N"), never the keys themselves, and there is one per
// configured key, so the label set is bounded.
type KeyRecorder interface {
	// ObserveKeyRequest is called once for every /execute or /execute/batch
	// request that presented a valid key, with its outcome ("ok" or an
	// error type).
	ObserveKeyRequest(key, outcome string)
	// KeyInFlight adds delta to the key's requests that wait for or hold a
	// run slot.
	KeyInFlight(key string, delta int)
}

func (nopRecorder) ObserveKeyRequest(string, string) {}
func (nopRecorder) KeyInFlight(string, int)          {}

// runFair runs req once the request's key has a slot (when fair sharing is
// on).
func (s *Server) runFair(req executor.Request, info *requestInfo) (executor.Result, error) {
	if info.keyName != "" {
		s.keys.KeyInFlight(info.keyName, 1)
		defer s.keys.KeyInFlight(info.keyName, -1)
	}
	// The run's limit is req.Timeout, enforced by the runner (the pool
	// bounds the wait for a worker by its own acquire timeout). The context
	// only ends a run early when Shutdown's grace has passed; fiber's
	// UserContext would be Background, and fasthttp does not cancel on
	// client disconnect.
	ctx := s.runBase
	if s.gate != nil && info.key >= 0 {
		if err := s.gate.acquire(s.runBase, info.key, s.cfg.FairShareWait); err != nil {
			return executor.Result{}, err
		}
		// The turn ends when the request has a worker (the runner says so
		// through pool.WithAcquired), or when Run returns without one.
		var once sync.Once
		turnOver := func() { once.Do(s.gate.release) }
		defer turnOver()
		ctx = pool.WithAcquired(ctx, turnOver)
	}
	return s.runner.Run(ctx, req)
}

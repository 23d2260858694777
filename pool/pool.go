// Package pool keeps a warm set of single-use workers in a puddle pool. A run
// checks one out, uses it once and destroys it; a background loop spawns
// replacements so the next run finds a warm one.
//
// The pool does not log. It reports through sentinel errors, a Stat snapshot
// and an optional Observer.
package pool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/jackc/puddle/v2"

	"github.com/secure-script-executor/executor/jailproc"
)

// Worker is one warm, single-use worker (a *jailproc.Process in production).
type Worker interface {
	// Run executes one request. It is called at most once per worker.
	Run(ctx context.Context, req executor.Request) (executor.Result, error)
	// Kill ends the worker and blocks until it is gone. Idempotent.
	Kill() error
	// Exited is closed when the worker's process has exited.
	Exited() <-chan struct{}
	// StartedAt is when the worker was spawned.
	StartedAt() time.Time
}

var _ Worker = (*jailproc.Process)(nil)

// Config configures a Pool. The caller decides the sizes and deadlines
// (WarmTarget, MaxWorkers, AcquireTimeout, MaxIdleAge: the server's
// configuration is the one place their defaults live); New refuses a config
// without them. Only the pool's internal tunables have defaults, applied in
// withDefaults.
type Config struct {
	// Spawn starts one worker and returns once it is ready. Its ctx bounds
	// spawn and handshake only; the worker must outlive it. Required.
	Spawn func(ctx context.Context) (Worker, error)
	// WarmTarget is how many idle workers the pool keeps ready: at least 1,
	// or 0 with Cold set.
	WarmTarget int
	// MaxWorkers caps live workers (idle, running, starting and being torn
	// down). At least WarmTarget and at least 1.
	MaxWorkers int
	// Cold disables the warm set: every run spawns its own worker, as the
	// original service did. For baselines only. WarmTarget must be 0.
	Cold bool
	// AcquireTimeout bounds how long a run waits for a worker before
	// ErrOverloaded. Required (positive).
	AcquireTimeout time.Duration
	// MaxIdleAge replaces idle workers older than this; it must stay well
	// below the jail's own lifetime limit. Required (positive).
	MaxIdleAge time.Duration
	// SpawnTimeout bounds one spawn plus handshake. Default 10s.
	SpawnTimeout time.Duration
	// SpawnConcurrency is how many spawns the refill loop runs at once.
	// Default GOMAXPROCS.
	SpawnConcurrency int
	// TeardownDelay bounds how long a used worker's teardown waits for the
	// other runs in flight to end (see destroy). Default 30ms.
	TeardownDelay time.Duration
	// HealthCheckPeriod is how often idle workers are checked for death and
	// age, and a failing sandbox is retried. Default 1s.
	HealthCheckPeriod time.Duration
	// Observer receives spawn, acquire and kill measurements. Optional.
	Observer Observer
}

// DefaultSpawnTimeout is the default of Config.SpawnTimeout.
const DefaultSpawnTimeout = 10 * time.Second

func (c Config) withDefaults() Config {
	if c.SpawnTimeout == 0 {
		c.SpawnTimeout = DefaultSpawnTimeout
	}
	if c.SpawnConcurrency == 0 {
		c.SpawnConcurrency = runtime.GOMAXPROCS(0)
	}
	if c.TeardownDelay == 0 {
		c.TeardownDelay = DefaultTeardownDelay
	}
	if c.HealthCheckPeriod == 0 {
		c.HealthCheckPeriod = time.Second
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Spawn == nil:
		return errors.New("pool: Config.Spawn is required")
	case c.Cold && c.WarmTarget != 0:
		return fmt.Errorf("pool: warm target %d must be 0 in cold mode", c.WarmTarget)
	case !c.Cold && c.WarmTarget < 1:
		return fmt.Errorf("pool: warm target %d must be at least 1", c.WarmTarget)
	case c.MaxWorkers < max(1, c.WarmTarget):
		return fmt.Errorf("pool: max workers %d must be at least 1 and at least the warm target %d", c.MaxWorkers, c.WarmTarget)
	case c.AcquireTimeout <= 0 || c.MaxIdleAge <= 0:
		return fmt.Errorf("pool: acquire timeout %s and max idle age %s must be positive", c.AcquireTimeout, c.MaxIdleAge)
	}
	return nil
}

type nopObserver struct{}

func (nopObserver) ObserveSpawn(time.Duration)         {}
func (nopObserver) ObserveAcquire(time.Duration, bool) {}
func (nopObserver) ObserveKillError(error)             {}

// Pool is a warm pool of single-use workers.
type Pool struct {
	cfg Config
	p   *puddle.Pool[Worker]

	refill    chan struct{} // one slot: a pending refill request
	ctx       context.Context
	cancel    context.CancelFunc
	loopDone  chan struct{}
	closeOnce sync.Once

	spawned     atomic.Int64
	spawnFailed atomic.Int64
	killFailed  atomic.Int64
	destroyed   [4]atomic.Int64       // indexed by reasonIndex
	spawnErr    atomic.Pointer[error] // last spawn error; nil after a success
	failStreak  atomic.Int32          // spawns failed in a row

	running inFlight // runs in progress (teardown waits for none, see destroy)
}

var reasonIndex = map[DestroyReason]int{DestroyUsed: 0, DestroyExpired: 1, DestroyDied: 2, DestroyFailed: 3}

// New creates the pool and starts filling the warm set in the background.
// Use WaitWarm to block until it is full.
func New(cfg Config) (*Pool, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Pool{cfg: cfg, refill: make(chan struct{}, 1), loopDone: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	pp, err := puddle.NewPool(&puddle.Config[Worker]{
		Constructor: p.construct,
		// Only for workers puddle tears down itself (idle ones at Close, one
		// finished while the pool was closing); destroy handles the rest.
		Destructor: p.kill,
		MaxSize:    int32(cfg.MaxWorkers),
	})
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	p.p = pp
	go p.loop()
	p.triggerRefill()
	return p, nil
}

// construct is puddle's constructor. ctx may be cancelled as soon as the
// caller stops waiting (pre-warming, an abandoned acquire): it only bounds the
// handshake, never the worker's life.
func (p *Pool) construct(ctx context.Context) (Worker, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.SpawnTimeout)
	defer cancel()
	start := time.Now()
	w, err := p.cfg.Spawn(ctx)
	if err != nil {
		p.spawnFailed.Add(1)
		p.failStreak.Add(1)
		p.spawnErr.Store(&err)
		return nil, err
	}
	p.spawned.Add(1)
	p.failStreak.Store(0)
	p.spawnErr.Store(nil)
	p.cfg.Observer.ObserveSpawn(time.Since(start))
	return w, nil
}

// Run checks out a worker, runs req in it and destroys it. Errors:
// ErrOverloaded, ErrSandboxUnavailable (wrapped with the cause), ErrClosed,
// the caller's ctx error, or a supervisor error from the worker.
func (p *Pool) Run(ctx context.Context, req executor.Request) (executor.Result, error) {
	start := time.Now()
	if err := p.sandboxErr(); err != nil && !p.cfg.Cold && p.p.Stat().IdleResources() == 0 {
		// Spawning is failing and nothing is warm: answer now instead of
		// making every caller pay for another failing spawn. The refill
		// loop keeps retrying in the background.
		return executor.Result{}, err
	}
	actx, cancel := context.WithTimeout(ctx, p.cfg.AcquireTimeout)
	defer cancel()
	for {
		res, err := p.p.Acquire(actx)
		if err != nil {
			return executor.Result{}, p.acquireError(ctx, err)
		}
		w := res.Value()
		if exited(w) {
			// Died while idle (killed from outside, lifetime limit): not
			// usable, try the next one.
			p.destroy(res, DestroyDied)
			continue
		}
		p.cfg.Observer.ObserveAcquire(time.Since(start), res.CreationTime().After(start))
		NotifyAcquired(ctx)
		out, err := p.runCounted(ctx, w, req)
		reason := DestroyUsed
		if err != nil {
			reason = DestroyFailed
		}
		p.destroy(res, reason)
		return out, err
	}
}

// runCounted runs req in w, counted as a run in flight (see destroy).
func (p *Pool) runCounted(ctx context.Context, w Worker, req executor.Request) (executor.Result, error) {
	p.running.enter()
	defer p.running.exit()
	return w.Run(ctx, req)
}

func (p *Pool) acquireError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, puddle.ErrClosedPool):
		return ErrClosed
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		if serr := p.sandboxErr(); serr != nil {
			return serr
		}
		return ErrOverloaded
	default:
		// The constructor failed: the sandbox cannot start jails.
		return fmt.Errorf("%w: %w", ErrSandboxUnavailable, err)
	}
}

// sandboxDownAfter is how many spawns in a row must fail before the sandbox
// counts as unavailable. One failure can be transient (a spawn timing out on
// a saturated machine); answering every request 503 for it would turn a blip
// into an outage. A sandbox that cannot start jails at all fails this many
// times within a fraction of a second of background retries.
const sandboxDownAfter = 3

func (p *Pool) sandboxErr() error {
	if p.failStreak.Load() < sandboxDownAfter {
		return nil
	}
	if e := p.spawnErr.Load(); e != nil {
		return fmt.Errorf("%w: %w", ErrSandboxUnavailable, *e)
	}
	return nil
}

// destroy ends a checked-out worker in the background and asks for a
// replacement twice: at once, which spawns it in parallel with the teardown
// when the pool is below MaxWorkers, and again once the slot is free. The
// worker keeps its slot until Kill has returned (so live jails never exceed
// MaxWorkers); at MaxWorkers the first refill counts the dying worker and
// spawns nothing, and without the second the pool would stay short until the
// next health check (puddle's own Destroy frees the slot only after its
// destructor returns, with no hook after that).
//
// A used worker's teardown waits, up to TeardownDelay, until no other run
// is in flight, unless the pool is at MaxWorkers (a slot is worth more than
// the CPU then): tearing a worker down costs ~0.3 ms of CPU (its address
// space, its namespaces), and a burst of runs finishes sooner without it.
// A cell's child waits for this kill after its result (zygote.c,
// zyg_linger); a jail's worker has exited already, and only its nsjail and
// cgroup wait. Measured: a burst of 32 on a full warm pool of 32, 3 x 8
// bursts, mean of each burst's slowest answer 22.1/19.1/18.3 -> 18.1/16.6/
// 18.0 ms (docs/BENCHMARKS.md, round 5).
func (p *Pool) destroy(res *puddle.Resource[Worker], why DestroyReason) {
	p.destroyed[reasonIndex[why]].Add(1)
	p.triggerRefill()
	go func() {
		if why == DestroyUsed {
			p.awaitQuiet()
		}
		p.kill(res.Value())
		// Hijack takes the resource out of the pool at once, freeing its
		// slot; Close still waits for it (puddle counts it until then).
		res.Hijack()
		p.triggerRefill()
	}()
}

// DefaultTeardownDelay is the default of Config.TeardownDelay.
const DefaultTeardownDelay = 30 * time.Millisecond

// awaitQuiet returns once no run is in flight, TeardownDelay has passed, the
// pool is at MaxWorkers or closing.
func (p *Pool) awaitQuiet() {
	quiet := p.running.quiet()
	if quiet == nil {
		return
	}
	if st := p.p.Stat(); st.TotalResources() >= st.MaxResources() {
		return
	}
	t := time.NewTimer(p.cfg.TeardownDelay)
	defer t.Stop()
	select {
	case <-quiet:
	case <-t.C:
	case <-p.ctx.Done():
	}
}

// inFlight counts runs in progress and tells when there are none.
type inFlight struct {
	mu   sync.Mutex
	n    int
	none chan struct{} // closed when n drops to 0; nil while n is 0
}

func (f *inFlight) enter() {
	f.mu.Lock()
	if f.n == 0 {
		f.none = make(chan struct{})
	}
	f.n++
	f.mu.Unlock()
}

func (f *inFlight) exit() {
	f.mu.Lock()
	f.n--
	if f.n == 0 {
		close(f.none)
		f.none = nil
	}
	f.mu.Unlock()
}

// quiet is closed once no run is in flight; nil if none is now.
func (f *inFlight) quiet() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.none
}

// kill ends w and reports a failed teardown (such as a cgroup that could not
// be removed) to the Observer.
func (p *Pool) kill(w Worker) {
	if err := w.Kill(); err != nil {
		p.killFailed.Add(1)
		p.cfg.Observer.ObserveKillError(err)
	}
}

func (p *Pool) triggerRefill() {
	select {
	case p.refill <- struct{}{}:
	default: // a refill is already pending; it will see this need too
	}
}

// loop refills the warm set on demand and checks idle workers periodically.
// Spawn failures back off exponentially so a broken sandbox is retried
// without burning the CPU.
func (p *Pool) loop() {
	defer close(p.loopDone)
	tick := time.NewTicker(p.cfg.HealthCheckPeriod)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.refill:
		case <-tick.C:
			p.checkIdle()
		}
		if backoff > 0 {
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		if p.fill() {
			backoff = 0
		} else {
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
		}
	}
}

// fill spawns workers until the warm target is met. It reports false when a
// spawn failed.
func (p *Pool) fill() bool {
	for p.ctx.Err() == nil {
		st := p.p.Stat()
		need := p.cfg.WarmTarget - int(st.IdleResources()+st.ConstructingResources())
		need = min(need, int(st.MaxResources()-st.TotalResources()), p.cfg.SpawnConcurrency)
		if need <= 0 {
			return true
		}
		var wg sync.WaitGroup
		var failed atomic.Bool
		for range need {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := p.p.CreateResource(p.ctx)
				if err != nil && !errors.Is(err, puddle.ErrNotAvailable) && !errors.Is(err, puddle.ErrClosedPool) {
					failed.Store(true)
				}
			}()
		}
		wg.Wait()
		if failed.Load() {
			return false
		}
	}
	return true
}

func exited(w Worker) bool {
	select {
	case <-w.Exited():
		return true
	default:
		return false
	}
}

// checkIdle destroys idle workers that died or grew too old.
func (p *Pool) checkIdle() {
	for _, res := range p.p.AcquireAllIdle() {
		w := res.Value()
		if exited(w) {
			p.destroy(res, DestroyDied)
			continue
		}
		if time.Since(w.StartedAt()) > p.cfg.MaxIdleAge {
			p.destroy(res, DestroyExpired)
			continue
		}
		res.ReleaseUnused()
	}
}

// WaitWarm blocks until the warm set is full, ctx ends, or spawning fails
// (then it returns the spawn error).
func (p *Pool) WaitWarm(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if int(p.p.Stat().IdleResources()) >= p.cfg.WarmTarget {
			return nil
		}
		if err := p.sandboxErr(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Ready reports nil when a run would find a worker: warm workers exist (or,
// in cold mode, spawning is not failing: a run spawns its own worker, so a
// cold pool is ready from the start). Otherwise it says why not.
func (p *Pool) Ready() error {
	if err := p.sandboxErr(); err != nil {
		return err
	}
	if p.cfg.Cold {
		return nil
	}
	// Warm once is enough: a pool whose workers are all busy is serving,
	// not broken. Answering "not ready" then would make a load balancer
	// take the instance out exactly when it is loaded (and send its load
	// to the others); such a request waits for a worker up to
	// AcquireTimeout, then gets ErrOverloaded.
	if p.spawned.Load() == 0 && p.p.Stat().IdleResources() == 0 {
		return errors.New("pool: no worker has been made yet")
	}
	return nil
}

// Stat returns a snapshot of the pool.
func (p *Pool) Stat() Stat {
	s := p.p.Stat()
	st := Stat{
		IdleWorkers:         s.IdleResources(),
		AcquiredWorkers:     s.AcquiredResources(),
		ConstructingWorkers: s.ConstructingResources(),
		TotalWorkers:        s.TotalResources(),
		MaxWorkers:          s.MaxResources(),
		WarmTarget:          int32(p.cfg.WarmTarget),
		Acquires:            s.AcquireCount(),
		EmptyAcquires:       s.EmptyAcquireCount(),
		CanceledAcquires:    s.CanceledAcquireCount(),
		AcquireDuration:     s.AcquireDuration(),
		Spawned:             p.spawned.Load(),
		SpawnFailed:         p.spawnFailed.Load(),
		KillFailed:          p.killFailed.Load(),
		Destroyed:           make(map[DestroyReason]int64, len(reasonIndex)),
	}
	for r, i := range reasonIndex {
		st.Destroyed[r] = p.destroyed[i].Load()
	}
	if e := p.spawnErr.Load(); e != nil {
		st.LastSpawnErr = *e
	}
	return st
}

// Close stops refilling, waits for running requests to finish, and destroys
// every worker, blocking until all are gone. Idempotent.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		p.cancel()
		<-p.loopDone
		p.p.Close()
	})
}

package pool_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/pool"
)

// fakeWorker stands in for a jailed process where a real one cannot produce
// the case (a worker that dies while idle, a spawn that blocks forever).
type fakeWorker struct {
	id      int64
	started time.Time
	exited  chan struct{}
	killed  atomic.Bool
	runs    atomic.Int32
	block   chan struct{} // when non-nil, Run waits for it to close
	f       *factory
}

// errKill is what a fake worker's Kill returns when factory.killErr is set.
var errKill = errors.New("jailproc: remove cgroups of jail 42: device or resource busy")

func (w *fakeWorker) Run(ctx context.Context, req executor.Request) (executor.Result, error) {
	if w.runs.Add(1) > 1 {
		w.f.reused.Store(true)
	}
	if w.killed.Load() {
		w.f.ranKilled.Store(true)
	}
	block := w.block
	if w.f.holdFirst != nil && w.f.runsStarted.Add(1) == 1 {
		block = w.f.holdFirst
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return executor.Result{}, ctx.Err()
		}
	}
	return executor.Result{Status: executor.StatusOK, Value: []byte(strconv.FormatInt(w.id, 10))}, nil
}

func (w *fakeWorker) Kill() error {
	if w.f.killGate != nil {
		<-w.f.killGate // a jail that takes a while to tear down
	}
	if w.killed.CompareAndSwap(false, true) {
		w.f.live.Add(-1)
		select {
		case <-w.exited:
		default:
			close(w.exited)
		}
	}
	if w.f.killErr.Load() {
		return errKill
	}
	return nil
}

func (w *fakeWorker) Exited() <-chan struct{} { return w.exited }
func (w *fakeWorker) StartedAt() time.Time    { return w.started }

type factory struct {
	failNext    atomic.Int32 // fail this many spawns, then work
	mu          sync.Mutex
	workers     []*fakeWorker
	next        atomic.Int64
	live        atomic.Int64
	fail        atomic.Bool
	block       chan struct{}
	reused      atomic.Bool
	ranKilled   atomic.Bool
	killGate    chan struct{} // when non-nil, Kill waits for it to close
	killErr     atomic.Bool   // Kill reports errKill
	holdFirst   chan struct{} // when non-nil, the first run waits for it to close
	runsStarted atomic.Int32
}

func (f *factory) spawn(ctx context.Context) (pool.Worker, error) {
	if f.fail.Load() || f.failNext.Add(-1) >= 0 {
		return nil, errors.New("nsjail: clone(CLONE_NEWUSER) failed: operation not permitted")
	}
	w := &fakeWorker{id: f.next.Add(1), started: time.Now(), exited: make(chan struct{}), block: f.block, f: f}
	f.live.Add(1)
	f.mu.Lock()
	f.workers = append(f.workers, w)
	f.mu.Unlock()
	return w, nil
}

func newPool(t *testing.T, f *factory, cfg pool.Config) *pool.Pool {
	t.Helper()
	cfg.Spawn = f.spawn
	if cfg.HealthCheckPeriod == 0 {
		cfg.HealthCheckPeriod = 10 * time.Millisecond
	}
	// The pool takes its sizes and deadlines from the caller (the server's
	// configuration); these are the tests' usual ones.
	if cfg.AcquireTimeout == 0 {
		cfg.AcquireTimeout = 2 * time.Second
	}
	if cfg.MaxIdleAge == 0 {
		cfg.MaxIdleAge = 5 * time.Minute
	}
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestPoolFillsTheWarmSetBeforeItSaysReady(t *testing.T) {
	f := &factory{}
	p := newPool(t, f, pool.Config{WarmTarget: 5, MaxWorkers: 8})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitWarm(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Ready(); err != nil {
		t.Fatalf("Ready after WaitWarm: %v", err)
	}
	if got := p.Stat().IdleWorkers; got != 5 {
		t.Fatalf("idle workers = %d, want 5", got)
	}
}

func TestPoolWhoseWorkersAreAllBusyStaysReady(t *testing.T) {
	f := &factory{block: make(chan struct{})}
	p := newPool(t, f, pool.Config{WarmTarget: 2, MaxWorkers: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitWarm(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Run(context.Background(), executor.Request{})
		}()
	}
	waitFor(t, "both workers to be busy", func() bool { st := p.Stat(); return st.AcquiredWorkers == 2 && st.IdleWorkers == 0 })
	if err := p.Ready(); err != nil {
		t.Errorf("Ready with every worker busy: %v (a load balancer would take a loaded instance out)", err)
	}
	close(f.block)
	wg.Wait()
}

func TestPoolUsesEachWorkerOnceAndRefillsAfterEveryRun(t *testing.T) {
	f := &factory{}
	p := newPool(t, f, pool.Config{WarmTarget: 3, MaxWorkers: 6})
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		res, err := p.Run(context.Background(), executor.Request{})
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(res.Value)] {
			t.Fatalf("worker %s ran twice", res.Value)
		}
		seen[string(res.Value)] = true
	}
	if f.reused.Load() {
		t.Fatal("a worker ran more than one request")
	}
	waitFor(t, "the warm set to refill", func() bool { return p.Stat().IdleWorkers == 3 })
	st := p.Stat()
	if st.Destroyed[pool.DestroyUsed] != 20 {
		t.Fatalf("destroyed(used) = %d, want 20", st.Destroyed[pool.DestroyUsed])
	}
	waitFor(t, "used workers to be killed", func() bool { return f.live.Load() == 3 })
}

// At MaxWorkers, the refill asked for by a destroy cannot spawn while the
// dying worker still holds its slot; the pool must spawn once the slot is
// free, not on the next health check (an hour here).
func TestPoolAtMaxWorkersIsWarmAgainAsSoonAsTheUsedWorkerIsGoneNotOnTheNextHealthCheck(t *testing.T) {
	f := &factory{killGate: make(chan struct{})}
	p := newPool(t, f, pool.Config{WarmTarget: 1, MaxWorkers: 1, HealthCheckPeriod: time.Hour})
	t.Cleanup(func() { closeOnce(f.killGate) }) // before p.Close (cleanups run last first)
	if err := p.WaitWarm(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(context.Background(), executor.Request{}); err != nil {
		t.Fatal(err)
	}
	// The used worker is being torn down and holds the only slot.
	waitFor(t, "the used worker's teardown to begin", func() bool { return p.Stat().IdleWorkers == 0 })
	closeOnce(f.killGate)
	waitFor(t, "a warm worker after the teardown", func() bool { return p.Stat().IdleWorkers == 1 })
	if got := p.Stat().Spawned; got != 2 {
		t.Fatalf("spawned = %d, want 2", got)
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

func TestPoolReplacesIdleWorkersThatGrowTooOld(t *testing.T) {
	f := &factory{}
	p := newPool(t, f, pool.Config{WarmTarget: 2, MaxWorkers: 4, MaxIdleAge: 30 * time.Millisecond})
	waitFor(t, "expiries", func() bool { return p.Stat().Destroyed[pool.DestroyExpired] >= 4 })
	waitFor(t, "the warm set to refill", func() bool { return p.Stat().IdleWorkers == 2 })
}

func TestPoolReplacesAnIdleWorkerWhoseProcessDied(t *testing.T) {
	f := &factory{}
	p := newPool(t, f, pool.Config{WarmTarget: 1, MaxWorkers: 2, HealthCheckPeriod: time.Hour})
	if err := p.WaitWarm(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	dead := f.workers[0]
	f.mu.Unlock()
	close(dead.exited) // the process died on its own while idle

	res, err := p.Run(context.Background(), executor.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Value) == "1" {
		t.Fatal("the run went to the dead worker")
	}
	if got := p.Stat().Destroyed[pool.DestroyDied]; got != 1 {
		t.Fatalf("destroyed(died) = %d, want 1", got)
	}
}

func TestPoolRunReturnsErrOverloadedWhenNoWorkerFreesUpBeforeTheAcquireDeadline(t *testing.T) {
	f := &factory{block: make(chan struct{})}
	p := newPool(t, f, pool.Config{WarmTarget: 1, MaxWorkers: 1, AcquireTimeout: 50 * time.Millisecond})
	go p.Run(context.Background(), executor.Request{})
	waitFor(t, "the only worker to be busy", func() bool { return p.Stat().AcquiredWorkers == 1 })

	_, err := p.Run(context.Background(), executor.Request{})
	if !errors.Is(err, pool.ErrOverloaded) {
		t.Fatalf("err = %v, want ErrOverloaded", err)
	}
	close(f.block)
}

func TestPoolCloseWaitsForRunsInFlightAndKillsEveryWorker(t *testing.T) {
	f := &factory{block: make(chan struct{})}
	p := newPool(t, f, pool.Config{WarmTarget: 3, MaxWorkers: 6})
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := p.Run(context.Background(), executor.Request{})
			done <- err
		}()
	}
	waitFor(t, "two runs in flight and a full warm set", func() bool {
		st := p.Stat()
		return st.AcquiredWorkers == 2 && st.IdleWorkers == 3
	})

	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	// Close has destroyed the idle workers: it is now waiting for the runs.
	waitFor(t, "Close to destroy the idle workers", func() bool { return p.Stat().IdleWorkers == 0 })
	select {
	case <-closed:
		t.Fatal("Close returned while runs were in flight")
	default:
	}
	close(f.block)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("in-flight run failed: %v", err)
		}
	}
	<-closed
	if n := f.live.Load(); n != 0 {
		t.Fatalf("%d workers still alive after Close", n)
	}
	if _, err := p.Run(context.Background(), executor.Request{}); !errors.Is(err, pool.ErrClosed) {
		t.Fatalf("Run after Close: err = %v, want ErrClosed", err)
	}
	p.Close() // idempotent
}

func TestPoolReportsSandboxUnavailableAndRecoversWhenSpawningWorksAgain(t *testing.T) {
	f := &factory{}
	f.fail.Store(true)
	p := newPool(t, f, pool.Config{WarmTarget: 2, MaxWorkers: 4})
	waitFor(t, "spawns to keep failing", func() bool { return errors.Is(p.Ready(), pool.ErrSandboxUnavailable) })

	if err := p.Ready(); !errors.Is(err, pool.ErrSandboxUnavailable) {
		t.Fatalf("Ready = %v, want ErrSandboxUnavailable", err)
	}
	if _, err := p.Run(context.Background(), executor.Request{}); !errors.Is(err, pool.ErrSandboxUnavailable) {
		t.Fatalf("Run = %v, want ErrSandboxUnavailable", err)
	}
	if p.Stat().LastSpawnErr == nil {
		t.Fatal("Stat.LastSpawnErr is nil while spawns fail")
	}

	f.fail.Store(false)
	waitFor(t, "recovery", func() bool { return p.Ready() == nil })
	if _, err := p.Run(context.Background(), executor.Request{}); err != nil {
		t.Fatalf("Run after recovery: %v", err)
	}
}

func TestPoolInColdModeIsReadyAtOnceKeepsNoWarmSetAndSpawnsPerRun(t *testing.T) {
	f := &factory{}
	p := newPool(t, f, pool.Config{Cold: true, MaxWorkers: 4})
	// A run spawns its own worker: nothing needs to be spawned first.
	if err := p.Ready(); err != nil {
		t.Fatalf("Ready before any run: %v", err)
	}
	for range 3 {
		if _, err := p.Run(context.Background(), executor.Request{}); err != nil {
			t.Fatal(err)
		}
	}
	// Exactly one spawn per run, and nothing left idle: no warm set.
	if st := p.Stat(); st.Spawned != 3 || st.IdleWorkers != 0 {
		t.Fatalf("spawned = %d, idle = %d; want 3 and 0", st.Spawned, st.IdleWorkers)
	}
}

// TestPoolStressManyConcurrentRunsNeverShareAWorker runs for
// POOL_STRESS_DURATION (default 300ms).
func TestPoolStressManyConcurrentRunsNeverShareAWorker(t *testing.T) {
	d := 300 * time.Millisecond
	if v := os.Getenv("POOL_STRESS_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	f := &factory{}
	p := newPool(t, f, pool.Config{WarmTarget: 4, MaxWorkers: 8, AcquireTimeout: time.Minute})
	var wg sync.WaitGroup
	var runs atomic.Int64
	stop := time.Now().Add(d)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if _, err := p.Run(context.Background(), executor.Request{}); err != nil {
					t.Error(err)
					return
				}
				runs.Add(1)
			}
		}()
	}
	wg.Wait()
	if f.reused.Load() || f.ranKilled.Load() {
		t.Fatal("a worker was reused or ran after being killed")
	}
	p.Close()
	if n := f.live.Load(); n != 0 {
		t.Fatalf("%d workers alive after Close", n)
	}
	t.Logf("%d runs", runs.Load())
}

func TestPoolOneFailedSpawnDoesNotMakeTheSandboxUnavailable(t *testing.T) {
	f := &factory{}
	f.failNext.Store(1) // e.g. a spawn that timed out on a saturated machine
	p := newPool(t, f, pool.Config{WarmTarget: 2, MaxWorkers: 4})
	waitFor(t, "the warm set after one failure", func() bool { return p.Stat().IdleWorkers == 2 })
	if got := p.Stat().SpawnFailed; got != 1 {
		t.Fatalf("spawn failures = %d, want 1", got)
	}
	if _, err := p.Run(context.Background(), executor.Request{}); err != nil {
		t.Fatalf("Run after one transient spawn failure: %v", err)
	}
}

// killObserver records ObserveKillError calls.
type killObserver struct {
	mu   sync.Mutex
	errs []error
}

func (o *killObserver) ObserveSpawn(time.Duration)         {}
func (o *killObserver) ObserveAcquire(time.Duration, bool) {}
func (o *killObserver) ObserveKillError(err error) {
	o.mu.Lock()
	o.errs = append(o.errs, err)
	o.mu.Unlock()
}

func (o *killObserver) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.errs)
}

func TestPoolReportsAWorkerWhoseKillFailedInStatAndToTheObserver(t *testing.T) {
	f := &factory{}
	f.killErr.Store(true) // e.g. the jail's cgroup could not be removed
	obs := &killObserver{}
	p := newPool(t, f, pool.Config{WarmTarget: 1, MaxWorkers: 2, Observer: obs})
	if _, err := p.Run(context.Background(), executor.Request{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed kill to be reported", func() bool { return p.Stat().KillFailed == 1 && obs.count() == 1 })
	if !errors.Is(obs.errs[0], errKill) {
		t.Fatalf("observed %v, want the worker's Kill error", obs.errs[0])
	}
}

// A used worker is torn down once no other run is in flight (its teardown
// would take CPU from them), or at the latest TeardownDelay after its run;
// at MaxWorkers, at once (the slot is needed).
func TestPoolTearsAUsedWorkerDownOnceNoOtherRunIsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   int
		delay time.Duration
		early bool // torn down while the other run still runs
	}{
		{"once_the_other_run_ends", 8, time.Hour, false},
		{"at_most_the_delay_after", 8, 20 * time.Millisecond, true},
		{"at_once_at_max_workers", 2, time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &factory{holdFirst: make(chan struct{})}
			p := newPool(t, f, pool.Config{WarmTarget: 2, MaxWorkers: tc.max, TeardownDelay: tc.delay, HealthCheckPeriod: time.Hour})
			t.Cleanup(func() { closeOnce(f.holdFirst) })
			if err := p.WaitWarm(context.Background()); err != nil {
				t.Fatal(err)
			}
			aDone := make(chan struct{})
			go func() {
				defer close(aDone)
				p.Run(context.Background(), executor.Request{}) // waits for holdFirst
			}()
			waitFor(t, "the first run to start", func() bool { return f.runsStarted.Load() == 1 })
			res, err := p.Run(context.Background(), executor.Request{})
			if err != nil {
				t.Fatal(err)
			}
			b := f.worker(t, string(res.Value))
			if tc.early {
				waitFor(t, "the used worker's teardown", b.killed.Load)
				return
			}
			time.Sleep(50 * time.Millisecond)
			if b.killed.Load() {
				t.Fatal("the used worker was torn down while another run was in flight")
			}
			closeOnce(f.holdFirst)
			<-aDone
			waitFor(t, "the used worker's teardown once no run is in flight", b.killed.Load)
		})
	}
}

func (f *factory) worker(t *testing.T, id string) *fakeWorker {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.workers {
		if strconv.FormatInt(w.id, 10) == id {
			return w
		}
	}
	t.Fatalf("no worker %s", id)
	return nil
}

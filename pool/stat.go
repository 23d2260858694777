package pool

import "time"

// DestroyReason says why a worker was destroyed. The values are bounded, so
// they are safe as metric label values.
type DestroyReason string

const (
	// DestroyUsed: the worker ran one request (the normal, single-use end).
	DestroyUsed DestroyReason = "used"
	// DestroyExpired: the worker sat idle longer than Config.MaxIdleAge.
	DestroyExpired DestroyReason = "expired"
	// DestroyDied: the worker's process exited while it was idle.
	DestroyDied DestroyReason = "died"
	// DestroyFailed: the worker's Run returned a supervisor error (the run's
	// outcome is unknown), for example a broken pipe to the jail.
	DestroyFailed DestroyReason = "failed"
)

// DestroyReasons lists every DestroyReason, for exporters that want a zero
// series per reason.
var DestroyReasons = []DestroyReason{DestroyUsed, DestroyExpired, DestroyDied, DestroyFailed}

// Stat is a snapshot of the pool. Counters are cumulative since New.
type Stat struct {
	// Gauges, from puddle.
	IdleWorkers         int32
	AcquiredWorkers     int32
	ConstructingWorkers int32
	TotalWorkers        int32
	MaxWorkers          int32
	// WarmTarget is the number of idle workers the pool keeps ready.
	WarmTarget int32

	// Acquire counters, from puddle.
	Acquires         int64 // successful checkouts
	EmptyAcquires    int64 // checkouts that found no idle worker (cold path)
	CanceledAcquires int64 // checkouts abandoned (deadline, client gone)
	AcquireDuration  time.Duration

	// Spawn and destroy counters, kept by the pool.
	Spawned      int64
	SpawnFailed  int64
	KillFailed   int64 // Kill returned an error (e.g. a cgroup left behind)
	Destroyed    map[DestroyReason]int64
	LastSpawnErr error // nil once a spawn succeeds again
}

// Observer receives per-event measurements that a snapshot cannot carry
// (histograms). Implementations must be cheap and safe for concurrent use.
type Observer interface {
	// ObserveSpawn is called once per successful spawn with the time from
	// start to the worker's ready line.
	ObserveSpawn(d time.Duration)
	// ObserveAcquire is called once per Run with the time spent waiting for a
	// worker; cold is true when no idle worker was available at once.
	ObserveAcquire(wait time.Duration, cold bool)
	// ObserveKillError is called when a worker's Kill failed: the worker is
	// gone from the pool, but something of its jail may be left behind.
	ObserveKillError(err error)
}

package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/secure-script-executor/executor/pool"
)

// poolCollector exports pool.Stat at scrape time. The pool keeps its own
// counters (puddle's and its spawn/destroy counts); mirroring them into
// prometheus.Counters would mean a second copy updated on the hot path that
// could disagree with Stat. One Stat() call per scrape also makes every pool
// series in a scrape come from the same snapshot.
type poolCollector struct {
	src StatSource

	idle, acquired, constructing, total, max, warmTarget *prometheus.Desc

	acquires, emptyAcquires, canceledAcquires, acquireSeconds *prometheus.Desc
	spawned, spawnFailed, killFailed, destroyed               *prometheus.Desc

	sandboxUp *prometheus.Desc
}

var _ prometheus.Collector = (*poolCollector)(nil)

func newPoolCollector(src StatSource) *poolCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "pool", name), help, labels, nil)
	}
	return &poolCollector{
		src: src,

		idle:         desc("idle_workers", "Warm workers ready to take a run."),
		acquired:     desc("acquired_workers", "Workers checked out and running (or about to run) a script."),
		constructing: desc("constructing_workers", "Workers being spawned: sandbox starting, ready line not yet seen."),
		total:        desc("workers", "All workers: idle + acquired + constructing."),
		max:          desc("max_workers", "Configured maximum number of workers."),
		warmTarget:   desc("warm_target_workers", "Number of idle workers the pool tries to keep ready."),

		acquires:         desc("acquires_total", "Successful worker checkouts."),
		emptyAcquires:    desc("empty_acquires_total", "Checkouts that found no idle worker and had to wait for one (cold path)."),
		canceledAcquires: desc("canceled_acquires_total", "Checkouts abandoned before a worker was available (deadline passed or client gone)."),
		acquireSeconds:   desc("acquire_duration_seconds_total", "Total time spent waiting in successful checkouts."),
		spawned:          desc("workers_spawned_total", "Workers that started and sent their ready line."),
		spawnFailed:      desc("spawn_failures_total", "Worker spawns that failed (sandbox did not start or never became ready)."),
		killFailed:       desc("kill_failures_total", "Worker teardowns that failed (for example a cgroup that could not be removed); the server logs each."),
		destroyed:        desc("workers_destroyed_total", "Workers destroyed, by reason: used, expired, died or failed.", "reason"),

		sandboxUp: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "sandbox_up"),
			"1 if the last worker spawn succeeded (or none has failed yet), 0 while spawns are failing.", nil, nil),
	}
}

// Describe sends every Desc; the collector is fully described, so the
// registry can reject a name clash at registration rather than at scrape.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.idle, c.acquired, c.constructing, c.total, c.max, c.warmTarget,
		c.acquires, c.emptyAcquires, c.canceledAcquires, c.acquireSeconds,
		c.spawned, c.spawnFailed, c.killFailed, c.destroyed, c.sandboxUp,
	} {
		ch <- d
	}
}

// Collect takes one snapshot and converts it.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stat()

	gauge := func(d *prometheus.Desc, v int32) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	gauge(c.idle, s.IdleWorkers)
	gauge(c.acquired, s.AcquiredWorkers)
	gauge(c.constructing, s.ConstructingWorkers)
	gauge(c.total, s.TotalWorkers)
	gauge(c.max, s.MaxWorkers)
	gauge(c.warmTarget, s.WarmTarget)

	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	counter(c.acquires, float64(s.Acquires))
	counter(c.emptyAcquires, float64(s.EmptyAcquires))
	counter(c.canceledAcquires, float64(s.CanceledAcquires))
	counter(c.acquireSeconds, s.AcquireDuration.Seconds())
	counter(c.spawned, float64(s.Spawned))
	counter(c.spawnFailed, float64(s.SpawnFailed))
	counter(c.killFailed, float64(s.KillFailed))

	// A series for every known reason, even at zero: an alert on
	// rate(...{reason="died"}) must see 0, not "no data", before the first
	// death. Reasons missing from pool.DestroyReasons (a new constant someone
	// forgot to list) are still exported rather than silently dropped; they
	// are pool constants, so the set stays bounded.
	for _, r := range pool.DestroyReasons {
		counter(c.destroyed, float64(s.Destroyed[r]), string(r))
	}
	for r, n := range s.Destroyed {
		if !isKnownReason(r) {
			counter(c.destroyed, float64(n), string(r))
		}
	}

	up := 1.0
	if s.LastSpawnErr != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(c.sandboxUp, prometheus.GaugeValue, up)
}

func isKnownReason(r pool.DestroyReason) bool {
	for _, k := range pool.DestroyReasons {
		if r == k {
			return true
		}
	}
	return false
}

package jailproc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Reusing v1 worker groups.
//
// Making a worker's group (a folder in each of the memory, pids, cpu and
// cpuacct hierarchies, its limits, its counters opened) and removing it
// afterwards cost about 0.7 ms of the server's CPU per run, plus the
// kernel's asynchronous destruction of four cgroups. On cgroup v1 an emptied
// group can be made indistinguishable from a new one, so the supervisor
// keeps a few for the next workers, with the files each run reads or writes
// still open (workerGroup.openWriters):
//
//   - no process is left in it: pids.current is 0 when it is kept and
//     again when it is reused;
//   - no more than maxResidual is left charged to it when it is reused
//     (ready). A worker's own pages are freed when it exits; what the
//     kernel leaves charged right after is the remainder of its byte-wise
//     kernel-object accounting (100-400 KiB here), most of it uncharged an
//     RCU grace period later, well before the group is taken again. A group
//     that stays above (page cache charged to it, say) is removed once it
//     has been kept maxKeep, never reclaimed with memory.force_empty: that
//     drains every CPU's page lists, and a third of the groups needed it
//     when it was done at release. The next run's peak includes the
//     residue (reported high by at most maxResidual, never low), and its
//     memory limit is that much tighter (0.1 % of 256 MiB);
//   - the counters a run reports count from its start: memory.max_usage_in_bytes
//     is reset (written 0); cpuacct.usage and the OOM kill counter are read
//     at reuse and a run's CPU time and kills are counted from there
//     (memory.failcnt, the fallback of kernels without an OOM kill count, is
//     reset);
//   - the limits are the configured ones again: a request's lower memory
//     limit is raised back, and the CPU quota is written again, which also
//     refills the CFS bandwidth of the period (a previous run's CPU use
//     never throttles the next one).
//
// Cgroup v2 groups are not reused: memory.peak can be reset only from Linux
// 6.12 on, and only per open file; every v2 worker gets a new group.

// maxFreeGroups bounds the emptied groups kept for reuse; more are removed.
// maxKeep is how long a kept group may take to become ready (the kernel
// frees the last few pages of an exited worker's kernel memory after an
// RCU grace period, usually within milliseconds) before it is removed.
// maxResidual is the most memory a kept group may still have charged.
const (
	maxFreeGroups = 32
	maxKeep       = 2 * time.Second
	maxResidual   = 256 << 10
)

// groupPool holds emptied v1 groups ready for the next worker.
type groupPool struct {
	mu     sync.Mutex
	free   []*workerGroup
	closed bool
}

// take returns the oldest kept group that is ready (see ready), nil if
// none is. Groups kept longer than maxKeep without becoming ready are
// returned in stale, for the caller to remove.
func (p *groupPool) take() (g *workerGroup, stale []*workerGroup) {
	if p == nil {
		return nil, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	keep := p.free[:0]
	for _, k := range p.free {
		switch {
		case g == nil && k.ready():
			g = k
		case g == nil && now.Sub(k.kept) > maxKeep:
			stale = append(stale, k)
		default:
			keep = append(keep, k)
		}
	}
	clear(p.free[len(keep):])
	p.free = keep
	return g, stale
}

// put keeps g for reuse; false when the pool is full or closed.
func (p *groupPool) put(g *workerGroup) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.free) >= maxFreeGroups {
		return false
	}
	g.kept = time.Now()
	p.free = append(p.free, g)
	return true
}

// close removes every kept group; later releases remove theirs.
func (p *groupPool) close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	free := p.free
	p.free, p.closed = nil, true
	p.mu.Unlock()
	var errs []error
	for _, g := range free {
		errs = append(errs, g.remove())
	}
	return errors.Join(errs...)
}

// reuse gives a kept group the limits of a new one. An error means the group
// cannot be used (another server sharing the parent may have removed it as
// stale); the caller removes it and makes a new one.
func (g *workerGroup) reuse(lim groupLimits) error {
	if !g.baselineOOM() || !g.resetCounters() {
		return errors.New("worker cgroup: a kept group's counters cannot be reset")
	}
	if g.memLimit != lim.memory {
		if err := g.writeMemoryLimit(lim.memory); err != nil {
			return err
		}
	}
	if g.procs != lim.procs {
		if err := g.write(g.pids, "pids.max", strconv.Itoa(lim.procs)); err != nil {
			return err
		}
		g.procs = lim.procs
	}
	// The last run lowered it already, unless it ended in an error.
	if err := g.setRunning(false); err != nil {
		return err
	}
	if g.cpu != "" && lim.cpuMsPerSec > 0 {
		return g.writeTo(g.quotaW, g.cpu, "cpu.cfs_quota_us", strconv.Itoa(lim.cpuMsPerSec*1000))
	}
	return nil
}

// release is called once the worker's processes are gone: the group is kept
// for reuse if it can be made as good as new, else removed. The error is a
// group that could not be removed.
func (g *workerGroup) release() error {
	if g.recycle() {
		return nil
	}
	return g.remove()
}

// recycle keeps the group for the next worker; false when that is not
// possible (v2, a process left, the pool full), and the group must be
// removed.
func (g *workerGroup) recycle() bool {
	if g.pool == nil || g.version != CgroupV1 {
		return false
	}
	g.pidsCur, _ = openOnce(g.pidsCur, filepath.Join(g.pids, "pids.current"))
	g.memUsage, _ = openOnce(g.memUsage, filepath.Join(g.mem, "memory.usage_in_bytes"))
	g.oomCtl, _ = openOnce(g.oomCtl, filepath.Join(g.mem, "memory.oom_control"))
	// No process left: pids.current counts every task of the group until
	// it is reaped, and a worker's tasks are in the same group in every
	// hierarchy (attach moved its first process into all of them, the rest
	// were forked there, and nothing in a sandbox can move a process; a
	// group whose attach failed part way is not reused).
	var buf [64]byte
	if n, ok := readIntAt(g.pidsCur, buf[:]); !ok || n != 0 {
		return false
	}
	// Whether its charge has dropped to the residue is asked when it is
	// taken (ready), not now: the kernel is still uncharging the exit.
	return g.pool.put(g)
}

// ready reports whether a kept group is as empty as a new one: no process
// (only the supervisor and root on the host can move one into a kept group:
// its pids count tells), no more than maxResidual charged.
func (g *workerGroup) ready() bool {
	var buf [64]byte
	n, ok := readIntAt(g.pidsCur, buf[:])
	if !ok || n != 0 {
		return false
	}
	n, ok = readIntAt(g.memUsage, buf[:])
	return ok && n <= maxResidual
}

func openOnce(f *os.File, name string) (*os.File, error) {
	if f != nil {
		return f, nil
	}
	return os.Open(name)
}

// baselineOOM records the OOM kill count the next run's kills are counted
// from (or resets memory.failcnt where there is no such count).
func (g *workerGroup) baselineOOM() bool {
	var buf [512]byte
	b, ok := readAt(g.oomCtl, buf[:])
	if !ok {
		return false
	}
	if n, ok := keyedValue(b, "oom_kill"); ok {
		g.oomBase = n
		return true
	}
	return g.write(g.mem, "memory.failcnt", "0") == nil
}

// resetCounters baselines the CPU usage (a run's is counted from it) and
// resets the peak to the usage left (at most maxResidual, which the next
// run's peak includes: whether the kernel keeps or frees that residue during
// the run is not known, so it is not subtracted). A group without an open
// counter reports it unmeasured anyway.
func (g *workerGroup) resetCounters() bool {
	var buf [64]byte
	if g.cpuStat != nil {
		n, ok := readIntAt(g.cpuStat, buf[:])
		if !ok {
			return false
		}
		g.cpuBase = n
	}
	return g.memPeak == nil || g.writeTo(g.peakW, g.mem, "memory.max_usage_in_bytes", "0") == nil
}

// readIntAt reads an integer from an open cgroup file.
func readIntAt(f *os.File, buf []byte) (int64, bool) {
	b, ok := readAt(f, buf)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	return n, err == nil
}

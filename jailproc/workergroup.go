package jailproc

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// workerGroup is the cgroup of one worker, created and removed by the
// supervisor itself (not by nsjail), so that it outlives the worker's
// processes: after a run it still says whether the kernel OOM-killed
// something in it, how much CPU the run used and its peak memory.
//
// It only knows a host pid. Whether that pid is the child of an nsjail or
// of a cell's zygote is not its business: attach moves it, and everything
// the pid forks afterwards is born inside the group.
type workerGroup struct {
	version CgroupVersion
	name    string
	// The folders by role. On v2 they are all the same folder; on v1 each
	// is in its own hierarchy, and cpu or cpuacct are "" when not used.
	mem, pids, cpu, cpuacct string
	dirs                    []string // every folder created, in creation order
	memsw                   bool     // v1: memory.memsw.limit_in_bytes exists
	memLimit                int64    // the memory limit in force
	// cpuStat and memPeak are the usage counters, opened when the group is
	// made (nil when the kernel has none): an open of a cgroup file costs
	// 15-90 us here, a read of an open one about 1 us, and usage is read on
	// every run.
	cpuStat, memPeak *os.File
	// Reuse (groupreuse.go): the pool the group goes back to (nil: it is
	// removed after its worker), the configured pids.max, the OOM kill
	// count and CPU usage when it was reused (a run's kills and CPU are
	// counted from them), and the files recycle reads.
	pool              *groupPool
	procs             int
	oomBase           int64
	cpuBase           int64     // v1 cpuacct.usage at reuse, ns
	kept              time.Time // when it was last kept
	pidsCur, memUsage *os.File
	oomCtl            *os.File
	// The files every run writes, kept open for writing (v1: procsW, the
	// cgroup.procs of each folder of dirs, in order; peakW, the peak memory
	// reset; quotaW, the CPU quota; both versions: weightW, the CPU weight).
	// nil when not opened: writes then open the file by name.
	procsW                 []*os.File
	peakW, quotaW, weightW *os.File
	// running is whether the group has the CPU weight of a running request
	// (setRunning); otherwise the least weight there is.
	running bool
}

// A worker's processes do most of their work outside its run: they are
// forked and set up before it, and torn down (the address space, the
// namespaces) after its result is in. Nice 19 does not lower that work
// against a run in another worker's group: across cgroups the CPU is shared
// by the groups' weights, not by their tasks' nice values. So a group has
// the least weight there is, and the default weight only while its run
// lasts (setRunning).
const (
	idleSharesV1, runningSharesV1 = "2", "1024" // cpu.shares
	idleWeightV2, runningWeightV2 = "1", "100"  // cpu.weight
)

// groupLimits are what a new group enforces.
type groupLimits struct {
	memory      int64 // bytes (and memory+swap: no swap at all)
	procs       int   // pids.max
	cpuMsPerSec int   // 0: no CPU bandwidth cap
}

// cpuPeriod is the CFS period of the CPU cap, the same one second that
// nsjail's --cgroup_cpu_ms_per_sec used: a burst of up to CPUMsPerSec
// milliseconds, then throttled until the next second.
const cpuPeriod = 1_000_000 // microseconds

// groupPrefix starts the name of every worker group. The rest of the name is
// a random tag of the supervisor and a counter: the name is visible inside
// the jail (/proc/self/cgroup), so it must not reveal host pids or uids.
const groupPrefix = "sse-"

// groupNamer hands out group names unique to one supervisor; the random tag
// keeps them apart from those of another server sharing the parent.
type groupNamer struct {
	tag string
	n   atomic.Uint64
}

func newGroupNamer() *groupNamer {
	b := make([]byte, 4)
	rand.Read(b)
	return &groupNamer{tag: hex.EncodeToString(b)}
}

func (g *groupNamer) next() string {
	return groupPrefix + g.tag + "-" + strconv.FormatUint(g.n.Add(1), 10)
}

// newGroup creates a worker group below the parent and sets its limits. It
// returns nil, nil when cgroups are not in use.
func (s *cgroupSetup) newGroup(lim groupLimits) (_ *workerGroup, err error) {
	if s.version == CgroupNone {
		return nil, nil
	}
	g, stale := s.free.take()
	for _, k := range stale {
		k.remove()
	}
	if g != nil {
		if err := g.reuse(lim); err == nil {
			return g, nil
		}
		g.remove()
	}
	g = &workerGroup{version: s.version, name: s.names.next(), memsw: s.memsw, pool: s.free}
	switch s.version {
	case CgroupV1:
		g.mem = filepath.Join(s.root, "memory", s.parent, g.name)
		g.pids = filepath.Join(s.root, "pids", s.parent, g.name)
		if s.cpu {
			g.cpu = filepath.Join(s.root, "cpu", s.parent, g.name)
		}
		if s.cpuacct != "" {
			g.cpuacct = filepath.Join(s.cpuacct, s.parent, g.name)
			if g.cpuacct == g.cpu { // cpu,cpuacct mounted together
				g.cpuacct = g.cpu
			}
		}
	case CgroupV2:
		dir := filepath.Join(s.root, s.parent, g.name)
		g.mem, g.pids, g.cpuacct = dir, dir, dir
		if s.cpu {
			g.cpu = dir
		}
	}
	defer func() {
		if err != nil {
			if rerr := g.remove(); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	for _, dir := range []string{g.mem, g.pids, g.cpu, g.cpuacct} {
		if dir == "" || containsString(g.dirs, dir) {
			continue
		}
		if err := cgroupOp(func() error { return cgroupMkdir(dir) }); err != nil {
			return nil, fmt.Errorf("create worker cgroup: %w", err)
		}
		g.dirs = append(g.dirs, dir)
	}
	if err := g.setLimits(lim); err != nil {
		return nil, err
	}
	g.openCounters()
	if g.version == CgroupV1 {
		g.openWriters()
	}
	if g.cpu != "" {
		// Written twice per run, in both versions (a v2 group lives one
		// worker, a v1 group many).
		file, _ := g.weight(false)
		g.weightW, _ = os.OpenFile(filepath.Join(g.cpu, file), os.O_WRONLY, 0)
	}
	return g, nil
}

// openWriters opens the files a reused v1 group is written on every run:
// opening a cgroup file costs far more than writing an open one, and a
// group lasts many runs. A file that does not open is written by name.
func (g *workerGroup) openWriters() {
	for _, dir := range g.dirs {
		f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			g.closeWriters()
			break
		}
		g.procsW = append(g.procsW, f)
	}
	g.peakW, _ = os.OpenFile(filepath.Join(g.mem, "memory.max_usage_in_bytes"), os.O_WRONLY, 0)
	if g.cpu != "" {
		g.quotaW, _ = os.OpenFile(filepath.Join(g.cpu, "cpu.cfs_quota_us"), os.O_WRONLY, 0)
	}
}

// weighsCPU reports whether the group has the cpu controller: its weight,
// not its tasks' nice values, decides its share of the CPU.
func (g *workerGroup) weighsCPU() bool { return g != nil && g.cpu != "" }

// setRunning gives the group the CPU weight of a running request (on) or
// the least weight (off). A no-op without the cpu controller.
func (g *workerGroup) setRunning(on bool) error {
	if !g.weighsCPU() || g.running == on {
		return nil
	}
	file, value := g.weight(on)
	if err := g.writeTo(g.weightW, g.cpu, file, value); err != nil {
		return err
	}
	g.running = on
	return nil
}

// weight is the CPU weight file of the group's version and its value for a
// running or an idle worker.
func (g *workerGroup) weight(running bool) (file, value string) {
	if g.version == CgroupV2 {
		if running {
			return "cpu.weight", runningWeightV2
		}
		return "cpu.weight", idleWeightV2
	}
	if running {
		return "cpu.shares", runningSharesV1
	}
	return "cpu.shares", idleSharesV1
}

func (g *workerGroup) closeWriters() {
	for _, f := range append(g.procsW, g.peakW, g.quotaW, g.weightW) {
		if f != nil {
			f.Close()
		}
	}
	g.procsW, g.peakW, g.quotaW, g.weightW = nil, nil, nil, nil
}

// writeTo writes value to an open control file, or to dir/file when f is nil.
func (g *workerGroup) writeTo(f *os.File, dir, file, value string) error {
	if f == nil {
		return g.write(dir, file, value)
	}
	if _, err := f.Write([]byte(value)); err != nil {
		return fmt.Errorf("worker cgroup: write %s: %w", filepath.Join(dir, file), err)
	}
	return nil
}

// openCounters opens the files usage reads; a missing one stays nil and its
// value unmeasured.
func (g *workerGroup) openCounters() {
	cpu, peak := filepath.Join(g.cpuacct, "cpu.stat"), filepath.Join(g.mem, "memory.peak")
	if g.version == CgroupV1 {
		cpu, peak = filepath.Join(g.cpuacct, "cpuacct.usage"), filepath.Join(g.mem, "memory.max_usage_in_bytes")
		if g.cpuacct == "" {
			cpu = ""
		}
	}
	if cpu != "" {
		g.cpuStat, _ = os.Open(cpu)
	}
	g.memPeak, _ = os.Open(peak)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (g *workerGroup) setLimits(lim groupLimits) error {
	if err := g.writeMemoryLimit(lim.memory); err != nil {
		return err
	}
	if g.version == CgroupV2 {
		// No swap at all: the memory limit is the whole budget. Absent
		// when the kernel has no swap accounting.
		if err := g.write(g.mem, "memory.swap.max", "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := g.write(g.pids, "pids.max", strconv.Itoa(lim.procs)); err != nil {
		return err
	}
	g.procs = lim.procs
	if g.cpu != "" {
		file, idle := g.weight(false)
		if err := g.write(g.cpu, file, idle); err != nil {
			return err
		}
	}
	if g.version == CgroupV2 {
		if g.cpu != "" && lim.cpuMsPerSec > 0 {
			return g.write(g.cpu, "cpu.max", fmt.Sprintf("%d %d", lim.cpuMsPerSec*1000, cpuPeriod))
		}
		return nil
	}
	if g.cpu != "" && lim.cpuMsPerSec > 0 {
		if err := g.write(g.cpu, "cpu.cfs_period_us", strconv.Itoa(cpuPeriod)); err != nil {
			return err
		}
		return g.write(g.cpu, "cpu.cfs_quota_us", strconv.Itoa(lim.cpuMsPerSec*1000))
	}
	return nil
}

// writeMemoryLimit sets the memory limit (v1: and memory+swap to the same
// value, so that nothing spills into swap). v1 requires memsw >= limit at
// every moment: lowering writes the limit first, raising memsw first.
func (g *workerGroup) writeMemoryLimit(bytes int64) error {
	v := strconv.FormatInt(bytes, 10)
	if g.version == CgroupV2 {
		if err := g.write(g.mem, "memory.max", v); err != nil {
			return err
		}
		g.memLimit = bytes
		return nil
	}
	files := []string{"memory.limit_in_bytes"}
	if g.memsw {
		files = append(files, "memory.memsw.limit_in_bytes")
		if g.memLimit != 0 && bytes > g.memLimit {
			files[0], files[1] = files[1], files[0]
		}
	}
	for _, f := range files {
		if err := g.write(g.mem, f, v); err != nil {
			return err
		}
	}
	g.memLimit = bytes
	return nil
}

// setMemoryLimit lowers the group's memory limit to bytes. It never raises
// it: a request may ask for less memory than the server allows, not more.
func (g *workerGroup) setMemoryLimit(bytes int64) error {
	if bytes <= 0 || bytes >= g.memLimit {
		return nil
	}
	return g.writeMemoryLimit(bytes)
}

func (g *workerGroup) write(dir, file, value string) error {
	if err := cgroupWriteFile(filepath.Join(dir, file), []byte(value)); err != nil {
		return fmt.Errorf("worker cgroup: %w", err)
	}
	return nil
}

// attach moves the process pid (all its threads) into the group, in every
// hierarchy. The caller makes sure it is the only process of the worker, so
// that nothing of the worker is left outside.
//
// A group whose attach failed part way is never reused: its processes may
// be in some of its folders and not others.
func (g *workerGroup) attach(pid int) error {
	v := strconv.Itoa(pid)
	return cgroupOp(func() error {
		for i, dir := range g.dirs {
			var f *os.File
			if i < len(g.procsW) {
				f = g.procsW[i]
			}
			if err := g.writeTo(f, dir, "cgroup.procs", v); err != nil {
				g.pool = nil
				return fmt.Errorf("attach pid to its group: %w", err)
			}
		}
		return nil
	})
}

// groupUsage is what the group's processes consumed, as far as measured.
type groupUsage struct {
	cpu       time.Duration
	cpuOK     bool
	memPeak   int64
	memPeakOK bool
}

// usage reads the group's CPU time and peak memory. A counter the kernel
// does not offer (v2 memory.peak before Linux 5.19, no cpuacct on v1) is
// reported as not measured, never estimated.
func (g *workerGroup) usage() groupUsage {
	var u groupUsage
	var buf [512]byte // cpu.stat is a few lines
	if b, ok := readAt(g.cpuStat, buf[:]); ok {
		if g.version == CgroupV2 {
			if us, ok := keyedValue(b, "usage_usec"); ok {
				u.cpu, u.cpuOK = time.Duration(us)*time.Microsecond, true
			}
		} else if ns, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64); err == nil {
			u.cpu, u.cpuOK = time.Duration(ns-g.cpuBase), true
		}
	}
	if b, ok := readAt(g.memPeak, buf[:]); ok {
		n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
		u.memPeak, u.memPeakOK = n, err == nil
	}
	return u
}

// readAt reads an open cgroup file from its start: the kernel makes its
// content anew on every read at offset 0.
func readAt(f *os.File, buf []byte) ([]byte, bool) {
	if f == nil {
		return nil, false
	}
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) || n == 0 {
		return nil, false
	}
	return buf[:n], true
}

// oomKilled reports whether the kernel's OOM killer killed a process of
// the group: v2 memory.events oom_kill; v1 memory.oom_control oom_kill
// (Linux 4.13+), or, on an older v1 kernel without that counter, whether
// the limit was hit at all (memory.failcnt), the best signal left.
func (g *workerGroup) oomKilled() (bool, error) {
	if g.version == CgroupV2 {
		b, err := os.ReadFile(filepath.Join(g.mem, "memory.events"))
		if err != nil {
			return false, fmt.Errorf("worker cgroup: %w", err)
		}
		n, _ := keyedValue(b, "oom_kill")
		return n > 0, nil
	}
	b, err := os.ReadFile(filepath.Join(g.mem, "memory.oom_control"))
	if err != nil {
		return false, fmt.Errorf("worker cgroup: %w", err)
	}
	if n, ok := keyedValue(b, "oom_kill"); ok {
		return n > g.oomBase, nil // a reused group counts from its reuse
	}
	n, ok := readInt(filepath.Join(g.mem, "memory.failcnt"))
	if !ok {
		return false, errors.New("worker cgroup: neither memory.oom_control oom_kill nor memory.failcnt can be read")
	}
	return n > 0, nil
}

// removeTries and removeWait bound how long remove waits for the kernel to
// let go of a group whose last process has just exited: rmdir answers EBUSY
// until the exit has been fully accounted.
const (
	removeTries = 100
	removeWait  = 10 * time.Millisecond
)

// remove deletes the group's folders. Its processes must be dead (or
// dying). Safe on a group already removed.
func (g *workerGroup) remove() error {
	for _, f := range []*os.File{g.cpuStat, g.memPeak, g.pidsCur, g.memUsage, g.oomCtl} {
		if f != nil {
			f.Close()
		}
	}
	g.cpuStat, g.memPeak, g.pidsCur, g.memUsage, g.oomCtl = nil, nil, nil, nil, nil
	g.closeWriters()
	var errs []error
	for i := len(g.dirs) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < removeTries; try++ {
			if err = cgroupOp(func() error { return cgroupRemoveDir(g.dirs[i]) }); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			if !errors.Is(err, syscall.EBUSY) {
				break
			}
			time.Sleep(removeWait)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroupMkdir creates one cgroup folder; the kernel fills it with its
// control files. Tests replace it on a fake cgroupfs.
var cgroupMkdir = func(dir string) error { return os.Mkdir(dir, 0o755) }

// cgroupRemoveDir removes one cgroup folder (rmdir, which the kernel allows
// with the control files inside). Tests replace it on a fake cgroupfs.
var cgroupRemoveDir = os.Remove

// keyedValue finds "key N" in a flat-keyed cgroup file (cpu.stat,
// memory.events, memory.oom_control).
func keyedValue(b []byte, key string) (int64, bool) {
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(" "))
		if ok && string(k) == key {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func readInt(name string) (int64, bool) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	return n, err == nil
}

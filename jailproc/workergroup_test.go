package jailproc

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

// realV1 prepares the machine's cgroup v1 hierarchy under a test parent, or
// skips on a machine that has none.
func realV1(t *testing.T, cpuMs int) cgroupSetup {
	t.Helper()
	s, err := prepareCgroups(Config{Cgroups: CgroupsAuto, CgroupRoot: testenv.CgroupRoot, CgroupParent: testenv.CgroupParent(t, "workergroup"), CPUMsPerSec: cpuMs})
	if err != nil {
		t.Fatal(err)
	}
	if s.version != CgroupV1 {
		t.Skipf("no cgroup v1 hierarchy here (%v: %s); the v2 side is tested on the fake cgroupfs", s.version, s.reason)
	}
	t.Cleanup(s.removeParents)
	return s
}

// heldProcess starts script in python3, waiting for a line on stdin before
// it runs it, so that it can be attached to a group first. go returns a
// function that lets it run and waits for it.
func heldProcess(t *testing.T, script string) (pid int, run func() error) {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", "-c", "import sys\nsys.stdin.readline()\n"+script)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid, func() error {
		in.Write([]byte("go\n"))
		in.Close()
		return cmd.Wait()
	}
}

func TestAWorkerGroupOnTheRealV1HierarchyEnforcesItsLimitsAndReportsUsageUntilRemoved(t *testing.T) {
	s := realV1(t, 500)
	g, err := s.newGroup(groupLimits{memory: 64 << 20, procs: 8, cpuMsPerSec: 500})
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		filepath.Join(g.mem, "memory.limit_in_bytes"): strconv.Itoa(64 << 20),
		filepath.Join(g.pids, "pids.max"):             "8",
	} {
		if b, err := os.ReadFile(file); err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q (%v), want %s", file, b, err, want)
		}
	}
	if s.memsw {
		if b, _ := os.ReadFile(filepath.Join(g.mem, "memory.memsw.limit_in_bytes")); strings.TrimSpace(string(b)) != strconv.Itoa(64<<20) {
			t.Errorf("memory+swap limit %q: a worker could spill into swap", b)
		}
	}
	if g.cpu != "" {
		if b, _ := os.ReadFile(filepath.Join(g.cpu, "cpu.cfs_quota_us")); strings.TrimSpace(string(b)) != "500000" {
			t.Errorf("cpu quota %q, want 500000 per 1 s period", b)
		}
	}
	// 32 MiB touched and 0.3 s of CPU, all after joining the group.
	pid, run := heldProcess(t, "import time\nb = bytearray(32 << 20)\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n")
	if err := g.attach(pid); err != nil {
		t.Fatal(err)
	}
	if err := run(); err != nil {
		t.Fatalf("a process within its limits failed: %v", err)
	}
	u := g.usage()
	if s.cpuacct != "" && (!u.cpuOK || u.cpu < 250*time.Millisecond) {
		t.Errorf("CPU usage %v (measured %v) for a process that burnt 0.3 s", u.cpu, u.cpuOK)
	}
	if !u.memPeakOK || u.memPeak < 32<<20 || u.memPeak > 64<<20 {
		t.Errorf("peak memory %d (measured %v) for a process that touched 32 MiB", u.memPeak, u.memPeakOK)
	}
	if oom, err := g.oomKilled(); err != nil || oom {
		t.Errorf("oomKilled = %v, %v for a process within its limit", oom, err)
	}
	if err := g.remove(); err != nil {
		t.Fatal(err)
	}
	for _, d := range g.dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after remove: %v", d, err)
		}
	}
}

func TestAWorkerGroupOnTheRealV1HierarchyCountsTheOOMKillOfItsMemoryHog(t *testing.T) {
	s := realV1(t, 0)
	g, err := s.newGroup(groupLimits{memory: 48 << 20, procs: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer g.remove()
	pid, run := heldProcess(t, "xs = []\nwhile True: xs.append(bytearray(1 << 20))\n")
	if err := g.attach(pid); err != nil {
		t.Fatal(err)
	}
	err = run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the hog ended with %v, want SIGKILL by the OOM killer", err)
	}
	if oom, err := g.oomKilled(); err != nil || !oom {
		t.Fatalf("oomKilled = %v, %v after the kernel OOM-killed the group's process", oom, err)
	}
	if err := g.remove(); err != nil {
		t.Fatalf("remove right after the OOM kill: %v", err)
	}
}

func TestAWorkerGroupNameRevealsNoHostPidOrUid(t *testing.T) {
	f := newFakeCgroupFS(t, containerRoot(""))
	s, err := f.prepare(t, CgroupsRequired, "executor")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.newGroup(groupLimits{memory: 1 << 20, procs: 1})
	b, _ := s.newGroup(groupLimits{memory: 1 << 20, procs: 1})
	name := regexp.MustCompile(`^sse-[0-9a-f]{8}-[0-9]+$`)
	if !name.MatchString(a.name) || !name.MatchString(b.name) || a.name == b.name {
		t.Fatalf("group names %q and %q: want distinct sse-<tag>-<counter>", a.name, b.name)
	}
	if strings.Contains(a.name, strconv.Itoa(os.Getpid())) {
		t.Fatalf("group name %q contains the server's pid", a.name)
	}
}

func TestAWorkerGroupOnCgroupV2SetsItsLimitsReadsItsCountersAndWaitsForTheLastExit(t *testing.T) {
	files := containerRoot("")
	files["cgroup.controllers"] = "cpu memory pids\n"
	f := newFakeCgroupFS(t, files)
	s, err := prepareCgroups(Config{Cgroups: CgroupsRequired, CgroupRoot: f.root, CgroupParent: "executor", CPUMsPerSec: 1000})
	if err != nil || s.version != CgroupV2 || !s.cpu {
		t.Fatalf("%v %v cpu %v %q", err, s.version, s.cpu, s.cpuReason)
	}
	f.writes = nil
	g, err := s.newGroup(groupLimits{memory: 256 << 20, procs: 32, cpuMsPerSec: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.attach(4242); err != nil {
		t.Fatal(err)
	}
	if err := g.setMemoryLimit(64 << 20); err != nil {
		t.Fatal(err)
	}
	if err := g.setMemoryLimit(512 << 20); err != nil { // never raised
		t.Fatal(err)
	}
	dir := "executor/" + g.name + "/"
	wantWrites(t, f.writes,
		dir+"memory.max <- 268435456",
		dir+"memory.swap.max <- 0",
		dir+"pids.max <- 32",
		dir+"cpu.weight <- 1",
		dir+"cpu.max <- 1000000 1000000",
		dir+"cgroup.procs <- 4242",
		dir+"memory.max <- 67108864",
	)
	// What the kernel shows after a run whose process was OOM-killed.
	os.WriteFile(filepath.Join(f.root, dir, "memory.events"), []byte("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n"), 0o644)
	os.WriteFile(filepath.Join(f.root, dir, "cpu.stat"), []byte("usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n"), 0o644)
	os.WriteFile(filepath.Join(f.root, dir, "memory.peak"), []byte("67100672\n"), 0o644)
	if oom, err := g.oomKilled(); err != nil || !oom {
		t.Fatalf("oomKilled = %v, %v with oom_kill 1", oom, err)
	}
	if u := g.usage(); !u.cpuOK || u.cpu != 123456*time.Microsecond || !u.memPeakOK || u.memPeak != 67100672 {
		t.Fatalf("usage %+v", u)
	}
	// rmdir answers EBUSY until the kernel has finished the last exit.
	busy := 0
	f.beforeRemove = func(rel string) {
		if busy++; busy == 3 {
			os.WriteFile(filepath.Join(f.root, dir, "cgroup.procs"), nil, 0o644)
		}
	}
	if err := g.remove(); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.root, dir)); !errors.Is(err, os.ErrNotExist) || busy < 3 {
		t.Fatalf("group still there (%v) after %d tries", err, busy)
	}
}

func TestAWorkerGroupOnCgroupV2WithoutOOMKillsOrMemoryPeakSaysSo(t *testing.T) {
	f := newFakeCgroupFS(t, containerRoot(""))
	// A kernel before 5.19 has no memory.peak.
	f.groupFiles = map[string]string{"cgroup.procs": "", "cpu.stat": "usage_usec 5\n", "memory.events": "oom 0\noom_kill 0\n"}
	s, err := f.prepare(t, CgroupsRequired, "executor")
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.newGroup(groupLimits{memory: 1 << 20, procs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if oom, err := g.oomKilled(); err != nil || oom {
		t.Fatalf("oomKilled = %v, %v with oom_kill 0", oom, err)
	}
	// No memory.peak: not measured, not made up.
	if u := g.usage(); u.memPeakOK || !u.cpuOK || u.cpu != 5*time.Microsecond {
		t.Fatalf("usage %+v from a group without memory.peak", u)
	}
}

package jailproc

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/internal/testenv"
)

// reuseSupervisor is a supervisor of the given isolation on the real cgroup
// v1 hierarchy, or a skip where there is none (v2 groups are never reused).
func reuseSupervisor(t *testing.T, isolation Isolation) *Supervisor {
	t.Helper()
	return reuseSupervisorWith(t, Config{Isolation: isolation})
}

func reuseSupervisorWith(t *testing.T, c Config) *Supervisor {
	t.Helper()
	c.NsjailPath, c.CgroupParent, c.MemoryLimit, c.Timeout = testenv.Nsjail(t), testenv.CgroupParent(t, "groupreuse"), 128<<20, 5*time.Second
	s, err := New(c, UIDRange{Base: testenv.UIDBase(t), Size: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.cg.version != CgroupV1 {
		t.Skipf("worker groups are reused on cgroup v1 only; here: %v %s", s.cg.version, s.cg.reason)
	}
	return s
}

func startIn(t *testing.T, s *Supervisor) *Process {
	t.Helper()
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

// waitReady waits until the kernel has uncharged the last of a killed
// worker's memory from its kept group (an RCU grace period or so).
func waitReady(t *testing.T, g *workerGroup) {
	t.Helper()
	for deadline := time.Now().Add(maxKeep); !g.ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(g.mem, "memory.usage_in_bytes"))
			t.Fatalf("the killed worker's group still has %s bytes charged after %v", strings.TrimSpace(string(b)), maxKeep)
		}
	}
}

func fileIs(t *testing.T, dir, file, want string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || strings.TrimSpace(string(b)) != want {
		t.Errorf("reused group: %s is %q (%v), want %s", file, b, err, want)
	}
}

func testReusedGroup(t *testing.T, isolation Isolation) {
	s := reuseSupervisor(t, isolation)
	// Run A lowers its memory limit to 48 MiB, burns CPU, then is OOM-killed.
	a := startIn(t, s)
	ga := a.w.group
	res, err := a.Run(context.Background(), executor.Request{Mode: executor.ModeSingle, MemoryLimit: 48 << 20,
		Script: []byte("import time\ndef main():\n    end = time.process_time() + 0.3\n    while time.process_time() < end: pass\n    xs = []\n    while True: xs.append(bytearray(1 << 20))\n")})
	if err != nil || res.Status != executor.StatusMemoryLimit || !strings.Contains(res.Error.Message, "48 MiB") {
		t.Fatalf("run A: %v %s %+v", err, res.Status, res.Error)
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ga)
	b := startIn(t, s)
	if b.w.group != ga {
		t.Fatalf("the next worker got a new group %s, not the emptied %s", b.w.group.mem, ga.mem)
	}
	// No limit of A's request, no process, no charge, no OOM kill of A's.
	fileIs(t, ga.mem, "memory.limit_in_bytes", strconv.Itoa(128<<20))
	if ga.memsw {
		fileIs(t, ga.mem, "memory.memsw.limit_in_bytes", strconv.Itoa(128<<20))
	}
	fileIs(t, ga.pids, "pids.max", strconv.Itoa(s.cfg.MaxProcs))
	if ga.cpu != "" {
		fileIs(t, ga.cpu, "cpu.cfs_quota_us", strconv.Itoa(s.cfg.CPUMsPerSec*1000))
	}
	if procs, _ := os.ReadFile(filepath.Join(ga.pids, "cgroup.procs")); len(strings.Fields(string(procs))) != 1 {
		t.Errorf("the reused group holds %q, want the new worker alone", procs)
	}
	if oom, err := ga.oomKilled(); err != nil || oom {
		t.Errorf("the reused group reports an OOM kill (%v, %v) before its run: it is run A's", oom, err)
	}
	// B's usage is B's own: far below A's 0.3 s of CPU and 48 MiB.
	res, err = b.Run(context.Background(), executor.Request{Mode: executor.ModeSingle, Script: []byte("def main():\n    print('hello')\n    return 1\n")})
	if err != nil || res.Status != executor.StatusOK {
		t.Fatalf("run B: %v %+v", err, res)
	}
	if !res.Usage.CPUMeasured || res.Usage.CPU >= 200*time.Millisecond {
		t.Errorf("run B reports %v of CPU (measured %v): run A's 0.3 s are counted in", res.Usage.CPU, res.Usage.CPUMeasured)
	}
	if !res.Usage.MemoryPeakMeasured || res.Usage.MemoryPeak >= 40<<20 {
		t.Errorf("run B reports a peak of %d bytes (measured %v): run A's 48 MiB are counted in", res.Usage.MemoryPeak, res.Usage.MemoryPeakMeasured)
	}
}

func TestAReusedCellWorkerGroupCarriesNoLimitUsageOrOOMKillOfTheRunBefore(t *testing.T) {
	testReusedGroup(t, IsolationCell)
}

func TestAReusedJailWorkerGroupCarriesNoLimitUsageOrOOMKillOfTheRunBefore(t *testing.T) {
	testReusedGroup(t, IsolationJail)
}

func TestAGroupStillHoldingAProcessIsRemovedNotReused(t *testing.T) {
	s := reuseSupervisor(t, IsolationCell)
	p := startIn(t, s)
	g := p.w.group
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, g)
	// The group is kept; a process put into it afterwards (by root on the
	// host: nothing in a sandbox can) makes it unfit for the next worker.
	pid, run := heldProcess(t, "")
	if err := g.attach(pid); err != nil {
		t.Fatal(err)
	}
	next := startIn(t, s)
	if next.w.group == g {
		t.Fatal("a group holding a process was handed to the next worker")
	}
	run()
	next.Kill()
	if err := g.remove(); err != nil {
		t.Errorf("the refused group cannot be removed once its process is gone: %v", err)
	}
}

// A worker's group has the least CPU weight while its processes are set up
// and torn down, and the default weight while its run lasts: other
// workers' set-up and teardown never take CPU from a running request in
// proportion to their number (nice 19 does not reach across cgroups).
func TestAWorkersGroupHasTheCPUWeightOfARunOnlyWhileItsRunLasts(t *testing.T) {
	for _, iso := range []Isolation{IsolationCell, IsolationJail} {
		t.Run(string(iso), func(t *testing.T) {
			s := reuseSupervisorWith(t, Config{Isolation: iso, CPUMsPerSec: 1000})
			if !s.cg.cpu {
				t.Skipf("no cpu controller here: %s", s.cg.cpuReason)
			}
			p := startIn(t, s)
			g := p.w.group
			fileIs(t, g.cpu, "cpu.shares", idleSharesV1)
			done := make(chan executor.Result, 1)
			go func() {
				res, _ := p.Run(context.Background(), executor.Request{Mode: executor.ModeSingle,
					Script: []byte("import time\ndef main():\n    time.sleep(0.5)\n    return 1\n")})
				done <- res
			}()
			deadline := time.Now().Add(5 * time.Second)
			for {
				b, _ := os.ReadFile(filepath.Join(g.cpu, "cpu.shares"))
				if strings.TrimSpace(string(b)) == runningSharesV1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("cpu.shares is %q during the run, want %s", b, runningSharesV1)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if res := <-done; res.Status != executor.StatusOK {
				t.Fatalf("run: %+v", res)
			}
			fileIs(t, g.cpu, "cpu.shares", idleSharesV1)
		})
	}
}

// Without a cpu group to weigh it, a worker is set up at nice 19 and its
// run is raised to nice 0: the run never waits behind replacements being
// set up. (In a cpu group its group's weight does this instead.)
func TestAWorkerWithoutACPUGroupRunsAtNormalPriority(t *testing.T) {
	const script = "import os\ndef main():\n    return os.getpriority(os.PRIO_PROCESS, 0)\n"
	for _, iso := range []Isolation{IsolationCell, IsolationJail} {
		t.Run(string(iso), func(t *testing.T) {
			c := Config{Isolation: iso, Cgroups: CgroupsOff, NsjailPath: testenv.Nsjail(t), Timeout: 5 * time.Second}
			s, err := New(c, UIDRange{Base: testenv.UIDBase(t), Size: 16})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			p := startIn(t, s)
			if p.w.group != nil {
				t.Fatalf("cgroups off, yet the worker has a group")
			}
			if nice, err := syscall.Getpriority(syscall.PRIO_USER, p.w.uid); err != nil || 20-nice != spawnNice {
				t.Fatalf("an idle worker's nice value is %d (%v), want %d", 20-nice, err, spawnNice)
			}
			res, err := p.Run(context.Background(), executor.Request{Mode: executor.ModeSingle, Script: []byte(script)})
			if err != nil || res.Status != executor.StatusOK || string(res.Value) != "0" {
				t.Fatalf("the run saw nice %s, want 0: %v %+v", res.Value, err, res)
			}
		})
	}
}

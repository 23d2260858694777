package jailproc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/internal/testenv"
	"github.com/secure-script-executor/executor/jailproc"
)

// The test binary doubles as a misbehaving "nsjail" for the cases a real one
// cannot produce. A wrapper script sets JAILPROC_FAKE, because the
// supervisor starts nsjail with an empty environment.
func TestMain(m *testing.M) {
	switch os.Getenv("JAILPROC_FAKE") {
	case "":
		os.Exit(m.Run())
	case "never-ready":
		time.Sleep(time.Hour)
	case "exit-early":
		fmt.Fprintln(os.Stderr, "[E] clone(CLONE_NEWUSER): Operation not permitted")
		os.Exit(255)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		// The "jailed worker": the supervisor moves nsjail's first child
		// into the worker's cgroup. It shares the process group, so the
		// SIGKILL of the group ends it too.
		if err := exec.Command("/bin/sleep", "3600").Start(); err != nil {
			os.Exit(4)
		}
		ctrl := os.NewFile(3, "ctrl")
		ctrl.Write([]byte("SSE-READY 1\n"))
		time.Sleep(time.Hour)
	case "claim-uids":
		// A second server process: claim the range, say so, hold it until
		// killed.
		base, _ := strconv.Atoi(os.Getenv("JAILPROC_CLAIM_BASE"))
		_, err := jailproc.New(jailproc.Config{NsjailPath: "/bin/false", Cgroups: jailproc.CgroupsOff, UIDLockDir: os.Getenv("JAILPROC_CLAIM_DIR")}, jailproc.UIDRange{Base: base, Size: 4})
		if err != nil {
			fmt.Println(err)
			os.Exit(5)
		}
		fmt.Println("claimed")
		time.Sleep(time.Hour)
	case "bad-ready":
		os.NewFile(3, "ctrl").Write([]byte("HELLO\n"))
		time.Sleep(time.Hour)
	}
	os.Exit(3)
}

func fakeNsjail(t *testing.T, behaviour string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "nsjail")
	script := fmt.Sprintf("#!/bin/sh\nJAILPROC_FAKE=%s exec %q \"$@\"\n", behaviour, self)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newSupervisor(t *testing.T, cfg jailproc.Config, base int) *jailproc.Supervisor {
	t.Helper()
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = testenv.CgroupParent(t, "jailproc")
	}
	s, err := jailproc.New(cfg, jailproc.UIDRange{Base: base, Size: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStartGivesUpOnAChildThatNeverBecomesReady(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: fakeNsjail(t, "never-ready"), StartTimeout: 300 * time.Millisecond}, testenv.UIDBase(t))
	start := time.Now()
	_, err := s.Start(context.Background())
	var se *jailproc.StartError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a StartError", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Start took %s with a 300ms start timeout", d)
	}
	// The uid came back: the range of 4 serves 4 more attempts.
	for i := 0; i < 4; i++ {
		if _, err := s.Start(context.Background()); errors.Is(err, jailproc.ErrNoFreeUID) {
			t.Fatal("a failed start leaked its uid")
		}
	}
}

func TestStartReportsNsjailsOwnDiagnosticsWhenTheJailCannotBeCreated(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: fakeNsjail(t, "exit-early")}, testenv.UIDBase(t))
	_, err := s.Start(context.Background())
	var se *jailproc.StartError
	if !errors.As(err, &se) || !se.Exited || se.ExitCode != 255 || !strings.Contains(se.Diagnostics, "CLONE_NEWUSER") {
		t.Fatalf("err = %#v", err)
	}
}

func TestStartRejectsAReadyLineThatIsNotTheProtocols(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: fakeNsjail(t, "bad-ready")}, testenv.UIDBase(t))
	if _, err := s.Start(context.Background()); err == nil {
		t.Fatal("a malformed ready line was accepted")
	}
}

func TestKillEscalatesToSIGKILLWhenNsjailIgnoresSIGTERM(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: fakeNsjail(t, "ignore-term")}, testenv.UIDBase(t))
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Kill() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Kill hung on a child that ignores SIGTERM")
	}
	if err := syscall.Kill(p.Pid(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the child is still alive after Kill: %v", err)
	}
	p.Kill() // idempotent
}

func TestARealJailRunsOneRequestAndKillLeavesNoProcessCgroupOrUid(t *testing.T) {
	parent := testenv.CgroupParent(t, "jailproc-real")
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), CgroupParent: parent}, testenv.UIDBase(t))
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Before it is handed any request, the worker is alone in its own group
	// in every hierarchy.
	groups := testenv.CgroupsLeft(t, parent)
	if v, _ := s.Cgroups(); v != jailproc.CgroupNone && len(groups) == 0 {
		t.Fatal("a started worker has no cgroup")
	}
	for _, g := range groups {
		b, err := os.ReadFile(filepath.Join(g, "cgroup.procs"))
		if err != nil || len(strings.Fields(string(b))) != 1 {
			t.Fatalf("%s holds %q (%v), want the worker alone", g, b, err)
		}
	}
	res, err := p.Run(context.Background(), executor.Request{Mode: executor.ModeSingle, Script: []byte("import os\ndef main():\n    print(os.getuid())\n    return os.getpid()\n")})
	if err != nil || res.Status != executor.StatusOK {
		t.Fatalf("%v %+v", err, res)
	}
	// Inside: uid 1000 and pid 1 of its own pid namespace.
	if string(res.Stdout) != "1000\n" || string(res.Value) != "1" {
		t.Fatalf("stdout %q result %s", res.Stdout, res.Value)
	}
	if _, err := p.Run(context.Background(), executor.Request{Script: []byte("def main(): return 1")}); !errors.Is(err, jailproc.ErrUsed) {
		t.Fatalf("second Run: %v, want ErrUsed", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	noGroupLeftAfterClose(t, s, parent)
}

// noGroupLeftAfterClose checks that no cgroup under parent holds a process
// (a killed worker's group may be kept empty for reuse, on cgroup v1) and
// that none is left once the supervisor is closed.
func noGroupLeftAfterClose(t *testing.T, s *jailproc.Supervisor, parent string) {
	t.Helper()
	for _, g := range testenv.CgroupsLeft(t, parent) {
		if b, err := os.ReadFile(filepath.Join(g, "cgroup.procs")); err != nil || len(strings.Fields(string(b))) > 0 {
			t.Errorf("%s holds processes %q (%v) after Kill", g, b, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left := testenv.CgroupsLeft(t, parent); len(left) > 0 {
		t.Errorf("cgroups left after Close: %v", left)
	}
}

func TestKillOfANsjailKilledWithSIGKILLStillRemovesItsCgroups(t *testing.T) {
	parent := testenv.CgroupParent(t, "jailproc-sigkill")
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), CgroupParent: parent}, testenv.UIDBase(t))
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// What an OOM of the host or an operator's kill -9 does: nsjail cannot
	// clean up after itself.
	syscall.Kill(p.Pid(), syscall.SIGKILL)
	<-p.Exited()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	noGroupLeftAfterClose(t, s, parent)
}

func TestLiveJailsNeverShareAHostUID(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t)}, testenv.UIDBase(t))
	var mu sync.Mutex
	seen := map[int]bool{}
	var procs []*jailproc.Process
	for i := 0; i < 4; i++ {
		p, err := s.Start(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		if seen[p.UID()] {
			t.Fatalf("uid %d given to two live jails", p.UID())
		}
		seen[p.UID()] = true
		mu.Unlock()
		procs = append(procs, p)
	}
	if _, err := s.Start(context.Background()); !errors.Is(err, jailproc.ErrNoFreeUID) {
		t.Fatalf("a fifth jail in a range of 4: %v", err)
	}
	for _, p := range procs {
		p.Kill()
	}
}

// inflateRSS allocates and touches n bytes in the test process, which is the
// server: a vforked nsjail's rusage reports the server's peak RSS as its own,
// which once turned every SIGKILL into memory_limit.
func inflateRSS(t *testing.T, n int) {
	t.Helper()
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	t.Cleanup(func() { runtime.KeepAlive(b) })
}

func TestSIGKILLIsAMemoryLimitOnlyWhenTheWorkersOwnCgroupCountedAnOOMKillEvenWithALargeServerRSS(t *testing.T) {
	inflateRSS(t, 300<<20)
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), MemoryLimit: 96 << 20, Timeout: 5 * time.Second, CgroupParent: testenv.CgroupParent(t, "jailproc-kill")}, testenv.UIDBase(t))
	if v, why := s.Cgroups(); v == jailproc.CgroupNone {
		t.Skipf("no cgroups here: %s", why)
	}
	// The script lowers its own CPU limit: the kernel SIGKILLs it at 1 s of
	// CPU, long before the 5 s deadline.
	res := runScript(t, s, "import resource\ndef main():\n    resource.setrlimit(resource.RLIMIT_CPU, (1, 1))\n    while True:\n        pass\n")
	if res.Status != executor.StatusTimeout || !strings.Contains(res.Error.Message, "CPU time limit") {
		t.Fatalf("CPU limit: %s %+v", res.Status, res.Error)
	}
	// nsjail reports an exit with status 137 exactly like a SIGKILL, and
	// the group counted no OOM kill: not memory_limit.
	res = runScript(t, s, "import os\ndef main():\n    os._exit(137)\n")
	if res.Status != executor.StatusTimeout {
		t.Fatalf("os._exit(137): %s %+v", res.Status, res.Error)
	}
	res = runScript(t, s, "def main():\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 20))\n")
	if res.Status != executor.StatusMemoryLimit || !strings.Contains(res.Error.Message, "96 MiB") {
		t.Fatalf("OOM: %s %+v", res.Status, res.Error)
	}
}

func TestAPrivateTMPDIRDoesNotBreakSpawns(t *testing.T) {
	private := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", private)
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t)}, testenv.UIDBase(t))
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatalf("spawn with TMPDIR=%s (0700): %v", private, err)
	}
	p.Kill()
}

func TestStartUpRemovesEmptyJailCgroupsLeftByAnEarlierRunButNotFreshOnes(t *testing.T) {
	parent := testenv.CgroupParent(t, "jailproc-stale")
	var old, fresh []string
	for _, ctl := range []string{"memory", "pids"} {
		dir := filepath.Join("/sys/fs/cgroup", ctl, parent)
		if err := os.MkdirAll(filepath.Join(dir, "NSJAIL.999991"), 0o755); err != nil {
			t.Skipf("no cgroup v1 %s hierarchy here: %v", ctl, err)
		}
		os.MkdirAll(filepath.Join(dir, "NSJAIL.999992"), 0o755)
		old = append(old, filepath.Join(dir, "NSJAIL.999991"))
		fresh = append(fresh, filepath.Join(dir, "NSJAIL.999992"))
	}
	// The leftover of a crashed run is old; the other could be a jail that
	// another server sharing the parent is setting up right now.
	for _, d := range old {
		os.Chtimes(d, time.Now().Add(-time.Hour), time.Now().Add(-time.Hour))
	}
	t.Cleanup(func() {
		for _, d := range append(old, fresh...) {
			os.Remove(d)
		}
	})
	newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), CgroupParent: parent}, testenv.UIDBase(t))
	for _, d := range old {
		if _, err := os.Stat(d); err == nil {
			info, _ := os.Stat(d)
			if time.Since(info.ModTime()) >= time.Minute {
				t.Errorf("stale %s was not removed", d)
			} else {
				t.Skip("cgroupfs does not keep modification times set with utimes; the age filter cannot be exercised here")
			}
		}
	}
	for _, d := range fresh {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("a fresh jail cgroup %s was removed: %v", d, err)
		}
	}
}

func TestTheCPUCapHoldsAScriptThatForksCPUBurnersToItsShare(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), CPUMsPerSec: 250, CgroupParent: testenv.CgroupParent(t, "jailproc-cpu")}, testenv.UIDBase(t))
	if on, why := s.CPUCap(); !on {
		t.Skipf("no cpu controller here: %s", why)
	}
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	// Two processes spin for 2 s of wall time each: without a cap up to 4 s
	// of CPU on two cores; with a quarter of a core (nsjail's period is 1 s,
	// and 2 s of wall time can touch 3 periods) at most ~0.75 s.
	script := `import os, time, resource
def main():
    kids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                pass
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
`
	res, err := p.Run(context.Background(), executor.Request{Mode: executor.ModeSingle, Script: []byte(script)})
	if err != nil || res.Status != executor.StatusOK {
		t.Fatalf("%v %s %+v", err, res.Status, res.Error)
	}
	cpu, err := strconv.ParseFloat(string(res.Value), 64)
	if err != nil {
		t.Fatal(err)
	}
	if cpu > 1.2 {
		t.Fatalf("two CPU burners used %.2f s of CPU in 2 s under a cap of 250 ms/s", cpu)
	}
	t.Logf("two CPU burners used %.2f s of CPU in 2 s under a cap of 250 ms/s", cpu)
}

func runOnce(t *testing.T, s *jailproc.Supervisor, req executor.Request) executor.Result {
	t.Helper()
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Kill(); err != nil {
			t.Error(err)
		}
	}()
	res, err := p.Run(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestEveryRunReportsTheCPUAndPeakMemoryOfItsOwnCgroupWhetherItSucceedsOrNot(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), MemoryLimit: 96 << 20}, testenv.UIDBase(t))
	if v, why := s.Cgroups(); v == jailproc.CgroupNone {
		t.Skipf("no cgroups here: %s", why)
	}
	res := runOnce(t, s, executor.Request{Mode: executor.ModeSingle, Script: []byte(
		"import time\ndef main():\n    b = bytearray(40 << 20)\n    end = time.process_time() + 0.3\n    while time.process_time() < end:\n        pass\n    return len(b)\n")})
	u := res.Usage
	if res.Status != executor.StatusOK || u.Wall < 300*time.Millisecond || u.Wall != res.Duration {
		t.Fatalf("%s %+v usage %+v", res.Status, res.Error, u)
	}
	if !u.MemoryPeakMeasured || u.MemoryPeak < 40<<20 || u.MemoryPeak > 96<<20 {
		t.Errorf("peak memory %d MiB (measured %v) for a run that touched 40 MiB", u.MemoryPeak>>20, u.MemoryPeakMeasured)
	}
	// v1 needs the cpuacct controller for CPU time; this host has it.
	if !u.CPUMeasured || u.CPU < 250*time.Millisecond {
		t.Errorf("CPU %s (measured %v) for a run that burnt 0.3 s", u.CPU, u.CPUMeasured)
	}
	res = runOnce(t, s, executor.Request{Mode: executor.ModeSingle, Script: []byte("def main():\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 20))\n")})
	if res.Status != executor.StatusMemoryLimit || !res.Usage.MemoryPeakMeasured || res.Usage.MemoryPeak < 80<<20 {
		t.Fatalf("a memory hog: %s usage %+v", res.Status, res.Usage)
	}
}

func TestWithoutCgroupsARunLeavesCPUAndMemoryUnmeasured(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), Cgroups: jailproc.CgroupsOff}, testenv.UIDBase(t))
	res := runOnce(t, s, executor.Request{Mode: executor.ModeSingle, Script: []byte("def main():\n    return sum(range(10**6))\n")})
	if res.Status != executor.StatusOK || res.Usage.CPUMeasured || res.Usage.MemoryPeakMeasured || res.Usage.CPU != 0 || res.Usage.MemoryPeak != 0 || res.Usage.Wall <= 0 {
		t.Fatalf("%s usage %+v", res.Status, res.Usage)
	}
}

func TestARequestsOwnMemoryLimitLowersTheWorkersLimitButNeverRaisesIt(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), MemoryLimit: 128 << 20}, testenv.UIDBase(t))
	if v, why := s.Cgroups(); v == jailproc.CgroupNone {
		t.Skipf("no cgroups here: %s", why)
	}
	grow := []byte("def main():\n    xs = [bytearray(1 << 20) for _ in range(64)]\n    return len(xs)\n")
	if res := runOnce(t, s, executor.Request{Mode: executor.ModeSingle, Script: grow}); res.Status != executor.StatusOK {
		t.Fatalf("64 MiB under the configured 128 MiB: %s %+v", res.Status, res.Error)
	}
	res := runOnce(t, s, executor.Request{Mode: executor.ModeSingle, Script: grow, MemoryLimit: 32 << 20})
	if res.Status != executor.StatusMemoryLimit || !strings.Contains(res.Error.Message, "32 MiB") {
		t.Fatalf("64 MiB under a request limit of 32 MiB: %s %+v", res.Status, res.Error)
	}
	hog := []byte("def main():\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 20))\n")
	res = runOnce(t, s, executor.Request{Mode: executor.ModeSingle, Script: hog, MemoryLimit: 1 << 30})
	if res.Status != executor.StatusMemoryLimit || !strings.Contains(res.Error.Message, "128 MiB") {
		t.Fatalf("a request asking for 1 GiB: %s %+v", res.Status, res.Error)
	}
}

func TestTwoSupervisorsInOneProcessCannotClaimTheSameUIDRange(t *testing.T) {
	dir, base := t.TempDir(), testenv.UIDBase(t)
	cfg := jailproc.Config{NsjailPath: "/bin/false", Cgroups: jailproc.CgroupsOff, UIDLockDir: dir}
	a, err := jailproc.New(cfg, jailproc.UIDRange{Base: base, Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.UIDs(); got != (jailproc.UIDRange{Base: base, Size: 100}) {
		t.Fatalf("UIDs() = %+v", got)
	}
	// Overlapping only in its last chunk.
	_, err = jailproc.New(cfg, jailproc.UIDRange{Base: base + 64, Size: 4})
	if !errors.Is(err, jailproc.ErrUIDRangeTaken) {
		a.Close()
		t.Fatalf("a second supervisor on the same uids: %v", err)
	}
	for _, want := range []string{fmt.Sprintf("host uids %d-%d", base+64, base+67), fmt.Sprintf("pid %d uids %d-%d", os.Getpid(), base, base+99), "--uid-base"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// A disjoint range is fine meanwhile, and the range is free after Close.
	c, err := jailproc.New(cfg, jailproc.UIDRange{Base: base + 128, Size: 4})
	if err != nil {
		t.Fatalf("a disjoint range: %v", err)
	}
	c.Close()
	a.Close()
	b, err := jailproc.New(cfg, jailproc.UIDRange{Base: base + 64, Size: 4})
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	b.Close()
}

func TestASecondServerProcessCannotClaimTheUIDRangeUntilTheFirstDies(t *testing.T) {
	dir, base := t.TempDir(), testenv.UIDBase(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "JAILPROC_FAKE=claim-uids", "JAILPROC_CLAIM_BASE="+strconv.Itoa(base), "JAILPROC_CLAIM_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "claimed\n" {
		t.Fatalf("the other process: %q", line)
	}
	cfg := jailproc.Config{NsjailPath: "/bin/false", Cgroups: jailproc.CgroupsOff, UIDLockDir: dir}
	_, err = jailproc.New(cfg, jailproc.UIDRange{Base: base, Size: 4})
	if !errors.Is(err, jailproc.ErrUIDRangeTaken) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", cmd.Process.Pid)) {
		t.Fatalf("while another process holds the range: %v", err)
	}
	// A crashed server never leaves its range claimed: the kernel drops
	// its locks.
	cmd.Process.Kill()
	cmd.Wait()
	s, err := jailproc.New(cfg, jailproc.UIDRange{Base: base, Size: 4})
	if err != nil {
		t.Fatalf("after the other process died: %v", err)
	}
	s.Close()
}

func TestABatchResultWithAnotherNumberOfItemsThanTheRequestsRecordsIsAProtocolViolation(t *testing.T) {
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t)}, testenv.UIDBase(t))
	forger := []byte("import os\ndef main(r):\n    body = b'{\"ok\":true,\"results\":[{\"result\":\"forged\",\"stdout\":\"\"}]}'\n    os.write(3, b'SSE-RES %d\\n' % len(body) + body)\n    return r\n")
	res := runOnce(t, s, executor.Request{Mode: executor.ModeBatch, Script: forger, Input: []byte("[1,2,3]"), Records: 3})
	if res.Status != executor.StatusRuntimeError || !strings.Contains(res.Error.Message, "result channel") {
		t.Fatalf("a forged 1-item answer to 3 records: %s %+v", res.Status, res.Error)
	}
	honest := []byte("def main(r):\n    return r * 2\n")
	res = runOnce(t, s, executor.Request{Mode: executor.ModeBatch, Script: honest, Input: []byte("[1,2,3]"), Records: 3})
	if res.Status != executor.StatusOK || len(res.Batch) != 3 || string(res.Batch[2].Result) != "6" {
		t.Fatalf("an honest batch: %s %+v %+v", res.Status, res.Error, res.Batch)
	}
}

func TestKillReportsAWorkerCgroupThatCannotBeRemoved(t *testing.T) {
	parent := testenv.CgroupParent(t, "jailproc-busy")
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t), CgroupParent: parent}, testenv.UIDBase(t))
	if v, why := s.Cgroups(); v == jailproc.CgroupNone {
		t.Skipf("no cgroups here: %s", why)
	}
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	groups := testenv.CgroupsLeft(t, parent)
	if len(groups) == 0 {
		t.Fatal("the worker has no cgroup")
	}
	// A process outside the jail in the worker's group keeps it busy.
	squatter := exec.Command("/bin/sleep", "3600")
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		squatter.Process.Kill()
		squatter.Wait()
		for _, g := range testenv.CgroupsLeft(t, parent) {
			for range 100 {
				if os.Remove(g) == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
	// In every hierarchy, as a worker's own processes are (only root on the
	// host can move a process, and the supervisor moves a worker into all).
	for _, g := range groups {
		if err := os.WriteFile(filepath.Join(g, "cgroup.procs"), []byte(strconv.Itoa(squatter.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err = p.Kill()
	if err == nil || !strings.Contains(err.Error(), "remove the cgroup") {
		t.Fatalf("Kill = %v, want the cgroup that could not be removed", err)
	}
	if again := p.Kill(); again == nil || again.Error() != err.Error() {
		t.Fatalf("a second Kill = %v, want the same error", again)
	}
}

// A start whose context is already done returns its error, never a worker,
// and leaves no process of its jail behind (its cgroup parent is checked
// empty when the test ends).
func TestAJailStartWithACancelledContextReturnsNoWorkerAndLeavesNothing(t *testing.T) {
	base := testenv.UIDBase(t)
	s := newSupervisor(t, jailproc.Config{NsjailPath: testenv.Nsjail(t)}, base)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, err := s.Start(ctx)
	if err == nil {
		p.Kill()
		t.Fatal("Start with a cancelled context returned a worker")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled context: %v, want context.Canceled", err)
	}
	if left := uidsInUse(base, 4); len(left) > 0 {
		t.Errorf("processes of the abandoned jail left (pid:uid): %v", left)
	}
}

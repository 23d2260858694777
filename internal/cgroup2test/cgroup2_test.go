package cgroup2test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

// gate must be 1 for the test to run: only the guest that
// scripts/test-cgroup2.sh boots sets it.
const gate = "EXECUTOR_CGROUP2_GUEST"

// mode is one isolation mode of the server under test.
type mode struct {
	name string // the value of --isolation
	// runGroups are the name prefixes of the cgroup each single-use worker
	// runs in, under --cgroup-parent.
	runGroups []string
}

// isolationModes are the modes the whole set runs in, one after the other;
// adding one is adding its line. A worker's group is NSJAIL.<pid> when
// nsjail makes it, sse-<tag>-<n> when the supervisor does.
var isolationModes = []mode{
	{"jail", []string{"NSJAIL.", "sse-"}},
	{"cell", []string{"sse-"}},
}

const cgroupFS = "/sys/fs/cgroup"

// The limits every server of the set is started with, sized for a guest
// under TCG emulation (10-50 times slower than the host): small workloads,
// long timeouts.
const (
	memoryLimit = 64 << 20
	maxProcs    = 32
	cpuMsPerSec = 500
)

var limitArgs = []string{
	"--memory-limit", "64MiB", "--max-procs", strconv.Itoa(maxProcs), "--cpu-ms-per-sec", strconv.Itoa(cpuMsPerSec),
	"--timeout", "30s", "--warm-workers", "2", "--max-workers", "4", "--acquire-timeout", "60s",
}

func TestCgroupV2(t *testing.T) {
	if os.Getenv(gate) != "1" {
		t.Skip(gate + "=1 is not set: this test runs only inside the cgroup v2 guest that `make test-cgroup2` boots")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(cgroupFS, &st); err != nil || st.Type != 0x63677270 { // CGROUP2_SUPER_MAGIC
		t.Fatalf("%s=1 but %s is not a cgroup2 mount (statfs type %#x, %v)", gate, cgroupFS, st.Type, err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but not root: the executor creates cgroups and namespaces", gate)
	}
	t.Logf("controllers at the root: %s", readTrim(filepath.Join(cgroupFS, "cgroup.controllers")))
	for _, m := range isolationModes {
		t.Run(m.name, func(t *testing.T) {
			t.Run("limits", func(t *testing.T) { testLimits(t, m) })
			t.Run("container", func(t *testing.T) { testContainer(t, m) })
		})
	}
}

// testLimits starts the server with --cgroups required at the root of the
// hierarchy (as on a host) and checks each limit, the per-run cgroups and
// shutdown.
func testLimits(t *testing.T, m mode) {
	parent := filepath.Join(cgroupFS, "executor")
	s := startServer(t, m, startOpts{})
	p := &pool{parent: parent, m: m}

	t.Run("required_starts_and_readyz_reports_cgroups_enforced", func(t *testing.T) {
		checkReadyz(t, s)
		rec := s.logRecord("cgroup limits enforced")
		if rec == nil || rec["version"] != "v2" || fmt.Sprint(rec["cpu_ms_per_sec"]) != strconv.Itoa(cpuMsPerSec) {
			t.Fatalf("no \"cgroup limits enforced\" line with version v2 and cpu_ms_per_sec %d in the log: %v", cpuMsPerSec, rec)
		}
	})

	t.Run("each_worker_has_its_own_cgroup_with_the_limits", func(t *testing.T) {
		groups := p.waitWarm(t)
		if ctl := readTrim(filepath.Join(parent, "cgroup.subtree_control")); !hasWords(ctl, "memory", "pids", "cpu") {
			t.Errorf("%s/cgroup.subtree_control = %q, want memory, pids and cpu delegated", parent, ctl)
		}
		want := map[string]string{
			"memory.max":      strconv.Itoa(memoryLimit),
			"memory.swap.max": "0",
			"pids.max":        strconv.Itoa(maxProcs),
			// An idle worker's group has the least CPU weight; a run gets 100.
			"cpu.weight": "1",
		}
		for _, g := range groups {
			for file, v := range want {
				if got := readTrim(filepath.Join(g, file)); got != v {
					t.Errorf("%s/%s = %q, want %q", g, file, got, v)
				}
			}
			// "quota period" in µs: nsjail uses a 1 s period, the cell
			// supervisor 100 ms; only the ratio is the cap.
			var quota, period int
			cpuMax := readTrim(filepath.Join(g, "cpu.max"))
			if n, _ := fmt.Sscanf(cpuMax, "%d %d", &quota, &period); n != 2 || period <= 0 || quota*1000/period != cpuMsPerSec {
				t.Errorf("%s/cpu.max = %q, want %d ms of CPU per 1000 ms", g, cpuMax, cpuMsPerSec)
			}
			t.Logf("%s: memory.max %s, memory.swap.max %s, pids.max %s, cpu.max %q, processes %s", g,
				readTrim(filepath.Join(g, "memory.max")), readTrim(filepath.Join(g, "memory.swap.max")),
				readTrim(filepath.Join(g, "pids.max")), readTrim(filepath.Join(g, "cpu.max")), strings.Fields(readTrim(filepath.Join(g, "cgroup.procs"))))
		}
	})

	t.Run("memory_limit", func(t *testing.T) {
		before := eventCount(t, filepath.Join(parent, "memory.events"), "oom_kill")
		p.runs(t, 1, func() {
			r := s.execute(t, "def main():\n    b = bytearray(100 * 1024 * 1024)\n    return len(b)\n")
			r.wantError(t, 422, "memory_limit")
		})
		// memory.events is hierarchical: the parent counts its jails' kills.
		if after := eventCount(t, filepath.Join(parent, "memory.events"), "oom_kill"); after <= before {
			t.Errorf("%s/memory.events oom_kill went from %d to %d: the cgroup OOM killer did not act", parent, before, after)
		} else {
			t.Logf("%s/memory.events oom_kill %d -> %d", parent, before, after)
		}
	})

	t.Run("cpu_time_limit_kill_is_a_timeout", func(t *testing.T) {
		// The server's RLIMIT_CPU (--timeout + 2 s) is reached before the
		// wall clock only by a script on several cores, which the 500 ms/s
		// cap forbids. So the script lowers its own hard limit to 2 s more
		// than it has used: the kernel SIGKILLs it just as it would at the
		// server's limit, well before the 30 s wall-clock limit. (In the
		// emulated guest, with the cap, the kill came at about twice the
		// limit's CPU time: about 10 s of wall time for a 3 s limit.)
		p.runs(t, 1, func() {
			r := s.execute(t, "import resource\ndef main():\n"+
				"    ru = resource.getrusage(resource.RUSAGE_SELF)\n"+
				"    lim = int(ru.ru_utime + ru.ru_stime) + 2\n"+
				"    resource.setrlimit(resource.RLIMIT_CPU, (lim, lim))\n"+
				"    while True:\n        pass\n")
			r.wantError(t, 422, "timeout")
			if r.elapsed > 25*time.Second {
				t.Errorf("the answer took %s: the 30 s wall clock, not the CPU limit, ended the run", r.elapsed)
			}
		})
	})

	t.Run("pids_limit", func(t *testing.T) {
		p.runs(t, 1, func() {
			peak := p.watchPeak("pids.current")
			r := s.execute(t, "import os, time\ndef main():\n"+
				"    n, err = 0, None\n"+
				"    try:\n"+
				"        while n < 500:\n"+
				"            if os.fork() == 0:\n"+
				"                time.sleep(60)\n"+
				"                os._exit(0)\n"+
				"            n += 1\n"+
				"    except OSError as e:\n"+
				"        err = e.errno\n"+
				"    time.sleep(3)\n"+
				"    return {'forked': n, 'errno': err}\n")
			got := peak()
			r.wantOK(t)
			var res struct {
				Forked int `json:"forked"`
				Errno  int `json:"errno"`
			}
			r.result(t, &res)
			// The worker and its children, all in the jail's cgroup.
			if res.Forked != maxProcs-1 || res.Errno != int(syscall.EAGAIN) {
				t.Errorf("the fork loop forked %d children and ended with errno %d, want %d and EAGAIN (%d)", res.Forked, res.Errno, maxProcs-1, syscall.EAGAIN)
			}
			if got.value != maxProcs {
				t.Errorf("the busiest worker cgroup peaked at pids.current %d (%s), want pids.max %d: the jail's processes are not all in its cgroup", got.value, got.group, maxProcs)
			}
			t.Logf("forked %d children (errno %d); %s peaked at pids.current %d, pids.events %q",
				res.Forked, res.Errno, got.group, got.value, got.extra)
		})
	})

	t.Run("cpu_bandwidth_cap", func(t *testing.T) {
		// Two burners at once on the guest's 2 CPUs: uncapped, each would
		// get a whole CPU; capped at 500 ms/s, each gets half of one.
		script := "import time\ndef main():\n" +
			"    t0, c0 = time.monotonic(), time.process_time()\n" +
			"    while time.monotonic() - t0 < 3:\n        pass\n" +
			"    return {'wall': time.monotonic() - t0, 'cpu': time.process_time() - c0}\n"
		p.runs(t, 2, func() {
			var wg sync.WaitGroup
			answers := make([]answer, 2)
			for i := range answers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					answers[i] = s.execute(t, script)
				}()
			}
			wg.Wait()
			share := float64(cpuMsPerSec) / 1000
			for i, r := range answers {
				r.wantOK(t)
				var res struct{ Wall, CPU float64 }
				r.result(t, &res)
				got := res.CPU / res.Wall
				t.Logf("burner %d: %.2f s of CPU in %.2f s: %.2f of a CPU (cap %.2f)", i, res.CPU, res.Wall, got, share)
				// With nsjail's 1 s period a 3 s window can hold up to
				// four periods' quota: up to about 0.6 of a CPU.
				if got > share+0.25 || got < share-0.2 {
					t.Errorf("burner %d got %.2f of a CPU, want about %.2f (the cpu.max cap)", i, got, share)
				}
			}
		})
	})

	t.Run("shutdown_removes_every_cgroup", func(t *testing.T) {
		code := s.stop(t)
		if code != 0 {
			t.Fatalf("the executor exited with %d after SIGTERM, want 0", code)
		}
		if left := subgroups(parent); len(left) > 0 {
			t.Errorf("cgroups left after shutdown: %s", describeGroups(left))
		}
		if _, err := os.Stat(parent); !os.IsNotExist(err) {
			t.Errorf("the jails' parent %s is still there after shutdown (%v)", parent, err)
		}
		checkNoNsjail(t)
		t.Logf("after shutdown: %s removed, no nsjail process left", parent)
	})
}

// testContainer starts the server as a container runtime would on a cgroup
// v2 host with its own cgroup namespace (a Kubernetes pod, Docker
// --cgroupns=private): /sys/fs/cgroup is the pod's cgroup, a non-root group
// that already holds the pod's other processes. The "no internal processes"
// rule then forbids enabling controllers for children there until the
// executor has moved every process of it into a leaf.
func testContainer(t *testing.T, m mode) {
	// The runtime delegates the controllers to the pod's group.
	if err := os.WriteFile(filepath.Join(cgroupFS, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0); err != nil {
		t.Fatalf("delegate controllers at the root: %v", err)
	}
	pod := filepath.Join(cgroupFS, "pod-"+m.name)
	leaf := filepath.Join(pod, "executor-server")
	parent := filepath.Join(pod, "executor")
	if err := os.Mkdir(pod, 0o755); err != nil {
		t.Fatal(err)
	}
	podDir, err := os.Open(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer podDir.Close()
	// Another process of the pod (its pause process, a sidecar), started
	// straight into the pod's group.
	other := exec.Command("sleep", "600")
	other.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(podDir.Fd())}
	if err := other.Start(); err != nil {
		t.Fatalf("start the pod's other process: %v", err)
	}
	t.Cleanup(func() {
		other.Process.Kill()
		other.Wait()
		for _, g := range append(subgroups(pod), pod) {
			if err := os.Remove(g); err != nil && !os.IsNotExist(err) {
				t.Logf("remove %s: %v", g, err)
			}
		}
	})

	// The executor in a cgroup namespace rooted at the pod's group, with
	// cgroup2 mounted afresh so that /sys/fs/cgroup shows that group.
	s := startServer(t, m, startOpts{
		name:     "container",
		cgroupFD: int(podDir.Fd()),
		wrap: []string{"unshare", "--cgroup", "--mount", "--", "sh", "-ec",
			`umount -l /sys/fs/cgroup; mount -t cgroup2 cgroup2 /sys/fs/cgroup; exec "$@"`, "sh"},
		beforeReady: func(pid int) {
			t.Logf("pod %s holds pids %s (the executor is %d, the other process %d)", pod, strings.Fields(readTrim(filepath.Join(pod, "cgroup.procs"))), pid, other.Process.Pid)
		},
	})
	p := &pool{parent: parent, m: m}

	t.Run("processes_moved_into_a_leaf", func(t *testing.T) {
		checkReadyz(t, s)
		rec := s.logRecord("cgroup limits enforced")
		setup, _ := rec["setup"].(string)
		if rec == nil || rec["version"] != "v2" || !strings.Contains(setup, "moved") || !strings.Contains(setup, "into the leaf /sys/fs/cgroup/executor-server") {
			t.Fatalf("no \"cgroup limits enforced\" line with version v2 saying what was moved into the leaf: %v", rec)
		}
		if procs := readTrim(filepath.Join(pod, "cgroup.procs")); procs != "" {
			t.Errorf("the pod's own group still holds processes %q", procs)
		}
		inLeaf := strings.Fields(readTrim(filepath.Join(leaf, "cgroup.procs")))
		for _, pid := range []int{other.Process.Pid, s.cmd.Process.Pid} {
			if !slices.Contains(inLeaf, strconv.Itoa(pid)) {
				t.Errorf("pid %d is not in the leaf %s (it holds %v)", pid, leaf, inLeaf)
			}
		}
		if ctl := readTrim(filepath.Join(pod, "cgroup.subtree_control")); !hasWords(ctl, "memory", "pids") {
			t.Errorf("%s/cgroup.subtree_control = %q, want memory and pids enabled", pod, ctl)
		}
		t.Logf("log: %s; leaf %s holds %v", setup, leaf, inLeaf)
	})

	t.Run("limits_apply_in_the_namespace", func(t *testing.T) {
		for _, g := range p.waitWarm(t) {
			if got := readTrim(filepath.Join(g, "memory.max")); got != strconv.Itoa(memoryLimit) {
				t.Errorf("%s/memory.max = %q, want %d", g, got, memoryLimit)
			}
		}
		p.runs(t, 1, func() {
			r := s.execute(t, "def main():\n    b = bytearray(100 * 1024 * 1024)\n    return len(b)\n")
			r.wantError(t, 422, "memory_limit")
		})
	})

	t.Run("shutdown_removes_the_jails_cgroups", func(t *testing.T) {
		if code := s.stop(t); code != 0 {
			t.Fatalf("the executor exited with %d after SIGTERM, want 0", code)
		}
		if _, err := os.Stat(parent); !os.IsNotExist(err) {
			t.Errorf("the jails' parent %s is still there after shutdown (%v): %s", parent, err, describeGroups(subgroups(parent)))
		}
		// The leaf stays: it holds the pod's other process.
		if procs := strings.Fields(readTrim(filepath.Join(leaf, "cgroup.procs"))); !slices.Contains(procs, strconv.Itoa(other.Process.Pid)) {
			t.Errorf("the leaf %s lost the pod's other process (holds %v)", leaf, procs)
		}
		checkNoNsjail(t)
		t.Logf("after shutdown: %s removed, the leaf keeps pid %d, no nsjail process left", parent, other.Process.Pid)
	})
}

// ---------------------------------------------------------------------------
// The executor binary

type startOpts struct {
	name     string   // for the log prefix; default "host"
	wrap     []string // command line run before the executor's (it execs it)
	cgroupFD int      // when > 0, the process starts in this cgroup
	// beforeReady runs once the process has started, with its pid.
	beforeReady func(pid int)
}

type server struct {
	name   string
	cmd    *exec.Cmd
	url    string
	mu     sync.Mutex
	log    []string
	exited chan struct{}
	code   int
}

// repoRoot is where the test's source is, on the filesystem the guest
// shares with the host.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// modeArgs selects the isolation mode. A binary without --isolation has
// only the jail mode.
func modeArgs(t *testing.T, bin string, m mode) []string {
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	if bytes.Contains(help, []byte("-isolation")) {
		return []string{"--isolation", m.name}
	}
	if m.name != "jail" {
		// Code from before the cell mode landed: jail is all it has.
		t.Skipf("%s has no --isolation flag, so no %s mode to test", bin, m.name)
	}
	return nil
}

// startServer starts bin/executor on a port of its choice (read from its
// "listening" log line) and waits until /readyz answers 200. Its log lines,
// but for per-request ones, are streamed to the test's output as they come.
func startServer(t *testing.T, m mode, o startOpts) *server {
	t.Helper()
	bin := filepath.Join(repoRoot(), "bin", "executor")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no executor binary at %s: `make test-cgroup2` builds it", bin)
	}
	if o.name == "" {
		o.name = "host"
	}
	s := &server{name: m.name + "/" + o.name, exited: make(chan struct{})}
	args := append([]string{"--host", "127.0.0.1", "--port", "0", "--nsjail-path", testenv.Nsjail(t),
		"--cgroups", "required", "--log-format", "json"}, modeArgs(t, bin, m)...)
	args = append(args, limitArgs...)
	argv := append(append(slices.Clone(o.wrap), bin), args...)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EXECUTOR_") && !strings.HasPrefix(kv, "PORT=") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	if o.cgroupFD > 0 {
		s.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: o.cgroupFD}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = w, w
	fmt.Printf("    [%s] starting: %s\n", s.name, strings.Join(argv, " "))
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", argv[0], err)
	}
	w.Close()
	addr := make(chan string, 1)
	go s.readLog(r, addr)
	go func() {
		s.cmd.Wait()
		s.code = s.cmd.ProcessState.ExitCode()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(60 * time.Second):
				s.cmd.Process.Kill()
				<-s.exited
			}
		}
		if t.Failed() {
			t.Logf("[%s] full log (but /readyz polls):\n%s", s.name, s.logText())
		}
	})
	if o.beforeReady != nil {
		o.beforeReady(s.cmd.Process.Pid)
	}
	select {
	case a := <-addr:
		s.url = "http://" + a
	case <-s.exited:
		t.Fatalf("[%s] the executor exited with %d before it listened (its log follows)", s.name, s.code)
	case <-time.After(120 * time.Second):
		t.Fatalf("[%s] the executor did not listen within 120 s (its log follows)", s.name)
	}
	start := time.Now()
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Logf("[%s] ready %s after listening", s.name, time.Since(start).Round(time.Millisecond))
				return s
			}
		}
		select {
		case <-s.exited:
			t.Fatalf("[%s] the executor exited with %d before it was ready (its log follows)", s.name, s.code)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > 180*time.Second {
			t.Fatalf("[%s] not ready within 180 s (its log follows)", s.name)
		}
	}
}

func (s *server) readLog(r io.ReadCloser, addr chan<- string) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		s.mu.Lock()
		s.log = append(s.log, line)
		s.mu.Unlock()
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			fmt.Printf("    [%s] %s\n", s.name, line)
			continue
		}
		if rec["msg"] == "listening" {
			if a, ok := rec["addr"].(string); ok {
				select {
				case addr <- a:
				default:
				}
			}
		}
		if rec["msg"] != "http request" {
			fmt.Printf("    [%s] %s\n", s.name, compact(rec))
		}
	}
}

// compact renders a JSON log record as "LEVEL msg key=value ...".
func compact(rec map[string]any) string {
	var keys []string
	for k := range rec {
		if k != "time" && k != "level" && k != "msg" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%v %v", rec["level"], rec["msg"])
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, rec[k])
	}
	return b.String()
}

// logText is the server's log but for the lines of /readyz polls.
func (s *server) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, line := range s.log {
		if !strings.Contains(line, `"route":"/readyz"`) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// logRecord returns the first log record with the given message.
func (s *server) logRecord(msg string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, line := range s.log {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			return rec
		}
	}
	return nil
}

// stop sends SIGTERM and returns the exit code.
func (s *server) stop(t *testing.T) int {
	t.Helper()
	start := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		t.Logf("[%s] exited with %d %s after SIGTERM", s.name, s.code, time.Since(start).Round(time.Millisecond))
		return s.code
	case <-time.After(60 * time.Second):
		t.Fatalf("[%s] still running 60 s after SIGTERM", s.name)
		return -1
	}
}

func checkReadyz(t *testing.T, s *server) {
	t.Helper()
	resp, err := http.Get(s.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status  string            `json:"status"`
		Details map[string]string `json:"details"`
	}
	raw, _ := io.ReadAll(resp.Body)
	json.Unmarshal(raw, &body)
	want := strconv.Itoa(cpuMsPerSec) + " ms/s"
	if resp.StatusCode != 200 || body.Status != "ready" || body.Details["cgroups"] != "v2" || body.Details["cpu_cap"] != want {
		t.Fatalf("/readyz: %d %s, want 200 ready with cgroups v2 and cpu_cap %q", resp.StatusCode, raw, want)
	}
	t.Logf("/readyz: %s", raw)
}

type answer struct {
	status  int
	raw     []byte
	elapsed time.Duration
	err     error
}

func (s *server) execute(t *testing.T, script string) answer {
	b, _ := json.Marshal(map[string]any{"script": script})
	client := &http.Client{Timeout: 120 * time.Second}
	start := time.Now()
	resp, err := client.Post(s.url+"/execute", "application/json", bytes.NewReader(b))
	if err != nil {
		return answer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, raw: raw, err: err, elapsed: time.Since(start)}
}

func (a answer) wantOK(t *testing.T) {
	t.Helper()
	if a.err != nil || a.status != 200 {
		t.Fatalf("want 200, got %d %s (%v) after %s", a.status, a.raw, a.err, a.elapsed.Round(time.Millisecond))
	}
}

func (a answer) wantError(t *testing.T, status int, typ string) {
	t.Helper()
	var body struct {
		Error struct{ Type, Message string } `json:"error"`
	}
	json.Unmarshal(a.raw, &body)
	if a.err != nil || a.status != status || body.Error.Type != typ {
		t.Fatalf("want %d %s, got %d %s (%v) after %s", status, typ, a.status, a.raw, a.err, a.elapsed.Round(time.Millisecond))
	}
	t.Logf("%d %s after %s: %s", a.status, typ, a.elapsed.Round(time.Millisecond), body.Error.Message)
}

func (a answer) result(t *testing.T, v any) {
	t.Helper()
	var body struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(a.raw, &body); err != nil || json.Unmarshal(body.Result, v) != nil {
		t.Fatalf("unexpected answer %s", a.raw)
	}
}

// ---------------------------------------------------------------------------
// The jails' cgroups

// pool looks at the cgroups of one server's workers.
type pool struct {
	parent string
	m      mode
}

// runGroups lists the per-run cgroups of workers under the parent.
func (p *pool) runGroups() []string {
	var out []string
	for _, g := range subgroups(p.parent) {
		for _, prefix := range p.m.runGroups {
			if strings.HasPrefix(filepath.Base(g), prefix) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// waitWarm waits until the pool is warm and settled: two idle workers, each
// in its own populated cgroup, and no empty cgroup anywhere under the
// parent. It returns the workers' cgroups.
func (p *pool) waitWarm(t *testing.T) []string {
	t.Helper()
	var groups []string
	waitFor(t, 90*time.Second, "two warm workers, each in its own populated cgroup, and no empty cgroup", func() (bool, string) {
		groups = p.runGroups()
		all := subgroups(p.parent)
		return len(groups) == 2 && allPopulated(all), describeGroups(all)
	})
	return groups
}

// runs checks the per-run cgroups around fn, which uses n workers. Every
// per-run cgroup seen before or during fn is watched: once the pool has
// settled, n of them (the used workers', whichever they were) are gone,
// and none is left empty. Nothing else destroys a worker meanwhile: idle
// ones live for 5 minutes.
func (p *pool) runs(t *testing.T, n int, fn func()) {
	t.Helper()
	before := p.waitWarm(t)
	seen := map[string]bool{}
	var mu sync.Mutex
	watch := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range p.runGroups() {
			seen[g] = true
		}
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			watch()
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-stopped
	var gone []string
	waitFor(t, 60*time.Second, fmt.Sprintf("the cgroups of the %d used worker(s) removed, no empty cgroup left", n), func() (bool, string) {
		watch()
		all := subgroups(p.parent)
		gone = gone[:0]
		for g := range seen {
			if !slices.Contains(all, g) {
				gone = append(gone, g)
			}
		}
		return len(gone) >= n && allPopulated(all), fmt.Sprintf("%d removed (%v); now %s", len(gone), names(gone), describeGroups(all))
	})
	sort.Strings(gone)
	t.Logf("per-run cgroups: before the run %v, removed %v, now %v", names(before), names(gone), names(p.runGroups()))
}

type peak struct {
	group string
	value int
	extra string
}

// watchPeak polls file (a counter such as pids.current) in every per-run
// cgroup until the returned function is called, which returns the highest
// value seen and that group's pids.events then.
func (p *pool) watchPeak(file string) func() peak {
	stop := make(chan struct{})
	done := make(chan peak)
	go func() {
		var best peak
		for {
			for _, g := range p.runGroups() {
				if v, err := strconv.Atoi(readTrim(filepath.Join(g, file))); err == nil && v > best.value {
					best = peak{group: g, value: v, extra: strings.ReplaceAll(readTrim(filepath.Join(g, "pids.events")), "\n", ", ")}
				}
			}
			select {
			case <-stop:
				done <- best
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() peak {
		close(stop)
		return <-done
	}
}

// subgroups lists every cgroup below dir, depth first.
func subgroups(dir string) []string {
	var out []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			g := filepath.Join(dir, e.Name())
			out = append(out, g)
			out = append(out, subgroups(g)...)
		}
	}
	return out
}

func allPopulated(groups []string) bool {
	for _, g := range groups {
		if !strings.Contains(readTrim(filepath.Join(g, "cgroup.events")), "populated 1") {
			return false
		}
	}
	return true
}

func describeGroups(groups []string) string {
	if len(groups) == 0 {
		return "no cgroup"
	}
	var parts []string
	for _, g := range groups {
		state := "EMPTY"
		if strings.Contains(readTrim(filepath.Join(g, "cgroup.events")), "populated 1") {
			state = "procs " + strings.Join(strings.Fields(readTrim(filepath.Join(g, "cgroup.procs"))), ",")
		}
		parts = append(parts, g+" ("+state+")")
	}
	return strings.Join(parts, "; ")
}

func names(groups []string) []string {
	out := make([]string, len(groups))
	for i, g := range groups {
		out[i] = filepath.Base(g)
	}
	return out
}

func eventCount(t *testing.T, file, key string) int {
	t.Helper()
	for _, line := range strings.Split(readTrim(file), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("no %q in %s", key, file)
	return 0
}

// checkNoNsjail fails if an nsjail process is still alive.
func checkNoNsjail(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && filepath.Base(exe) == "nsjail" {
			t.Errorf("nsjail still running after shutdown: pid %s", e.Name())
		}
	}
}

func readTrim(name string) string {
	b, _ := os.ReadFile(name)
	return strings.TrimSpace(string(b))
}

func hasWords(list string, words ...string) bool {
	f := strings.Fields(list)
	for _, w := range words {
		if !slices.Contains(f, w) {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds, or fails the test after limit with
// what cond last saw.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s; last seen: %s", limit, what, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

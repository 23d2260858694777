package server

// The hostile-input suite: scripts and HTTP clients that try to break the
// sandbox or the server, each run against one dedicated real server (real
// nsjail, real Python). Every case asserts the exact outcome (HTTP status and
// error type) and then that the server still answers the hello example
// correctly. After the whole suite the server is stopped and nothing may be
// left behind: no jail process, no cgroup, no temp file, no open fd, no heap.
//
// docs/SECURITY.md maps every attack to its defence and to the test name here.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

const (
	hostileMaxWorkers = 8
	// hostileSecretVar is set in the test process's (= the server's)
	// environment; no script may ever see its value.
	hostileSecretVar   = "EXECUTOR_TEST_SECRET"
	hostileSecretValue = "hostile-s3cret-4f9c2a7e"
)

// hostile is the dedicated server of the suite.
type hostile struct {
	url string
	s   *server
}

// hostileArgs: small limits keep the suite fast; --read-timeout 1s for the
// slow-drip client; --max-body 2MiB so that a 1 MB script fits and 3 MiB does
// not.
// hostileUIDBase and hostileCgroup are allocated by TestHostile, for the
// isolation mode (jail or cell) it runs the suite against.
var (
	hostileUIDBase   int
	hostileCgroup    string
	hostileIsolation string
)

func hostileArgs() []string {
	return []string{
		"--uid-base", strconv.Itoa(hostileUIDBase),
		"--warm-workers", "4", "--max-workers", strconv.Itoa(hostileMaxWorkers),
		"--timeout", "2s", "--memory-limit", "128MiB", "--tmp-size", "4MiB",
		"--max-stdout", "64KiB", "--max-stderr", "64KiB", "--max-result", "256KiB",
		"--max-body", "2MiB", "--read-timeout", "1s",
		// No case here is about overload; on a loaded machine a spawn may
		// take seconds, and a 429 would be the machine's doing.
		"--acquire-timeout", "30s",
		"--cgroup-parent", hostileCgroup,
		"--log-level", "info",
		"--isolation", hostileIsolation,
	}
}

// hostileModes are the isolation modes the suite runs against:
// $EXECUTOR_TEST_ISOLATION (one of them) or both.
func hostileModes() []string {
	if m := os.Getenv("EXECUTOR_TEST_ISOLATION"); m != "" {
		return []string{m}
	}
	return []string{"jail", "cell"}
}

// TestHostile runs the whole suite once per isolation mode: a matrix, the
// same cases and checks against each.
func TestHostile(t *testing.T) {
	if testing.Short() {
		t.Skip("the hostile suite runs real jails")
	}
	for _, mode := range hostileModes() {
		t.Run(mode, func(t *testing.T) {
			hostileIsolation = mode
			testHostile(t)
		})
	}
}

func testHostile(t *testing.T) {
	// The server runs in this process: its environment is ours. A secret in
	// it must never reach a script.
	t.Setenv(hostileSecretVar, hostileSecretValue)
	// Everything the server writes to os.TempDir() lands here, so the suite
	// can prove nothing is left behind.
	tmpDir, err := os.MkdirTemp("", "executor-hostile-tmpdir-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmpDir)
	// Like /tmp: jails (unprivileged uids) may need to reach what the server
	// puts there.
	if err := os.Chmod(tmpDir, 0o1777); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmpDir)

	http.DefaultClient.CloseIdleConnections()
	fdsBefore := openFDs(t)
	heapBefore := heapInUse()

	hostileUIDBase, hostileCgroup = testenv.UIDBase(t), testenv.CgroupParent(t, "hostile")
	s := startServer(t, nil, hostileArgs()...)
	s.waitReady()
	h := &hostile{url: s.url, s: s}
	h.hello(t)
	heapReady := heapInUse()
	start := time.Now()

	t.Run("limits", h.testLimits)
	t.Run("cgroup", h.testCgroup)
	t.Run("files", h.testFiles)
	t.Run("env", h.testEnv)
	t.Run("net", h.testNet)
	t.Run("tenants", h.testTenants)
	t.Run("proc", h.testProc)
	t.Run("seccomp", h.testSeccomp)
	t.Run("jail", h.testJail)
	t.Run("input", h.testInput)
	t.Run("protocol", h.testProtocol)
	t.Run("http", h.testHTTP)
	t.Run("results", h.testResults)
	t.Run("smuggling", h.testSmuggling)
	t.Logf("hostile cases ran in %s", time.Since(start).Round(time.Millisecond))
	// Every body reservation of the body budget was given back.
	for deadline := time.Now().Add(5 * time.Second); s.app.api.InflightBodyBytes() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("request-body bytes still reserved after the suite: %d", s.app.api.InflightBodyBytes())
			break
		}
	}

	// The server is still up: its heap must be back near where it started.
	http.DefaultClient.CloseIdleConnections()
	if after := heapInUse(); after > heapReady+64<<20 {
		t.Errorf("Go heap after the suite: %d MiB, after start-up %d MiB", after>>20, heapReady>>20)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, s.logs)
	}
	if left := jailProcesses(t, hostileUIDBase, hostileMaxWorkers); len(left) > 0 {
		t.Errorf("jail processes left after the suite: %v", left)
	}
	if left := testenv.CgroupsLeft(t, hostileCgroup); len(left) > 0 {
		t.Errorf("cgroups left behind: %v", left)
	}
	if entries, _ := os.ReadDir(tmpDir); len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("temp files left in TMPDIR: %v", names)
	}
	if left := filesOwnedByJailUIDs("/tmp", "/dev/shm", "/var/tmp"); len(left) > 0 {
		t.Errorf("files owned by jail uids left on the host: %v", left)
	}
	http.DefaultClient.CloseIdleConnections()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if after := openFDs(t); after <= fdsBefore+2 {
			break
		} else if time.Now().After(deadline) {
			t.Errorf("open fds: %d before the suite, %d after", fdsBefore, after)
			break
		}
	}
	if after := heapInUse(); after > heapBefore+32<<20 {
		t.Errorf("Go heap after stop: %d MiB, before start %d MiB", after>>20, heapBefore>>20)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// filesOwnedByJailUIDs lists files under dirs (not deeper than 3 levels)
// owned by a uid of the suite's jail range: what a jail could have left on the
// host.
func filesOwnedByJailUIDs(dirs ...string) []string {
	var found []string
	for _, dir := range dirs {
		base := strings.Count(dir, "/")
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && strings.Count(p, "/")-base > 3 {
				return filepath.SkipDir
			}
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok && inJailRange(int(st.Uid)) {
					found = append(found, p)
				}
			}
			return nil
		})
	}
	return found
}

// hcase is one hostile script and its exact expected outcome.
type hcase struct {
	name   string
	script string
	extra  []string // more JSON fields of the request, e.g. `"input": 1`
	status int      // 200 or 422
	typ    string   // the error type when status is 422
	msg    string   // a substring the error message must hold ("" = any)
	check  func(t *testing.T, r response)
}

// runCases runs each case as a subtest: the outcome, then the hello check.
func (h *hostile) runCases(t *testing.T, cases []hcase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { h.run(t, c) })
	}
}

func (h *hostile) run(t *testing.T, c hcase) response {
	t.Helper()
	r := h.execute(t, c.script, c.extra...)
	h.expect(t, r, c.status, c.typ)
	if c.msg != "" && !strings.Contains(errMessage(r), c.msg) {
		t.Errorf("error message %q lacks %q", errMessage(r), c.msg)
	}
	if c.check != nil {
		c.check(t, r)
	}
	h.hello(t)
	return r
}

func (h *hostile) expect(t *testing.T, r response, status int, typ string) {
	t.Helper()
	if r.Status != status || errType(r) != typ {
		t.Fatalf("status %d type %q, want %d %q: %.3000s", r.Status, errType(r), status, typ, r.Raw)
	}
	if status == 500 || errType(r) == "internal" {
		t.Fatalf("internal error: %s", r.Raw)
	}
}

// hello proves the server still answers a normal request correctly.
func (h *hostile) hello(t *testing.T) {
	t.Helper()
	r := h.execute(t, hello)
	if r.Status != 200 || r.Body["stdout"] != "hello\n" {
		t.Fatalf("the server no longer answers hello correctly: %d %s", r.Status, r.Raw)
	}
	jsonEq(t, r.Body["result"], `{"msg": "done"}`)
}

// execute and post are server.execute and server.post bound to the subtest's
// own t (the server's t belongs to the top-level test).
func (h *hostile) execute(t *testing.T, script string, extra ...string) response {
	t.Helper()
	b, _ := json.Marshal(script)
	body := `{"script":` + string(b)
	for _, e := range extra {
		body += "," + e
	}
	return h.post(t, "/execute", "application/json", body+"}")
}

func (h *hostile) post(t *testing.T, path, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest("POST", h.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "-" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, resp)
}

// result decodes the 200 answer's result into v.
func result(t *testing.T, r response, v any) {
	t.Helper()
	b, _ := json.Marshal(r.Body["result"])
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("result %s: %v", b, err)
	}
}

// procInfo is what the host sees of one process.
type procInfo struct {
	pid, ppid int
	name      string
	uids      []int // real, effective, saved, fs
	fields    map[string]string
	cmdline   []string
}

func hostProcesses() []procInfo {
	var out []procInfo
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		p := procInfo{pid: pid, fields: map[string]string{}}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			v = strings.TrimSpace(v)
			p.fields[k] = v
			switch k {
			case "Name":
				p.name = v
			case "PPid":
				p.ppid, _ = strconv.Atoi(v)
			case "Uid":
				for _, u := range strings.Fields(v) {
					n, _ := strconv.Atoi(u)
					p.uids = append(p.uids, n)
				}
			}
		}
		f.Close()
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		p.cmdline = strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		out = append(out, p)
	}
	return out
}

// jailSyscall is the system call a jail process is blocked in (from
// /proc/<pid>/syscall), or -1 while it runs.
func jailSyscall(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "syscall"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.Fields(string(b) + " x")[0])
	if err != nil {
		return -1
	}
	return n
}

// sleeping reports whether p is a script in time.sleep: Python 3.11 sleeps
// in clock_nanosleep (230 on x86_64; nanosleep, 35, on older ones), while an
// idle worker waits in read or recvmsg.
func sleeping(p procInfo) bool {
	n := jailSyscall(p.pid)
	return n == 230 || n == 35
}

// waitJailProcesses waits until at least n processes of the suite's jails
// satisfy cond: the host's view of how far a script got, so a test waits on
// the script's state and never for a fixed time.
func waitJailProcesses(t *testing.T, what string, n int, cond func(procInfo) bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := 0
		for _, p := range hostProcesses() {
			if len(p.uids) == 4 && inJailRange(p.uids[0]) && cond(p) {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (%d of %d jail processes)", what, got, n)
		}
	}
}

// waitForkedJail waits until one jail of the suite holds more than one
// process: a script has forked.
func waitForkedJail(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		perUID := map[int]int{}
		procs := hostProcesses()
		byPID := procsByPID(procs)
		for _, p := range procs {
			if len(p.uids) == 4 && inJailRange(p.uids[0]) && !inCellSetUp(p, byPID) {
				if perUID[p.uids[0]]++; perUID[p.uids[0]] > 1 {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for a script to fork in its jail")
		}
	}
}

// inJailRange: the server gives jails uidRangeSize(--max-workers) uids.
func inJailRange(uid int) bool {
	return uid >= hostileUIDBase && uid < hostileUIDBase+uidRangeSize(hostileMaxWorkers)
}

// nsjailUID returns the host uid an nsjail command line maps the jail to.
func nsjailUID(cmdline []string) (int, bool) {
	for i, a := range cmdline {
		if a == "--user" && i+1 < len(cmdline) {
			var in, out, n int
			if c, _ := fmt.Sscanf(cmdline[i+1], "%d:%d:%d", &in, &out, &n); c == 3 {
				return out, true
			}
		}
	}
	return 0, false
}

// waitNoStrayJailProcesses waits until every jail uid of the suite runs at
// most one process (the idle worker of a warm jail): whatever a finished
// script forked has died with its jail.
func waitNoStrayJailProcesses(t *testing.T) {
	t.Helper()
	var stray []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		perUID := map[int][]string{}
		for _, p := range hostProcesses() {
			if len(p.uids) > 0 && inJailRange(p.uids[0]) {
				perUID[p.uids[0]] = append(perUID[p.uids[0]], fmt.Sprintf("pid %d %s", p.pid, p.name))
			}
		}
		stray = nil
		for uid, ps := range perUID {
			if len(ps) > 1 {
				stray = append(stray, fmt.Sprintf("uid %d: %v", uid, ps))
			}
		}
		if len(stray) == 0 {
			return
		}
	}
	t.Fatalf("processes of finished jails are still alive: %v", stray)
}

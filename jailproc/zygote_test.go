package jailproc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/internal/testenv"
	"github.com/secure-script-executor/executor/pyworker"
)

// The zygote's fork loop (pyworker/zygote/zygote.c) takes only well-formed
// fork requests: "F <id> <uid>" in decimal with exactly two descriptors.
// Anything else from the control socket ends the cell with status 5 and a
// reason in its diagnostics, before any fork; a well-formed request after a
// cell start forks a child as usual (every other cell test).
func TestTheZygoteEndsItsCellOnAMalformedForkRequest(t *testing.T) {
	cases := []struct {
		name string
		msg  string
		fds  int
	}{
		{"id not a number", "F x1 1001", 2},
		{"uid not a number", "F 1 10x1", 2},
		{"a field too many", "F 1 1001 9", 2},
		{"not a fork request", "K 1 1001", 2},
		{"one descriptor", "F 1 1001", 1},
		{"three descriptors", "F 1 1001", 3},
		{"no descriptor", "F 1 1001", 0},
		{"id of 40 digits", "F " + strings.Repeat("7", 40) + " 1001", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newPlainCellSupervisor(t, Config{})
			c, err := s.cellFor(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var fds []int
			for i := 0; i < tc.fds; i++ {
				var p [2]int
				if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
					t.Fatal(err)
				}
				defer syscall.Close(p[0])
				defer syscall.Close(p[1])
				fds = append(fds, p[0])
			}
			var oob []byte
			if len(fds) > 0 {
				oob = syscall.UnixRights(fds...)
			}
			if _, _, err := c.ctrl.WriteMsgUnix([]byte(tc.msg), oob, nil); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.dead:
			case <-time.After(10 * time.Second):
				t.Fatalf("the cell still runs 10 s after the fork request %q with %d descriptors", tc.msg, tc.fds)
			}
			if code := c.cmd.ProcessState.ExitCode(); code != 5 {
				t.Errorf("the cell exited with %d, want 5 (malformed request); diagnostics: %s", code, c.diag.String())
			}
			if d := c.diag.String(); !strings.Contains(d, "malformed fork request") {
				t.Errorf("the diagnostics do not say why: %q", d)
			}
			c.mu.Lock()
			forked := c.forks
			c.mu.Unlock()
			if forked != 0 {
				t.Errorf("%d children were forked", forked)
			}
		})
	}
}

// A step of a new child's sandbox that fails (here the open-files limit,
// above what the cell may grant) ends the child before anything else runs in
// it, and the start fails naming the step: the child says why on its result
// socket, and is never handed a request.
func TestACellChildWhoseSandboxStepFailsNamesItAndNeverStarts(t *testing.T) {
	var hard syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &hard); err != nil {
		t.Fatal(err)
	}
	s := newPlainCellSupervisor(t, Config{MaxOpenFiles: int(hard.Max) + 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := s.Start(ctx)
	if err == nil {
		p.Kill()
		t.Fatalf("a child started with RLIMIT_NOFILE %d, above the hard limit %d", hard.Max+1, hard.Max)
	}
	if msg := err.Error(); !strings.Contains(msg, "cell child set-up: setrlimit") {
		t.Errorf("the start error does not name the failed step: %v", err)
	}
}

// A cell child that has sent its result waits for the server's word before
// it exits (zygote.c, zyg_linger), so that its teardown runs at the least
// CPU weight, and no thread of its script runs meanwhile: here a thread
// that spins from the start stops getting CPU once the result is sent. The
// server's shutdown of its end of the result socket lets the child exit on
// its own (status 0).
func TestACellChildWaitsAfterItsResultWithItsScriptStoppedUntilTheServerLetsItGo(t *testing.T) {
	s := newPlainCellSupervisor(t, Config{})
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	w := p.w
	script := "import threading\ndef spin():\n    while True:\n        pass\ndef main():\n    threading.Thread(target=spin, daemon=True).start()\n    return 7\n"
	stdout, stderr, err := w.send(executor.Request{Mode: executor.ModeSingle, Script: []byte(script)}, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.wait(time.Second)
	defer stderr.wait(time.Second)
	r, err := pyworker.ReadResult(w.ctrlR, w.cfg.MaxResult)
	if err != nil || string(r.Value) != "7" {
		t.Fatalf("result %+v, %v", r, err)
	}
	time.Sleep(50 * time.Millisecond) // the child reaches its wait
	before := cpuTicks(t, p.childPID)
	time.Sleep(300 * time.Millisecond)
	if isClosed(p.exited) {
		t.Fatal("the child exited before the server let it go")
	}
	if after := cpuTicks(t, p.childPID); after-before > 5 { // 50 ms of the 300
		t.Errorf("the script's thread ran on after the result: %d ticks of CPU in 300 ms", after-before)
	}
	w.ctrl.CloseWrite()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the child did not exit once the server shut down its result socket")
	}
	if st := p.cc.exitStatus(); st.Signal != 0 || st.Code != 0 {
		t.Errorf("the child ended with %v, want exit status 0", st)
	}
}

// cpuTicks is utime + stime of process pid, in clock ticks.
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// newPlainCellSupervisor is a supervisor in cell isolation without cgroups
// (its own uid range of 64), with cfg's other settings.
func newPlainCellSupervisor(t *testing.T, cfg Config) *Supervisor {
	t.Helper()
	cfg.Isolation, cfg.NsjailPath, cfg.Cgroups, cfg.Timeout = IsolationCell, testenv.Nsjail(t), CgroupsOff, 5*time.Second
	s, err := New(cfg, UIDRange{Base: testenv.UIDBase(t), Size: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

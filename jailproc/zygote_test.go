package jailproc

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
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
			s, err := New(Config{Isolation: IsolationCell, NsjailPath: testenv.Nsjail(t), Cgroups: CgroupsOff, Timeout: 5 * time.Second},
				UIDRange{Base: testenv.UIDBase(t), Size: 64})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
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
	s, err := New(Config{Isolation: IsolationCell, NsjailPath: testenv.Nsjail(t), Cgroups: CgroupsOff, Timeout: 5 * time.Second,
		MaxOpenFiles: int(hard.Max) + 1},
		UIDRange{Base: testenv.UIDBase(t), Size: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
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

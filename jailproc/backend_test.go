package jailproc

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/internal/testenv"
	"github.com/secure-script-executor/executor/pyworker"
)

// bareProc is a workerProc that is not an nsjail: the worker runs as a
// plain child of the test under its own uid, and its exact wait status is
// known, as a cell's zygote reports it. It proves that the run protocol and
// the worker's cgroup need nothing of the jail backend.
type bareProc struct {
	cmd      *exec.Cmd
	exited   chan struct{}
	status   syscall.WaitStatus
	stopOnce sync.Once
}

var _ workerProc = (*bareProc)(nil)

func (b *bareProc) hostPID() int           { return b.cmd.Process.Pid }
func (b *bareProc) done() <-chan struct{}  { return b.exited }
func (b *bareProc) exitStatus() exitStatus { return waitStatus(b.status) }
func (b *bareProc) stop() {
	b.stopOnce.Do(func() {
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
	})
}

// waitStatus is how a backend that reaps the worker itself (or is told its
// wait status) reports it: exact, never ambiguous.
func waitStatus(ws syscall.WaitStatus) exitStatus {
	if ws.Signaled() {
		return exitStatus{Signal: ws.Signal()}
	}
	return exitStatus{Code: ws.ExitStatus()}
}

func startBare(t *testing.T, s *Supervisor, uid int) *worker {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "ctrl"), os.NewFile(uintptr(fds[1]), "ctrl-child")
	conn, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW, _ := os.Pipe()
	b := &bareProc{exited: make(chan struct{})}
	b.cmd = exec.Command(s.layout.python, "-I", "-S", "-B", "-X", "utf8", s.workerPyc, pyworker.Arg(nil, nil))
	b.cmd.Env = []string{}
	b.cmd.Stdin = stdinR
	b.cmd.ExtraFiles = []*os.File{child}
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	stdinR.Close()
	go func() {
		b.cmd.Wait()
		b.status = b.cmd.ProcessState.Sys().(syscall.WaitStatus)
		close(b.exited)
	}()
	group, err := s.cg.newGroup(s.groupLimits())
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(&s.cfg, b, uid, conn.(*net.UnixConn), stdinW, group)
	t.Cleanup(func() {
		b.stop()
		if err := w.release(); err != nil {
			t.Error(err)
		}
	})
	if err := w.awaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.join(); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestTheRunProtocolAndTheWorkersCgroupWorkForABackendThatIsNotAnNsjail(t *testing.T) {
	s, err := New(Config{NsjailPath: testenv.Nsjail(t), MemoryLimit: 64 << 20, Timeout: time.Second,
		CgroupParent: testenv.CgroupParent(t, "bare")}, UIDRange{Base: testenv.UIDBase(t), Size: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.cg.version == CgroupNone {
		t.Skipf("no cgroups here: %s", s.cg.reason)
	}
	uid := s.uidRange.Base
	run := func(script string) executor.Result {
		t.Helper()
		w := startBare(t, s, uid)
		res, err := w.run(context.Background(), executor.Request{Mode: executor.ModeSingle, Script: []byte(script)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := run("import os\ndef main():\n    print('hi')\n    return os.getuid()\n")
	if res.Status != executor.StatusOK || string(res.Stdout) != "hi\n" || string(res.Value) != strconv.Itoa(uid) || !res.Usage.MemoryPeakMeasured {
		t.Fatalf("hello: %s %+v %q %s %+v", res.Status, res.Error, res.Stdout, res.Value, res.Usage)
	}
	// An exact wait status: exit 137 is an exit, whatever the CPU used.
	if res := run("import os\ndef main():\n    os._exit(137)\n"); res.Status != executor.StatusRuntimeError || !strings.Contains(res.Error.Message, "status 137") {
		t.Fatalf("os._exit(137): %s %+v", res.Status, res.Error)
	}
	if res := run("def main():\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 20))\n"); res.Status != executor.StatusMemoryLimit {
		t.Fatalf("memory hog: %s %+v", res.Status, res.Error)
	}
	if res := run("import time\ndef main():\n    time.sleep(10)\n"); res.Status != executor.StatusTimeout {
		t.Fatalf("sleeper: %s %+v", res.Status, res.Error)
	}
}

package jailproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/secure-script-executor/executor/pyworker"
)

// Supervisor starts jails that share one Config.
type Supervisor struct {
	cfg       Config
	layout    layout
	cg        cgroupSetup
	uids      *uidRange
	workerDir string // private folder holding workerPyc
	workerPyc string
}

// UIDRange is the block of unprivileged host uids given to jails, one per live
// jail. Base must be well above any real account; Size bounds how many jails
// can exist at once.
type UIDRange struct{ Base, Size int }

// New validates c, discovers what the jail must mount and prepares the cgroup
// parents. It does not start a jail.
func New(c Config, uids UIDRange) (*Supervisor, error) {
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("jailproc: %w", err)
	}
	if uids.Base < 1000 || uids.Size < 1 {
		return nil, fmt.Errorf("jailproc: uid range %d+%d must start at 1000 or above and hold at least one uid", uids.Base, uids.Size)
	}
	l, err := discoverLayout(c)
	if err != nil {
		return nil, fmt.Errorf("jailproc: %w", err)
	}
	if err := pyworker.ValidateArg(c.Preload, c.PythonPath); err != nil {
		return nil, fmt.Errorf("jailproc: %w", err)
	}
	cg, err := prepareCgroups(c)
	if err != nil {
		return nil, fmt.Errorf("jailproc: %w", err)
	}
	if n := cg.removeStale(); n > 0 {
		c.Log("jailproc: removed cgroups left by jails of an earlier run", "count", n)
	}
	dir, pyc, err := compileWorker(l.python)
	if err != nil {
		return nil, fmt.Errorf("jailproc: %w", err)
	}
	return &Supervisor{cfg: c, layout: l, cg: cg, uids: newUIDRange(uids.Base, uids.Size), workerDir: dir, workerPyc: pyc}, nil
}

// Close removes the supervisor's files and its cgroup parents. Call it after
// every jail is gone. A parent still used by another server sharing it is
// left alone: rmdir fails on a cgroup that has children.
func (s *Supervisor) Close() error {
	s.cg.removeParents()
	return os.RemoveAll(s.workerDir)
}

// Cgroups reports which cgroup hierarchy enforces memory and process limits,
// and why none does when the answer is CgroupNone.
func (s *Supervisor) Cgroups() (CgroupVersion, string) { return s.cg.version, s.cg.reason }

// CPUCap reports whether each jail's CPU bandwidth is capped
// (Config.CPUMsPerSec), and why not when it was asked for but is not.
func (s *Supervisor) CPUCap() (bool, string) { return s.cg.cpu, s.cg.cpuReason }

// Config returns the effective configuration, defaults applied.
func (s *Supervisor) Config() Config { return s.cfg }

// Process is one live jail holding a warm worker. It runs at most one request.
type Process struct {
	s        *Supervisor
	cmd      *exec.Cmd
	uid      int
	childPID int // host pid of the jailed interpreter; 0 if unknown
	ctrl     *net.UnixConn
	ctrlR    *bufio.Reader
	stdin    *os.File
	diag     *tail
	started  time.Time

	exited   chan struct{} // closed once nsjail has been reaped
	exitCode int           // nsjail's exit status, valid after exited
	cpuTime  time.Duration // CPU time of nsjail and the jail's processes, valid after exited
	maxRSS   int64         // peak resident memory of nsjail or a jail process in bytes, valid after exited

	used     atomic.Bool
	killOnce sync.Once
	killErr  error
}

// Start spawns one jail and waits for its worker's ready line. ctx bounds the
// spawn and handshake only: the process outlives ctx and is ended by Kill.
// (puddle hands constructors a context that is cancelled as soon as
// pre-warming returns; tying the process to it would kill every warm worker.)
func (s *Supervisor) Start(ctx context.Context) (_ *Process, err error) {
	uid, err := s.uids.take()
	if err != nil {
		return nil, err
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		s.uids.put(uid)
		return nil, fmt.Errorf("jailproc: start: socketpair: %w", err)
	}
	parentSock := os.NewFile(uintptr(fds[0]), "ctrl")
	childSock := os.NewFile(uintptr(fds[1]), "ctrl-child")
	defer parentSock.Close() // net.FileConn below holds its own dup
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		s.uids.put(uid)
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}

	p := &Process{s: s, uid: uid, stdin: stdinW, diag: &tail{n: 4096}, exited: make(chan struct{})}
	cmd := exec.Command(s.cfg.NsjailPath, s.args(uid)...)
	cmd.Env = []string{} // not nil: nil would hand nsjail the server's environment
	cmd.Stdin = stdinR
	cmd.Stderr = p.diag
	cmd.ExtraFiles = []*os.File{childSock} // fd 3 in nsjail and in the worker
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// A script's forked child can hold nsjail's stderr open; never let that
	// hang Wait (and with it Kill and pool shutdown).
	cmd.WaitDelay = 500 * time.Millisecond
	p.cmd = cmd
	p.started = time.Now()
	err = startNiced(cmd)
	// The child's ends now live in nsjail. Ours must go at once: while we
	// hold them, an early exit of the jail would never show as EOF.
	childSock.Close()
	stdinR.Close()
	if err != nil {
		stdinW.Close()
		s.uids.put(uid)
		return nil, fmt.Errorf("jailproc: start nsjail: %w", err)
	}
	go p.wait()
	defer func() {
		if err != nil {
			p.Kill()
		}
	}()

	conn, err := net.FileConn(parentSock)
	if err != nil {
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}
	p.ctrl = conn.(*net.UnixConn)
	p.ctrlR = bufio.NewReaderSize(p.ctrl, 64<<10)

	deadline := time.Now().Add(s.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	p.ctrl.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { p.ctrl.SetReadDeadline(time.Now()) })
	err = pyworker.ReadReady(p.ctrlR)
	stop()
	if err != nil {
		var se *pyworker.StartError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("jailproc: worker start-up failed: %w", err)
		}
		// Give nsjail a moment to exit so its diagnostics say why.
		select {
		case <-p.exited:
		case <-time.After(200 * time.Millisecond):
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("jailproc: start: %w", ctx.Err())
		}
		failed := &StartError{Err: err, Diagnostics: p.diag.String(), Exited: isClosed(p.exited)}
		if failed.Exited {
			failed.ExitCode = p.exitCode // written before exited was closed
		}
		return nil, failed
	}
	p.ctrl.SetReadDeadline(time.Time{})
	p.childPID = childOf(cmd.Process.Pid)
	return p, nil
}

// spawnNice is the priority jails are created at. Spawning a replacement
// (nsjail's namespace and mount set-up, then Python's start) is background
// work that must yield to the requests being served. Run raises the worker to
// 0 when a request checks it out.
const spawnNice = 19

// startNiced starts cmd and lowers nsjail to spawnNice at once. (Lowering the
// forking thread instead would let the vfork child wait for CPU at nice 19
// while the Go runtime's P is held in the fork: every goroutine on it would
// stall behind the spawn.) nsjail's first few hundred microseconds run at the
// server's priority; the jail it then sets up, and the interpreter (nsjail's
// --nice_level), run at spawnNice.
func startNiced(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, spawnNice)
	return nil
}

// StartError is a jail that did not come up: nsjail refused (namespaces
// unavailable, bad mount) or the worker never sent its ready line.
type StartError struct {
	Err         error
	Diagnostics string // nsjail's own messages (for logs, never for clients)
	Exited      bool
	ExitCode    int
}

func (e *StartError) Error() string {
	msg := "jailproc: jail did not become ready: " + e.Err.Error()
	if e.Exited {
		msg += fmt.Sprintf(" (nsjail exited with status %d)", e.ExitCode)
	}
	if e.Diagnostics != "" {
		msg += ": " + strings.ReplaceAll(e.Diagnostics, "\n", " | ")
	}
	return msg
}

func (e *StartError) Unwrap() error { return e.Err }

func (p *Process) wait() {
	err := p.cmd.Wait()
	p.exitCode = p.cmd.ProcessState.ExitCode()
	// nsjail's rusage covers the jail's processes too: it reaped them.
	p.cpuTime = p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		p.maxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	if err != nil && p.exitCode < 0 {
		p.exitCode = 128 + int(syscall.SIGKILL)
	}
	close(p.exited)
}

// childOf returns the first child of pid (the jailed interpreter), or 0.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Exited is closed when the jail has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// StartedAt is when the jail was spawned.
func (p *Process) StartedAt() time.Time { return p.started }

// UID is the host uid the jail's processes run as.
func (p *Process) UID() int { return p.uid }

// Pid is nsjail's host pid.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Kill ends the jail and waits until it is reaped, its cgroups are gone and
// its uid is free again. Safe to call more than once and concurrently.
func (p *Process) Kill() error {
	p.killOnce.Do(func() { p.killErr = p.kill() })
	return p.killErr
}

func (p *Process) kill() error {
	if !isClosed(p.exited) {
		// SIGTERM to nsjail, not SIGKILL: nsjail answers it by SIGKILLing
		// everything in the jail, reaping it and removing the jail's cgroups
		// (about 4 ms here). A SIGKILLed nsjail would leave the cgroup
		// folders behind.
		p.signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(2 * time.Second):
			// nsjail is stuck: kill its whole process group. The jailed
			// child dies with it (nsjail sets PR_SET_PDEATHSIG=SIGKILL).
			p.signal(syscall.SIGKILL)
			<-p.exited
		}
	}
	if p.ctrl != nil {
		p.ctrl.Close()
	}
	p.stdin.Close()
	var err error
	if p.childPID != 0 {
		// Normally nsjail removed these already; this is for the SIGKILL path.
		for i := 0; i < 20; i++ {
			if err = p.s.cg.removeGroups(p.childPID); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	p.s.uids.put(p.uid)
	if err != nil {
		return fmt.Errorf("jailproc: remove cgroups of jail %d: %w", p.childPID, err)
	}
	return nil
}

func (p *Process) signal(sig syscall.Signal) {
	pid := p.cmd.Process.Pid
	target := pid
	if sig == syscall.SIGKILL {
		target = -pid // the group: nsjail and anything it forked
	}
	if err := syscall.Kill(target, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.s.cfg.Log("jailproc: signal nsjail", "pid", pid, "signal", sig.String(), "err", err)
	}
}

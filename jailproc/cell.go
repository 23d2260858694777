package jailproc

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secure-script-executor/executor/pyworker"
)

// A cell is one long-lived nsjail whose pid 1 is a Python zygote (worker.py
// started with a z1 configuration). It maps a block of host uids (uid 0 of
// the cell is the block's first, the zygote's; each live child gets one of
// the others) and keeps its capabilities inside its own user namespace so
// that the zygote can give each child its own namespaces and uid. The
// zygote never runs user code; docs/SECURITY.md compares a cell child with a
// jail, row by row.
//
// Server and zygote talk over a SOCK_SEQPACKET socket (fd 3 of the cell):
//
//	server -> zygote  "F <id> <uid>" + SCM_RIGHTS [stdin read end, result socket]
//	zygote -> server  "SSE-ZREADY 1" once, then "X <id> <wait status> <cpu us> <maxrss KiB>"
//	                  when child <id> has exited (its whole pid namespace gone)
//
// The child itself speaks the ordinary worker protocol on its result socket.
type cell struct {
	s       *Supervisor
	cmd     *exec.Cmd
	ctrl    *net.UnixConn
	block   int // index of the cell's uid block
	base    int // host uid of the cell's uid 0
	uids    *uidRange
	diag    *tail
	started time.Time
	zygote  int // pidfd of the zygote, -1 if unknown

	dead     chan struct{} // closed once nsjail is reaped and the cell's processes are gone
	killOnce sync.Once

	mu       sync.Mutex
	children map[uint64]*cellChild // forked, exit not yet reported
	live     int                   // children not yet released by Process.Kill
	forks    int
	draining bool
	gone     bool // dead: no more children
}

// cellIDs numbers children across every cell of the process.
var cellIDs struct {
	sync.Mutex
	next uint64
}

func nextCellID() uint64 {
	cellIDs.Lock()
	defer cellIDs.Unlock()
	cellIDs.next++
	return cellIDs.next
}

// cellSetup is what the supervisor prepares once for cell isolation.
type cellSetup struct {
	blocks    *uidRange // indexes of free uid blocks
	blockSize int
	uidBase   int
	filterHex string // the children's seccomp filter
	policy    string // the cells' nsjail policy, "" for none

	mu      sync.Mutex
	startMu sync.Mutex // one cell starts at a time
	active  *cell
	all     map[*cell]bool
	closed  bool
}

// prepareCells compiles the seccomp policies and splits the uid range into
// blocks, one per cell that may be alive at once (the active one and up to
// three draining).
func prepareCells(c Config, uids UIDRange) (*cellSetup, error) {
	src := DefaultSeccompPolicy
	switch c.SeccompPolicy {
	case "":
	case SeccompNone:
		src = ""
	default:
		b, err := os.ReadFile(c.SeccompPolicy)
		if err != nil {
			return nil, fmt.Errorf("seccomp policy: %w", err)
		}
		src = string(b)
	}
	var rules []seccompRule
	if src != "" {
		var err error
		if rules, err = parsePolicy(src); err != nil {
			return nil, fmt.Errorf("cell isolation: %w", err)
		}
	}
	// Children never get what the zygote was allowed, policy or not.
	prog, err := childFilter(childRules(rules))
	if err != nil {
		return nil, err
	}
	raw, err := assembleFilter(prog)
	if err != nil {
		return nil, fmt.Errorf("child seccomp filter: %w", err)
	}
	const nBlocks = 4
	size := uids.Size / nBlocks
	if size < 2 {
		return nil, fmt.Errorf("cell isolation needs a uid range of at least %d uids, not %d", 2*nBlocks, uids.Size)
	}
	cs := &cellSetup{blocks: newUIDRange(0, nBlocks), blockSize: size, uidBase: uids.Base, filterHex: hex.EncodeToString(raw), all: map[*cell]bool{}}
	if src != "" {
		cs.policy = cellPolicy(rules)
	}
	return cs, nil
}

// cellArgs is the nsjail command line of a cell whose uid 0 is host uid base
// and which maps n uids: base to 0, base+1.. to jailUID...
func (s *Supervisor) cellArgs(base, n int) []string {
	c := s.cfg
	// uid 0: the zygote; jailUID and up: the children, as a jail's worker
	// is jailUID (each child has its own, so not all of them are jailUID).
	zmap := fmt.Sprintf("0:%d:1", base)
	cmap := fmt.Sprintf("%d:%d:%d", jailUID, base+1, n-1)
	a := []string{
		"--mode", "o",
		"--quiet",
		"--user", zmap, "--user", cmap, "--group", zmap, "--group", cmap,
		// The zygote needs CAP_SYS_ADMIN (unshare, mount) and CAP_SETUID /
		// CAP_SETGID inside the cell's user namespace, nowhere else.
		"--keep_caps",
		"--hostname", "sandbox",
		"--cwd", "/tmp",
		// A backstop: the supervisor stops using a cell at CellMaxAge; its
		// last children are gone MaxLifetime later at the latest.
		"--time_limit", strconv.Itoa(int((c.CellMaxAge + c.MaxLifetime).Seconds())),
		"--nice_level", strconv.Itoa(spawnNice),
		"--iface_no_lo",
		// Every child sets its own, lower limits; a hard limit can only be
		// lowered, so the cell's must not be below them.
		"--rlimit_as", "max", "--rlimit_cpu", "max", "--rlimit_fsize", "max",
		"--rlimit_nofile", "max", "--rlimit_nproc", "max",
		"--rlimit_stack", "8", "--rlimit_core", "0",
	}
	a = append(a, s.fsEnvArgs([]string{s.workerPyc + ":" + workerInJail,
		filepath.Join(s.workerDir, zygoteLoopOnHost) + ":" + zygoteLoopInJail})...)
	if s.cells.policy != "" {
		a = append(a, "--seccomp_string", s.cells.policy)
	}
	limits := []int64{
		ceilMiB(c.AddressSpaceLimit) * mib, int64(s.cpuLimit().Seconds()), ceilMiB(c.TmpSize) * mib,
		int64(c.MaxOpenFiles), int64(c.MaxProcs), c.TmpSize,
	}
	ls := make([]string, len(limits))
	for i, l := range limits {
		ls[i] = strconv.FormatInt(l, 10)
	}
	arg := "z1" + strings.TrimPrefix(pyworker.Arg(c.Preload, c.PythonPath), "v1") + ";" + strings.Join(ls, ",") + ";" + s.cells.filterHex
	return append(a, "--pass_fd", "3", "--", s.layout.python, "-I", "-S", "-B", "-X", "utf8", workerInJail, arg)
}

// startCell starts a cell and waits for its zygote's ready message.
func (s *Supervisor) startCell(ctx context.Context) (_ *cell, err error) {
	block, err := s.cells.blocks.take()
	if err != nil {
		return nil, ErrNoFreeUID
	}
	base := s.cells.uidBase + block*s.cells.blockSize
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		s.cells.blocks.put(block)
		return nil, fmt.Errorf("jailproc: start cell: socketpair: %w", err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "cell-ctrl"), os.NewFile(uintptr(fds[1]), "cell-ctrl-child")
	defer parent.Close()
	c := &cell{s: s, block: block, base: base, uids: newUIDRange(base+1, s.cells.blockSize-1), diag: &tail{n: 4096},
		zygote: -1, dead: make(chan struct{}), children: map[uint64]*cellChild{}}
	c.cmd = exec.Command(s.cfg.NsjailPath, s.cellArgs(base, s.cells.blockSize)...)
	c.cmd.Env = []string{}
	c.cmd.Stderr = c.diag
	c.cmd.ExtraFiles = []*os.File{child}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.cmd.WaitDelay = 500 * time.Millisecond
	c.started = time.Now()
	err = startNiced(c.cmd)
	child.Close()
	if err != nil {
		s.cells.blocks.put(block)
		return nil, fmt.Errorf("jailproc: start cell nsjail: %w", err)
	}
	go c.wait()
	defer func() {
		if err != nil {
			c.kill()
		}
	}()
	conn, err := net.FileConn(parent)
	if err != nil {
		return nil, fmt.Errorf("jailproc: start cell: %w", err)
	}
	c.ctrl = conn.(*net.UnixConn)
	if err := c.readReady(ctx); err != nil {
		return nil, err
	}
	if pid := childOf(c.cmd.Process.Pid); pid != 0 {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			c.mu.Lock()
			c.zygote = fd
			c.mu.Unlock()
		}
	}
	go c.readReports()
	return c, nil
}

// readReady reads the zygote's first message: SSE-ZREADY 1 or SSE-FAIL.
func (c *cell) readReady(ctx context.Context) error {
	deadline := time.Now().Add(c.s.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.ctrl.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.ctrl.SetReadDeadline(time.Now()) })
	buf := make([]byte, 4096)
	n, err := c.ctrl.Read(buf)
	stop()
	c.ctrl.SetReadDeadline(time.Time{})
	msg := string(bytes.TrimRight(buf[:n], "\n"))
	switch {
	case err == nil && msg == "SSE-ZREADY 1":
		return nil
	case err == nil && strings.HasPrefix(msg, "SSE-FAIL "):
		return fmt.Errorf("jailproc: cell start-up failed: %w", &pyworker.StartError{Message: strings.ToValidUTF8(msg[9:], "\uFFFD")})
	case ctx.Err() != nil:
		return fmt.Errorf("jailproc: start cell: %w", ctx.Err())
	}
	if err == nil {
		err = fmt.Errorf("%w: unexpected zygote message %.100q", pyworker.ErrProtocol, msg)
	}
	select {
	case <-c.dead:
	case <-time.After(200 * time.Millisecond):
	}
	failed := &StartError{Err: err, Diagnostics: c.diag.String(), Exited: isClosed(c.dead)}
	if failed.Exited {
		failed.ExitCode = c.cmd.ProcessState.ExitCode()
	}
	return failed
}

// wait reaps nsjail, waits until the zygote (pid 1 of the cell) is gone,
// which the kernel allows only once every process of the cell's pid
// namespace is, then fails every child whose exit was not reported.
func (c *cell) wait() {
	c.cmd.Wait()
	c.mu.Lock()
	zygote := c.zygote
	c.mu.Unlock()
	if zygote >= 0 {
		// nsjail normally reaped it; after a SIGKILL of nsjail itself the
		// zygote dies of PR_SET_PDEATHSIG a moment later.
		fds := []unix.PollFd{{Fd: int32(zygote), Events: unix.POLLIN}}
		for i := 0; i < 100; i++ {
			if n, err := unix.Poll(fds, 100); n > 0 || (err != nil && err != unix.EINTR) {
				break
			}
		}
		// kill signals through the pidfd under mu: it must never see the
		// number once it is closed (and perhaps reused).
		c.mu.Lock()
		c.zygote = -1
		c.mu.Unlock()
		unix.Close(zygote)
	}
	c.mu.Lock()
	c.gone = true
	lost := c.children
	c.children = map[uint64]*cellChild{}
	c.mu.Unlock()
	for _, k := range lost {
		k.status = exitStatus{Signal: syscall.SIGKILL, CellLost: true}
		close(k.exited)
	}
	close(c.dead)
	c.s.cells.forget(c)
}

// readReports reads exit reports until the control socket closes. Anything
// but a well-formed report for a known child means the zygote misbehaves:
// the cell is killed.
func (c *cell) readReports() {
	buf := make([]byte, 256)
	for {
		n, err := c.ctrl.Read(buf)
		if err != nil || n == 0 {
			c.kill()
			return
		}
		if err := c.report(string(buf[:n])); err != nil {
			c.s.cfg.Log("jailproc: cell zygote misbehaved; replacing the cell", "err", err)
			c.kill()
			return
		}
	}
}

// report handles "X <id> <status> <cpu us> <maxrss KiB>".
func (c *cell) report(msg string) error {
	f := strings.Fields(msg)
	if len(f) != 5 || f[0] != "X" {
		return fmt.Errorf("unexpected message %.100q", msg)
	}
	var v [4]int64
	for i := range v {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return fmt.Errorf("unexpected message %.100q", msg)
		}
		v[i] = n
	}
	c.mu.Lock()
	k := c.children[uint64(v[0])]
	delete(c.children, uint64(v[0]))
	c.mu.Unlock()
	if k == nil {
		return fmt.Errorf("exit report for unknown child %d", v[0])
	}
	// The zygote waited for the child itself: its status is exact (no
	// nsjail 128+N ambiguity). The zygote's CPU time and peak RSS of it
	// (v[2], v[3]) are not used: the child's own cgroup is what counts.
	ws := syscall.WaitStatus(v[1])
	if ws.Signaled() {
		k.status = exitStatus{Signal: ws.Signal()}
	} else {
		k.status = exitStatus{Code: ws.ExitStatus()}
	}
	close(k.exited)
	return nil
}

// kill ends the cell: SIGKILL to the zygote, whose death as pid 1 ends every
// process of the cell; nsjail reaps it and exits. If that does not happen
// (the zygote's pid was never learnt, nsjail is stuck), SIGKILL to nsjail,
// whose death SIGKILLs the zygote (PR_SET_PDEATHSIG). It waits until the
// cell's processes are gone.
func (c *cell) kill() {
	c.killOnce.Do(func() {
		c.mu.Lock()
		if c.zygote >= 0 && !c.gone {
			unix.PidfdSendSignal(c.zygote, unix.SIGKILL, nil, 0)
		}
		c.mu.Unlock()
		select {
		case <-c.dead:
		case <-time.After(2 * time.Second):
			if err := syscall.Kill(c.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				c.s.cfg.Log("jailproc: kill cell", "pid", c.cmd.Process.Pid, "err", err)
			}
		}
	})
	<-c.dead
	if c.ctrl != nil {
		c.ctrl.Close()
	}
}

// usable reports whether the cell may fork another child.
func (c *cell) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.gone && !c.draining && c.forks < c.s.cfg.CellMaxForks && time.Since(c.started) < c.s.cfg.CellMaxAge
}

// drain stops forking from the cell; it is killed once its last child is
// released (at once if it has none).
func (c *cell) drain() {
	c.mu.Lock()
	c.draining = true
	idle := c.live == 0
	c.mu.Unlock()
	if idle {
		go c.kill()
	}
}

// release is called by Process.Kill once a child is gone and its cgroup
// removed: its uid is free again.
func (c *cell) release(uid int) {
	c.uids.put(uid)
	c.mu.Lock()
	c.live--
	idle := c.live == 0 && (c.draining || c.forks >= c.s.cfg.CellMaxForks)
	c.mu.Unlock()
	if idle {
		go c.kill()
	}
}

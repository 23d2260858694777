package jailproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/secure-script-executor/executor/pyworker"
)

// ErrClosed is returned by Start once the supervisor is closed (cell
// isolation: no new cell may start).
var ErrClosed = errors.New("jailproc: supervisor closed")

// cellFor returns the cell to fork from, starting a new one when the active
// cell is dead, draining, or has reached its fork count or age.
func (s *Supervisor) cellFor(ctx context.Context) (*cell, error) {
	cs := s.cells
	cs.startMu.Lock()
	defer cs.startMu.Unlock()
	cs.mu.Lock()
	c, closed := cs.active, cs.closed
	cs.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if c != nil && c.usable() {
		return c, nil
	}
	if c != nil {
		c.drain()
	}
	c, err := s.startCell(ctx)
	if err != nil {
		return nil, err
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		go c.kill()
		return nil, ErrClosed
	}
	cs.active = c
	cs.all[c] = true
	return c, nil
}

// forget drops a dead cell and frees its uid block.
func (cs *cellSetup) forget(c *cell) {
	cs.mu.Lock()
	if cs.active == c {
		cs.active = nil
	}
	delete(cs.all, c)
	cs.mu.Unlock()
	cs.blocks.put(c.block)
}

// close kills every cell and waits until they are gone.
func (cs *cellSetup) close() {
	cs.startMu.Lock()
	cs.mu.Lock()
	cs.closed = true
	var all []*cell
	for c := range cs.all {
		all = append(all, c)
	}
	cs.mu.Unlock()
	cs.startMu.Unlock()
	for _, c := range all {
		c.kill()
	}
}

// cellChild is the cell backend of workerProc: one single-use worker forked
// by a cell's zygote. It is pid 1 of its own pid namespace, so SIGKILL to it
// ends everything it started.
type cellChild struct {
	c      *cell
	id     uint64
	uid    int // host uid
	pid    int // host pid, from the kernel's credentials on its ready line
	pidfd  int // -1 until the ready line
	exited chan struct{}
	status exitStatus    // valid once exited is closed
	conn   *net.UnixConn // the server's end of its result socket

	stopOnce sync.Once
}

var _ workerProc = (*cellChild)(nil)

func (k *cellChild) hostPID() int           { return k.pid }
func (k *cellChild) done() <-chan struct{}  { return k.exited }
func (k *cellChild) exitStatus() exitStatus { return k.status }

// stop kills the child through its pidfd and waits for the zygote's exit
// report (sent once the child's whole pid namespace is gone). A child whose
// pid was never learnt, or whose exit is never reported, costs the whole
// cell: the zygote is not trusted to end it.
func (k *cellChild) stop() {
	k.stopOnce.Do(func() {
		if isClosed(k.exited) {
			return
		}
		if k.pidfd < 0 {
			// Given up on before its ready line (a cancelled start): the
			// line still comes, with the kernel's word for its pid.
			k.learnPID()
		}
		wait := 2 * time.Second
		if k.pidfd >= 0 {
			if err := unix.PidfdSendSignal(k.pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				k.c.s.cfg.Log("jailproc: kill cell child", "pid", k.pid, "err", err)
			}
		} else {
			wait = 200 * time.Millisecond // a child that failed its set-up exits at once
		}
		select {
		case <-k.exited:
		case <-time.After(wait):
			k.c.kill()
			<-k.exited
		}
	})
}

// learnPID waits, up to the start timeout, for the ready line of a child
// that was given up on before it (or its exit), and opens a pidfd on its
// sender if that is the child.
func (k *cellChild) learnPID() {
	if k.conn == nil {
		return
	}
	k.conn.SetReadDeadline(time.Now().Add(k.c.s.cfg.StartTimeout))
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	_, oobn, _, _, err := k.conn.ReadMsgUnix(make([]byte, 4096), oob)
	if err != nil || oobn == 0 {
		return
	}
	cred, err := parseCred(oob[:oobn])
	if err != nil || int(cred.Uid) != k.uid {
		return
	}
	if fd, err := unix.PidfdOpen(int(cred.Pid), 0); err == nil {
		if statusUID(int(cred.Pid)) == k.uid {
			k.pidfd, k.pid = fd, int(cred.Pid)
		} else {
			unix.Close(fd)
		}
	}
}

// statusUID is the real uid of host process pid, -1 if unknown.
func statusUID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return -1
}

// startCellChild forks one worker from a cell and waits for its ready line.
// The child's host pid comes from the kernel (SO_PASSCRED on our end of its
// result socket), never from what the child says; the child joins its own
// cgroup before it is returned, and so before any request reaches it.
func (s *Supervisor) startCellChild(ctx context.Context) (_ *Process, err error) {
	c, err := s.cellFor(ctx)
	if err != nil {
		return nil, err
	}
	group, err := s.cg.newGroup(s.groupLimits())
	if err != nil {
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}
	k, conn, stdinW, err := c.fork()
	if err != nil {
		if group != nil {
			err = errors.Join(err, group.remove())
		}
		return nil, err
	}
	p := &Process{s: s, uid: k.uid, started: time.Now(), exited: k.exited, cc: k}
	p.w = newWorker(&s.cfg, k, k.uid, conn, stdinW, group)
	defer func() {
		if err != nil {
			if kerr := p.Kill(); kerr != nil {
				err = errors.Join(err, kerr)
			}
		}
	}()
	if err := k.readReady(ctx, conn, c.diag); err != nil {
		return nil, err
	}
	p.childPID = k.pid
	if err := p.w.join(); err != nil {
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}
	return p, nil
}

// fork asks the zygote for a child. It returns the child, the server's end
// of its result socket and the write end of its stdin.
func (c *cell) fork() (*cellChild, *net.UnixConn, *os.File, error) {
	uid, err := c.uids.take()
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error, closers ...io.Closer) (*cellChild, *net.UnixConn, *os.File, error) {
		for _, cl := range closers {
			cl.Close()
		}
		c.uids.put(uid)
		return nil, nil, nil, fmt.Errorf("jailproc: fork from cell: %w", err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	parentSock, childSock := os.NewFile(uintptr(fds[0]), "result"), os.NewFile(uintptr(fds[1]), "result-child")
	defer childSock.Close()
	defer parentSock.Close() // the conn holds its own dup
	if err := syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1); err != nil {
		return fail(err)
	}
	fc, err := net.FileConn(parentSock)
	if err != nil {
		return fail(err)
	}
	conn := fc.(*net.UnixConn)
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return fail(err, conn)
	}
	defer stdinR.Close()
	k := &cellChild{c: c, id: nextCellID(), uid: uid, pidfd: -1, exited: make(chan struct{}), conn: conn}
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return fail(errors.New("the cell is gone"), conn, stdinW)
	}
	c.children[k.id] = k
	c.live++
	c.forks++
	c.mu.Unlock()
	msg := fmt.Sprintf("F %d %d", k.id, jailUID+uid-c.base-1)
	if _, _, err := c.ctrl.WriteMsgUnix([]byte(msg), syscall.UnixRights(int(stdinR.Fd()), int(childSock.Fd())), nil); err != nil {
		// The zygote is gone or stuck: the cell is replaced, and k is
		// failed by the cell's end like any other child.
		go c.kill()
	}
	return k, conn, stdinW, nil
}

// readReady reads the child's ready line with the kernel's credentials of
// its sender, checks them and opens a pidfd on the child.
func (k *cellChild) readReady(ctx context.Context, conn *net.UnixConn, diag *tail) error {
	deadline := time.Now().Add(k.c.s.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	stop()
	conn.SetReadDeadline(time.Time{})
	if err == nil && n == 0 {
		err = errors.New("the child closed its result socket before it was ready")
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("jailproc: start: %w", ctx.Err())
		}
		return &StartError{Err: err, Diagnostics: diag.String()}
	}
	line := pyworker.ReadReady(bufio.NewReader(bytes.NewReader(buf[:n])))
	var failed *pyworker.StartError
	cred, err := parseCred(oob[:oobn])
	if err == nil && int(cred.Uid) != k.uid {
		// A child whose set-up failed before it took its own uid says why
		// with the zygote's (zygote.c, child_fail): worth reporting, and
		// never taken for a ready line.
		if int(cred.Uid) == k.c.base && errors.As(line, &failed) {
			return fmt.Errorf("jailproc: worker start-up failed: %w", line)
		}
		err = fmt.Errorf("the ready line came from uid %d, not the child's %d", cred.Uid, k.uid)
	}
	if err != nil {
		return &StartError{Err: err}
	}
	if fd, err := unix.PidfdOpen(int(cred.Pid), 0); err == nil {
		k.pidfd = fd
	}
	if k.pidfd < 0 {
		return &StartError{Err: fmt.Errorf("the child (pid %d) is gone", cred.Pid)}
	}
	// What the kernel says of the child, not what it says of itself. The
	// uid is the child's alone: if the pid was reused in between, the check
	// fails rather than adopting a stranger.
	if err := checkSandboxed(int(cred.Pid), k.uid); err != nil {
		return &StartError{Err: err}
	}
	k.pid = int(cred.Pid)
	if errors.As(line, &failed) {
		return fmt.Errorf("jailproc: worker start-up failed: %w", line)
	}
	if line != nil {
		return &StartError{Err: line}
	}
	return nil
}

func parseCred(oob []byte) (*unix.Ucred, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("ready line credentials: %w", err)
	}
	for _, m := range msgs {
		if c, err := unix.ParseUnixCredentials(&m); err == nil {
			return c, nil
		}
	}
	return nil, errors.New("the ready line came without the kernel's credentials")
}

// checkSandboxed checks, in /proc/<pid>/status, that a child that says it is
// ready has done the zygote's steps: all four uids are its own, no
// capability is left in any set, no_new_privs is on and a seccomp filter is
// installed (the cell's and its own). It runs before the child is handed any
// request, so a child that skipped a step never runs user code.
func checkSandboxed(pid, uid int) error {
	// One open, one read into a stack buffer, one close: every worker start
	// pays for it (os.ReadFile adds an fstat, a read at EOF and allocations).
	var buf [4096]byte
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("the child (pid %d) is gone: %w", pid, err)
	}
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil || n <= 0 || n == len(buf) {
		return fmt.Errorf("the child (pid %d) is gone or its status unreadable (%d bytes): %v", pid, n, err)
	}
	u := strconv.Itoa(uid)
	ids := u + "\t" + u + "\t" + u + "\t" + u
	want := [...]struct{ key, value string }{
		{"Uid", ids}, {"Gid", ids},
		{"CapInh", "0000000000000000"}, {"CapPrm", "0000000000000000"}, {"CapEff", "0000000000000000"},
		{"CapBnd", "0000000000000000"}, {"CapAmb", "0000000000000000"}, {"NoNewPrivs", "1"}, {"Seccomp", "2"},
	}
	found := 0
	for rest := buf[:n]; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		for _, w := range want {
			if string(k) != w.key {
				continue
			}
			if v = bytes.TrimSpace(v); string(v) != w.value {
				return fmt.Errorf("the child (pid %d) is not sandboxed: %s is %q, want %q", pid, w.key, v, w.value)
			}
			found++
		}
	}
	if found != len(want) {
		return fmt.Errorf("the child (pid %d) is not sandboxed: its status lacks %d fields", pid, len(want)-found)
	}
	return nil
}

// killCellChild is Process.kill of a cell child: stop it, remove its cgroup,
// close its pidfd, free its uid.
func (p *Process) killCellChild() error {
	k := p.cc
	k.stop()
	err := p.w.release()
	if k.pidfd >= 0 {
		unix.Close(k.pidfd)
	}
	k.c.release(p.uid)
	if err != nil {
		return fmt.Errorf("jailproc: remove the cgroup of cell child %d: %w", k.pid, err)
	}
	return nil
}

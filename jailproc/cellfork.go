package jailproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
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

// startCellChild forks one worker from a cell and waits for its ready line.
// The child's host pid comes from the kernel (SO_PASSCRED on our end of its
// result socket), never from what the child says; the child is moved into
// its own cgroup before it is returned, and so before any request reaches it.
func (s *Supervisor) startCellChild(ctx context.Context) (_ *Process, err error) {
	c, err := s.cellFor(ctx)
	if err != nil {
		return nil, err
	}
	p, parentSock, err := c.fork()
	if err != nil {
		return nil, err
	}
	defer parentSock.Close()
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
	if err := p.readCellReady(ctx); err != nil {
		return nil, err
	}
	g, err := s.cg.newChildGroup(s.cfg, p.childPID)
	if err != nil {
		return nil, fmt.Errorf("jailproc: start: %w", err)
	}
	p.group = g
	return p, nil
}

// fork asks the zygote for a child. It returns the child's Process (not yet
// ready) and the server's end of the child's result socket.
func (c *cell) fork() (*Process, *os.File, error) {
	uid, err := c.uids.take()
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*Process, *os.File, error) {
		c.uids.put(uid)
		return nil, nil, fmt.Errorf("jailproc: fork from cell: %w", err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	if err := syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1); err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return fail(err)
	}
	parentSock, childSock := os.NewFile(uintptr(fds[0]), "result"), os.NewFile(uintptr(fds[1]), "result-child")
	defer childSock.Close()
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		parentSock.Close()
		return fail(err)
	}
	defer stdinR.Close()
	id := nextCellID()
	p := &Process{s: c.s, cell: c, cellID: id, uid: uid, pidfd: -1, stdin: stdinW, diag: c.diag, exited: make(chan struct{}), started: time.Now()}
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		parentSock.Close()
		stdinW.Close()
		return fail(errors.New("the cell is gone"))
	}
	c.children[id] = p
	c.live++
	c.forks++
	c.mu.Unlock()
	msg := fmt.Sprintf("F %d %d", id, jailUID+uid-c.base-1)
	if _, _, err := c.ctrl.WriteMsgUnix([]byte(msg), syscall.UnixRights(int(stdinR.Fd()), int(childSock.Fd())), nil); err != nil {
		// The zygote is gone or stuck: the cell is replaced, and p is
		// failed by the cell's end like any other child.
		go c.kill()
		return p, parentSock, nil
	}
	return p, parentSock, nil
}

// readCellReady reads the child's ready line with the kernel's credentials
// of its sender, checks them and opens a pidfd on the child.
func (p *Process) readCellReady(ctx context.Context) error {
	deadline := time.Now().Add(p.s.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	p.ctrl.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { p.ctrl.SetReadDeadline(time.Now()) })
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := p.ctrl.ReadMsgUnix(buf, oob)
	stop()
	p.ctrl.SetReadDeadline(time.Time{})
	if err == nil && n == 0 {
		err = errors.New("the child closed its result socket before it was ready")
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("jailproc: start: %w", ctx.Err())
		}
		return &StartError{Err: err, Diagnostics: p.diag.String(), Exited: isClosed(p.exited)}
	}
	cred, err := parseCred(oob[:oobn])
	if err == nil && int(cred.Uid) != p.uid {
		err = fmt.Errorf("the ready line came from uid %d, not the child's %d", cred.Uid, p.uid)
	}
	if err != nil {
		return &StartError{Err: err}
	}
	if fd, err := unix.PidfdOpen(int(cred.Pid), 0); err == nil {
		p.pidfd = fd
	}
	// The uid is the child's alone: if the pid was reused in between, the
	// owner check below fails rather than adopting a stranger.
	if p.pidfd < 0 || procUID(int(cred.Pid)) != p.uid {
		return &StartError{Err: fmt.Errorf("the child (pid %d) is gone", cred.Pid)}
	}
	p.childPID = int(cred.Pid)
	if err := pyworker.ReadReady(bufio.NewReader(bytes.NewReader(buf[:n]))); err != nil {
		var se *pyworker.StartError
		if errors.As(err, &se) {
			return fmt.Errorf("jailproc: worker start-up failed: %w", err)
		}
		return &StartError{Err: err}
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

// procUID returns the real uid of host process pid, or -1.
func procUID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return -1
}

// killCellChild ends a cell child: SIGKILL through its pidfd (it is pid 1 of
// its own pid namespace, so everything it started dies with it), then waits
// for the zygote's exit report, removes its cgroup and frees its uid. A child
// whose pid was never learnt, or whose exit is never reported, costs the
// whole cell: the zygote is not trusted to end it.
func (p *Process) killCellChild() error {
	if !isClosed(p.exited) {
		if p.pidfd >= 0 {
			if err := unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				p.s.cfg.Log("jailproc: kill cell child", "pid", p.childPID, "err", err)
			}
		}
		wait := 2 * time.Second
		if p.pidfd < 0 {
			wait = 200 * time.Millisecond // a child that failed its set-up exits at once
		}
		select {
		case <-p.exited:
		case <-time.After(wait):
			p.cell.kill()
			<-p.exited
		}
	}
	if p.ctrl != nil {
		p.ctrl.Close()
	}
	p.stdin.Close()
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
	}
	err := p.group.remove()
	p.cell.release(p)
	if err != nil {
		return fmt.Errorf("jailproc: remove cgroup of cell child %d: %w", p.childPID, err)
	}
	return nil
}

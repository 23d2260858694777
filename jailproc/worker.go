package jailproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/secure-script-executor/executor/pyworker"
)

// workerProc is what the run protocol needs from whatever holds a worker's
// process: an nsjail per worker (Process, the jail backend) or a cell's
// zygote that forked it. Everything else of a run (writing the request,
// handing the output pipes, capturing output, reading and classifying the
// result, the worker's cgroup) is shared, in worker.
type workerProc interface {
	// hostPID is the worker's main process (the Python interpreter that
	// runs the script) in the server's pid namespace, 0 if unknown. It is
	// what joins the worker's cgroup.
	hostPID() int
	// stop kills every process of the worker and returns once the main
	// process has ended and exitStatus is known (done is closed). It
	// neither removes the cgroup nor frees the uid: the group must still
	// be readable afterwards. Idempotent and safe to call concurrently.
	stop()
	// done is closed once the main process has ended (for whatever reason,
	// stop or not) and exitStatus is valid.
	done() <-chan struct{}
	// exitStatus says how the main process ended. Valid once done is closed.
	exitStatus() exitStatus
}

// exitStatus is how a worker's main process ended.
type exitStatus struct {
	// Signal is the signal that killed it, 0 when it exited.
	Signal syscall.Signal
	// Code is its exit status when Signal is 0.
	Code int
	// Ambiguous is set when an exit with status 128+N cannot be told from
	// death by signal N. nsjail reports both as exit status 128+N; the
	// jail backend then reports Signal N with Ambiguous set.
	Ambiguous bool
	// CellLost is set when the worker's cell (its zygote) died under it: it
	// was killed with the cell, whatever its script did.
	CellLost bool
}

func (e exitStatus) String() string {
	switch {
	case e.Signal != 0 && e.Ambiguous:
		return fmt.Sprintf("exit status %d (or signal %s)", 128+int(e.Signal), e.Signal)
	case e.Signal != 0:
		return "signal " + e.Signal.String()
	default:
		return "exit status " + strconv.Itoa(e.Code)
	}
}

// worker is one warm, single-use Python worker as the run protocol sees it,
// whichever backend holds its process.
//
// A backend plugs in by: making the worker's group (Supervisor.cg.newGroup
// with Supervisor.groupLimits) before the worker can run anything; wrapping
// the worker's control socket (its fd 3) and the write end of its stdin in
// newWorker with its own workerProc; awaitReady (the versioned ready line);
// join (moves hostPID into the group; the worker must then be its only
// process); then run, once. To destroy it: proc.stop, then release (whose
// error, a group that could not be removed, is the backend's Kill error),
// then free the uid.
type worker struct {
	cfg   *Config
	proc  workerProc
	uid   int // the host uid its processes run as (unique to the worker)
	ctrl  *net.UnixConn
	ctrlR *bufio.Reader
	stdin *os.File
	// group is the worker's own cgroup, nil without cgroups.
	group *workerGroup

	used atomic.Bool
}

// newWorker wraps the control socket (fd 3 of the worker) and the write end
// of its stdin; conn's ownership passes to the worker.
func newWorker(cfg *Config, proc workerProc, uid int, conn *net.UnixConn, stdin *os.File, group *workerGroup) *worker {
	return &worker{cfg: cfg, proc: proc, uid: uid, ctrl: conn, ctrlR: bufio.NewReaderSize(conn, 64<<10), stdin: stdin, group: group}
}

// awaitReady reads the worker's versioned ready line, within ctx and
// Config.StartTimeout. The caller adds what it knows of a failure (the jail
// backend: nsjail's diagnostics and exit status).
func (w *worker) awaitReady(ctx context.Context) error {
	deadline := time.Now().Add(w.cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	w.ctrl.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { w.ctrl.SetReadDeadline(time.Now()) })
	err := pyworker.ReadReady(w.ctrlR)
	stop()
	if err == nil {
		w.ctrl.SetReadDeadline(time.Time{})
	}
	return err
}

// join moves the worker's main process into its group. Call it after the
// ready handshake, while the main process is the worker's only process, and
// before the worker is handed any request.
func (w *worker) join() error {
	if w.group == nil {
		return nil
	}
	pid := w.proc.hostPID()
	if pid <= 0 {
		return errors.New("the worker's host pid is unknown: it cannot be put in its cgroup")
	}
	return w.group.attach(pid)
}

// release closes the worker's descriptors and removes its cgroup or, if it
// can be emptied, keeps it for another worker. Call it after proc.stop. The
// error is a group that could not be removed.
func (w *worker) release() error {
	if w.ctrl != nil {
		w.ctrl.Close()
	}
	w.stdin.Close()
	if w.group == nil {
		return nil
	}
	return w.group.release()
}

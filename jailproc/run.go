package jailproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/pyworker"
)

// ErrUsed is returned by Run on a process that already ran a request:
// workers are single use.
var ErrUsed = errors.New("jailproc: worker already used")

// outputGrace is how long Run waits, after the result frame, for EOF on the
// output pipes. The worker closes fds 1 and 2 before writing the frame, so EOF
// is normally already there; only a forked child still holding them makes us
// wait, and never longer than this.
const outputGrace = 50 * time.Millisecond

// smallRequest is the largest request written synchronously: well below the
// 64 KiB a Linux pipe buffers, so the write never waits for the worker.
const smallRequest = 48 << 10

// run is the run protocol, shared by every backend: write the request, hand
// the output pipes, capture output, read the result, classify, measure.
func (w *worker) run(ctx context.Context, req executor.Request) (executor.Result, error) {
	if !w.used.CompareAndSwap(false, true) {
		return executor.Result{}, ErrUsed
	}
	timeout := req.Timeout
	if timeout <= 0 { // the caller decided the limit (never above cfg.Timeout); zero means cfg.Timeout
		timeout = w.cfg.Timeout
	}
	w.raisePriority()
	if err := w.limitMemory(req.MemoryLimit); err != nil {
		return executor.Result{}, err
	}
	w.setRunning(true)
	start := time.Now()
	stdout, stderr, err := w.send(req, start.Add(timeout))
	if err != nil {
		return executor.Result{}, err
	}
	res, err := w.collect(ctx, req, stdout, stderr, timeout)
	// The worker's teardown runs at the least weight: a cell child waits for
	// Kill after its result (zygote.c, zyg_linger); a jail's worker exits
	// on its own.
	w.setRunning(false)
	if err != nil {
		return executor.Result{}, err
	}
	res.Duration = time.Since(start)
	w.drain(&res, stdout, stderr)
	res.Usage = w.usage(res.Duration)
	return res, nil
}

// measureUsage is off only in the benchmark that measures what reading the
// usage costs.
var measureUsage = true

// usage is what the run consumed, from its own cgroup, whatever the outcome.
// Without a group CPU and memory stay unmeasured: nsjail's rusage would mix
// in nsjail's own CPU and, when vforked, the server's peak RSS.
func (w *worker) usage(wall time.Duration) executor.Usage {
	u := executor.Usage{Wall: wall}
	if w.group == nil || !measureUsage {
		return u
	}
	g := w.group.usage()
	u.CPU, u.CPUMeasured = g.cpu, g.cpuOK
	u.MemoryPeak, u.MemoryPeakMeasured = g.memPeak, g.memPeakOK
	return u
}

// setRunning gives the worker's group the CPU weight of a running request
// for the run, and the least weight before and after it (workerGroup.setRunning).
func (w *worker) setRunning(on bool) {
	if w.group == nil {
		return
	}
	if err := w.group.setRunning(on); err != nil {
		w.cfg.Log("jailproc: set the worker group's CPU weight", "uid", w.uid, "running", on, "err", err)
	}
}

// raisePriority raises the worker from spawnNice to 0. It was spawned at
// nice 19 so that spawns yield to running requests; now it is a running
// request. Its uid is unique to this worker, so PRIO_USER reaches exactly
// its processes. A worker alone in a group of the cpu controller is left
// as it is: there its nice value weighs only against its own processes,
// and the group's weight is what setRunning raises (setpriority with
// PRIO_USER walks every process on the host).
func (w *worker) raisePriority() {
	if w.group.weighsCPU() {
		return
	}
	if err := syscall.Setpriority(syscall.PRIO_USER, w.uid, 0); err != nil {
		w.cfg.Log("jailproc: raise worker priority", "uid", w.uid, "err", err)
	}
}

// limitMemory lowers the worker's memory limit to the request's own, right
// before the request is written; 0 or a limit at or above the configured one
// changes nothing (a request can lower its limit, never raise it). Without
// cgroups there is no memory limit to lower: only RLIMIT_AS applies.
func (w *worker) limitMemory(limit int64) error {
	if w.group == nil || limit <= 0 {
		return nil
	}
	if err := w.group.setMemoryLimit(limit); err != nil {
		return fmt.Errorf("jailproc: run: lower the memory limit to %d bytes: %w", limit, err)
	}
	return nil
}

// send writes the request to the worker's stdin and hands it the write ends
// of its output pipes, whose read ends it returns as captures.
func (w *worker) send(req executor.Request, deadline time.Time) (stdout, stderr *capture, err error) {
	var frame bytes.Buffer
	frame.Grow(len(req.Script) + len(req.Input) + 64)
	if err := pyworker.WriteRequest(&frame, pyworker.Request{
		Batch:          req.Mode == executor.ModeBatch,
		Script:         req.Script,
		Input:          req.Input,
		MaxResultBytes: w.cfg.MaxResult,
	}); err != nil {
		return nil, nil, fmt.Errorf("jailproc: run: %w", err)
	}
	w.ctrl.SetReadDeadline(deadline)
	w.stdin.SetWriteDeadline(deadline)
	// A request that fits in the pipe buffer is written before the worker
	// is woken by its output pipes, in one write, so that it finds the whole
	// request at once. A larger one is written concurrently, as the worker
	// reads it.
	if frame.Len() <= smallRequest {
		_, err := w.stdin.Write(frame.Bytes())
		w.stdin.Close() // the script sees EOF on stdin
		if err != nil {
			return nil, nil, fmt.Errorf("jailproc: run: write request: %w", err)
		}
	} else {
		go func() {
			w.stdin.Write(frame.Bytes())
			w.stdin.Close()
		}()
	}
	return w.handOutput()
}

// handOutput makes the run's stdout and stderr pipes and passes their write
// ends to the worker over the control socket.
func (w *worker) handOutput() (stdout, stderr *capture, err error) {
	outR, outW, err := outputPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("jailproc: run: %w", err)
	}
	errR, errW, err := outputPipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, fmt.Errorf("jailproc: run: %w", err)
	}
	err = pyworker.SendOutputFDs(w.ctrl, outW, errW)
	// Our copies of the write ends must go, or EOF would never come.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, nil, fmt.Errorf("jailproc: run: hand output pipes to the worker: %w", err)
	}
	return newCapture(outR, w.cfg.MaxStdout), newCapture(errR, w.cfg.MaxStderr), nil
}

type reply struct {
	res pyworker.Result
	err error
}

// readResult reads the result frame in the background and checks that it
// can be the answer to req.
func (w *worker) readResult(req executor.Request) <-chan reply {
	replies := make(chan reply, 1)
	go func() {
		r, err := pyworker.ReadResult(w.ctrlR, w.cfg.MaxResult)
		if err == nil {
			// A script can forge a well-formed frame of the other mode,
			// or a batch answer of another size.
			err = r.CheckMode(req.Mode == executor.ModeBatch)
		}
		if err == nil && req.Mode == executor.ModeBatch {
			err = r.CheckRecords(req.Records)
		}
		replies <- reply{r, err}
	}()
	return replies
}

// collect waits for whichever comes first: the result, an output overflow or
// the caller giving up (ctx, a supervisor error).
func (w *worker) collect(ctx context.Context, req executor.Request, stdout, stderr *capture, timeout time.Duration) (executor.Result, error) {
	select {
	case r := <-w.readResult(req):
		return w.classify(r.res, r.err, timeout), nil
	case <-stdout.overflow:
		return w.limit(executor.StatusOutputLimit, fmt.Sprintf("the script printed more than %d bytes to stdout", w.cfg.MaxStdout)), nil
	case <-stderr.overflow:
		return w.limit(executor.StatusOutputLimit, fmt.Sprintf("the script wrote more than %d bytes to stderr", w.cfg.MaxStderr)), nil
	case <-ctx.Done():
		w.proc.stop()
		stdout.wait(time.Second)
		stderr.wait(time.Second)
		return executor.Result{}, fmt.Errorf("jailproc: run: %w", ctx.Err())
	}
}

// drain waits for EOF on the output pipes and puts the output into res. An
// overflow noticed only while draining still breaks the limit.
func (w *worker) drain(res *executor.Result, stdout, stderr *capture) {
	grace := outputGrace
	if res.Status != executor.StatusOK {
		grace = time.Second // killed: the worker's end closes the pipes
	}
	stdout.wait(grace)
	stderr.wait(grace)
	if res.Status == executor.StatusOK {
		if isClosed(stdout.overflow) {
			*res = w.limit(executor.StatusOutputLimit, fmt.Sprintf("the script printed more than %d bytes to stdout", w.cfg.MaxStdout))
		} else if isClosed(stderr.overflow) {
			*res = w.limit(executor.StatusOutputLimit, fmt.Sprintf("the script wrote more than %d bytes to stderr", w.cfg.MaxStderr))
		}
	}
	res.Stdout, res.Stderr = stdout.bytes(), stderr.bytes()
}

// limit stops the worker for breaking a limit and reports it.
func (w *worker) limit(st executor.Status, msg string) executor.Result {
	w.proc.stop()
	return failed(st, msg)
}

func failed(st executor.Status, msg string) executor.Result {
	return executor.Result{Status: st, Error: &executor.ScriptError{Type: st, Message: msg}}
}

// classify turns what the result reader got into a Result.
func (w *worker) classify(fr pyworker.Result, err error, timeout time.Duration) executor.Result {
	switch {
	case err == nil:
		return fromFrame(fr)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return w.limit(executor.StatusTimeout, executor.TimeoutMessage(timeout, w.cfg.Timeout))
	case errors.Is(err, pyworker.ErrResultTooLarge):
		return w.limit(executor.StatusOutputLimit, fmt.Sprintf("the result is larger than %d bytes", w.cfg.MaxResult))
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return w.died()
	default:
		// The frame was malformed. The worker is untrusted once user code
		// ran; a script writing to the control socket can only spoil its
		// own run.
		w.cfg.Log("jailproc: protocol violation", "uid", w.uid, "err", err)
		return w.limit(executor.StatusRuntimeError, "the script interfered with the worker's result channel; do not write to file descriptor 3")
	}
}

// died classifies a worker that ended without sending a result.
func (w *worker) died() executor.Result {
	select {
	case <-w.proc.done():
	case <-time.After(2 * time.Second):
		return w.limit(executor.StatusRuntimeError, "the script closed the worker's result channel without a result")
	}
	st := w.proc.exitStatus()
	if st.CellLost {
		return failed(executor.StatusRuntimeError, "the sandbox cell running the script failed before the script finished; the run did not complete, retry it")
	}
	switch st.Signal {
	case 0:
		return failed(executor.StatusRuntimeError, fmt.Sprintf("the script's process ended with exit status %d before main returned", st.Code))
	case syscall.SIGKILL:
		return w.killed()
	case syscall.SIGXCPU:
		return w.cpuLimit()
	case syscall.SIGSYS:
		return failed(executor.StatusRuntimeError, "the script made a system call that the sandbox forbids")
	default:
		return failed(executor.StatusRuntimeError, fmt.Sprintf("the script's process ended with %s before main returned", st))
	}
}

// killed classifies a main process that died of SIGKILL. Nothing inside the
// sandbox can send it one (it is pid 1 of its pid namespace, which ignores
// signals from its own namespace), so before we do it comes from the kernel:
// the OOM killer of the worker's own group, which counts its kills, or else
// RLIMIT_CPU, whose soft and hard limits are equal (pid 1 ignores SIGXCPU,
// so the kernel's SIGKILL at the hard limit ends it, also when the script
// lowered its own limit). Never the process's peak RSS: nsjail's rusage
// includes the server's own when nsjail was vforked.
//
// The group's CPU time cannot tell an RLIMIT_CPU kill from an exit with
// status 137 (which nsjail reports exactly like a SIGKILL): the rlimit is
// checked against tick-sampled CPU time, which on a loaded machine runs well
// ahead of the scheduler's exact count (kills at 0.75 s of exact CPU for a
// 1 s limit were seen here). A script that exits with 137 chose its own
// outcome, as it could by writing a frame; it is reported as a timeout.
func (w *worker) killed() executor.Result {
	if w.group == nil {
		return w.cpuLimit()
	}
	oom, err := w.group.oomKilled()
	if err != nil {
		w.cfg.Log("jailproc: read the worker's OOM counter", "uid", w.uid, "err", err)
	}
	if oom {
		return failed(executor.StatusMemoryLimit, fmt.Sprintf("the script used more than its %d MiB memory limit and was killed", w.group.memLimit/mib))
	}
	return w.cpuLimit()
}

func (w *worker) cpuLimit() executor.Result {
	return failed(executor.StatusTimeout, "the script used up its CPU time limit")
}

func fromFrame(fr pyworker.Result) executor.Result {
	if !fr.OK {
		e := scriptError(fr.Error)
		return executor.Result{Status: e.Type, Error: e}
	}
	res := executor.Result{Status: executor.StatusOK, Value: fr.Value}
	if fr.Batch != nil {
		res.Batch = make([]executor.BatchItem, len(fr.Batch))
		for i, it := range fr.Batch {
			res.Batch[i] = executor.BatchItem{Result: it.Result, Stdout: it.Stdout}
			if it.Error != nil {
				res.Batch[i].Error = scriptError(it.Error)
			}
		}
	}
	return res
}

func scriptError(e *pyworker.ErrorInfo) *executor.ScriptError {
	if e == nil {
		return &executor.ScriptError{Type: executor.StatusRuntimeError, Message: "the script failed"}
	}
	return &executor.ScriptError{Type: executor.Status(e.Type), Message: e.Message, Line: e.Line, Traceback: e.Traceback}
}

// wait waits up to d for EOF.
func (c *capture) wait(d time.Duration) {
	select {
	case <-c.done:
	case <-time.After(d):
	}
}

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

// Run hands req to the worker and returns how the run ended. The process is
// spent afterwards whatever happened: the caller must Kill it. A non-nil error
// means the supervisor failed (the run's outcome is unknown); script failures
// and limits are Statuses.
func (p *Process) Run(ctx context.Context, req executor.Request) (executor.Result, error) {
	if !p.used.CompareAndSwap(false, true) {
		return executor.Result{}, ErrUsed
	}
	timeout := req.Timeout
	if timeout <= 0 { // the caller decided the limit (never above cfg.Timeout); zero means cfg.Timeout
		timeout = p.s.cfg.Timeout
	}
	// The worker was spawned at nice 19 so that spawns yield to running
	// requests; now it is a running request. Its uid is unique to this jail,
	// so PRIO_USER reaches exactly its processes.
	if err := syscall.Setpriority(syscall.PRIO_USER, p.uid, 0); err != nil {
		p.s.cfg.Log("jailproc: raise worker priority", "uid", p.uid, "err", err)
	}

	var frame bytes.Buffer
	frame.Grow(len(req.Script) + len(req.Input) + 64)
	if err := pyworker.WriteRequest(&frame, pyworker.Request{
		Batch:          req.Mode == executor.ModeBatch,
		Script:         req.Script,
		Input:          req.Input,
		MaxResultBytes: p.s.cfg.MaxResult,
	}); err != nil {
		return executor.Result{}, fmt.Errorf("jailproc: run: %w", err)
	}
	start := time.Now()
	deadline := start.Add(timeout)
	p.ctrl.SetReadDeadline(deadline)
	p.stdin.SetWriteDeadline(deadline)
	// A request that fits in the pipe buffer is written before the worker
	// is woken by its output pipes, in one write, so that it finds the whole
	// request at once. A larger one is written concurrently, as the worker
	// reads it.
	if frame.Len() <= smallRequest {
		_, err := p.stdin.Write(frame.Bytes())
		p.stdin.Close() // the script sees EOF on stdin
		if err != nil {
			return executor.Result{}, fmt.Errorf("jailproc: run: write request: %w", err)
		}
	} else {
		go func() {
			p.stdin.Write(frame.Bytes())
			p.stdin.Close()
		}()
	}

	outR, outW, err := outputPipe()
	if err != nil {
		return executor.Result{}, fmt.Errorf("jailproc: run: %w", err)
	}
	errR, errW, err := outputPipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return executor.Result{}, fmt.Errorf("jailproc: run: %w", err)
	}
	err = pyworker.SendOutputFDs(p.ctrl, outW, errW)
	// Our copies of the write ends must go, or EOF would never come.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return executor.Result{}, fmt.Errorf("jailproc: run: hand output pipes to the worker: %w", err)
	}
	stdout := newCapture(outR, p.s.cfg.MaxStdout)
	stderr := newCapture(errR, p.s.cfg.MaxStderr)

	type reply struct {
		res pyworker.Result
		err error
	}
	replies := make(chan reply, 1)
	go func() {
		r, err := pyworker.ReadResult(p.ctrlR, p.s.cfg.MaxResult)
		if err == nil {
			// A script can forge a well-formed frame of the other mode.
			err = r.CheckMode(req.Mode == executor.ModeBatch)
		}
		replies <- reply{r, err}
	}()

	var res executor.Result
	select {
	case r := <-replies:
		res = p.classify(r.res, r.err, timeout)
	case <-stdout.overflow:
		res = p.limit(executor.StatusOutputLimit, fmt.Sprintf("the script printed more than %d bytes to stdout", p.s.cfg.MaxStdout))
	case <-stderr.overflow:
		res = p.limit(executor.StatusOutputLimit, fmt.Sprintf("the script wrote more than %d bytes to stderr", p.s.cfg.MaxStderr))
	case <-ctx.Done():
		p.Kill()
		stdout.wait(time.Second)
		stderr.wait(time.Second)
		return executor.Result{}, fmt.Errorf("jailproc: run: %w", ctx.Err())
	}
	res.Duration = time.Since(start)

	grace := outputGrace
	if res.Status != executor.StatusOK {
		grace = time.Second // killed: nsjail's exit closes the pipes
	}
	stdout.wait(grace)
	stderr.wait(grace)
	res.Stdout, res.Stderr = stdout.bytes(), stderr.bytes()
	// An overflow noticed only while draining still breaks the limit.
	if res.Status == executor.StatusOK {
		if isClosed(stdout.overflow) {
			res = p.limit(executor.StatusOutputLimit, fmt.Sprintf("the script printed more than %d bytes to stdout", p.s.cfg.MaxStdout))
		} else if isClosed(stderr.overflow) {
			res = p.limit(executor.StatusOutputLimit, fmt.Sprintf("the script wrote more than %d bytes to stderr", p.s.cfg.MaxStderr))
		}
		res.Stdout, res.Stderr = stdout.bytes(), stderr.bytes()
	}
	return res, nil
}

// limit kills the jail for breaking a limit and reports it.
func (p *Process) limit(st executor.Status, msg string) executor.Result {
	p.Kill()
	return executor.Result{Status: st, Error: &executor.ScriptError{Type: st, Message: msg}}
}

// classify turns what the result reader got into a Result.
func (p *Process) classify(fr pyworker.Result, err error, timeout time.Duration) executor.Result {
	switch {
	case err == nil:
		return fromFrame(fr)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return p.limit(executor.StatusTimeout, executor.TimeoutMessage(timeout, p.s.cfg.Timeout))
	case errors.Is(err, pyworker.ErrResultTooLarge):
		return p.limit(executor.StatusOutputLimit, fmt.Sprintf("the result is larger than %d bytes", p.s.cfg.MaxResult))
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return p.died()
	default:
		// The frame was malformed. The worker is untrusted once user code
		// ran; a script writing to the control socket can only spoil its
		// own run.
		p.s.cfg.Log("jailproc: protocol violation", "uid", p.uid, "err", err)
		return p.limit(executor.StatusRuntimeError, "the script interfered with the worker's result channel; do not write to file descriptor 3")
	}
}

// died classifies a jail that ended without sending a result.
func (p *Process) died() executor.Result {
	select {
	case <-p.exited:
	case <-time.After(2 * time.Second):
		return p.limit(executor.StatusRuntimeError, "the script closed the worker's result channel without a result")
	}
	code := p.exitCode
	p.Kill() // reap bookkeeping: cgroups, uid
	fail := func(st executor.Status, msg string) executor.Result {
		return executor.Result{Status: st, Error: &executor.ScriptError{Type: st, Message: msg}}
	}
	// nsjail exits with 128+N when the jailed process died of signal N.
	switch sig := syscall.Signal(code - 128); {
	case code > 128 && sig == syscall.SIGKILL && p.maxRSS >= p.s.cfg.MemoryLimit*3/4:
		// Only the kernel sends SIGKILL into the jail before we do: the
		// cgroup OOM killer, which this peak RSS points to...
		return fail(executor.StatusMemoryLimit, fmt.Sprintf("the script used more than its %d MiB memory limit and was killed", p.s.cfg.MemoryLimit/mib))
	case code > 128 && (sig == syscall.SIGKILL || sig == syscall.SIGXCPU):
		// ...or RLIMIT_CPU: its soft and hard limits are equal and the worker
		// is pid 1 of its namespace, which ignores SIGXCPU, so the kernel's
		// SIGKILL at the hard limit ends it (also when the script lowered
		// its own limit).
		return fail(executor.StatusTimeout, fmt.Sprintf("the script used up its CPU time limit (%s of CPU in the jail)", p.cpuTime.Round(time.Millisecond)))
	case code > 128 && sig == syscall.SIGSYS:
		return fail(executor.StatusRuntimeError, "the script made a system call that the sandbox forbids")
	case code > 128:
		return fail(executor.StatusRuntimeError, fmt.Sprintf("the script's process was killed by signal %s", sig))
	default:
		return fail(executor.StatusRuntimeError, fmt.Sprintf("the script's process exited with status %d before main returned", code))
	}
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

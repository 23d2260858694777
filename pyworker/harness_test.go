package pyworker_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/pyworker"
)

// python is the interpreter the tests run the real worker with; an absolute
// path, as in the jail (nsjail does no PATH lookup).
const python = "/usr/bin/python3"

// harnessTimeout bounds every step, so a worker bug fails a test instead of
// hanging it.
const harnessTimeout = 30 * time.Second

// worker is a started real worker, past its ready line, outside any jail.
type worker struct {
	cmd      *exec.Cmd
	ctrl     *net.UnixConn
	ctrlR    *bufio.Reader
	stdin    io.WriteCloser
	startErr *bytes.Buffer
}

// outcome is everything one run produced.
type outcome struct {
	Result pyworker.Result
	// Err is ReadResult's error.
	Err            error
	Stdout, Stderr []byte
	ExitCode       int
}

// startWorker starts the worker the way jailproc does, minus nsjail: fd 3 is
// one end of a socketpair, and the ready line is read through the codec.
// It returns ReadReady's error (the process is reaped in that case).
func startWorker(t testing.TB, preload, pythonPath []string) (*worker, error) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	parent := os.NewFile(uintptr(fds[0]), "ctrl")
	child := os.NewFile(uintptr(fds[1]), "ctrl-worker")
	fc, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		t.Fatal(err)
	}
	ctrl := fc.(*net.UnixConn)

	cmd := exec.Command(python, "-I", "-S", "-B", "-X", "utf8", "-c", pyworker.Source, pyworker.Arg(preload, pythonPath))
	cmd.ExtraFiles = []*os.File{child} // becomes fd 3
	cmd.Env = []string{}
	// Until the output pipes arrive, fd 2 is the jail's diagnostics stream.
	w := &worker{cmd: cmd, ctrl: ctrl, ctrlR: bufio.NewReader(ctrl), startErr: new(bytes.Buffer)}
	cmd.Stderr = w.startErr
	cmd.WaitDelay = harnessTimeout
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		ctrl.Close()
	})
	_ = ctrl.SetDeadline(time.Now().Add(harnessTimeout))
	if err := pyworker.ReadReady(w.ctrlR); err != nil {
		w.stdin.Close()
		_ = cmd.Wait()
		return nil, err
	}
	return w, nil
}

// run performs one request through the codec: output fds, request, result,
// then stdout/stderr to EOF and the exit status.
func (w *worker) run(t testing.TB, req pyworker.Request) outcome {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pyworker.SendOutputFDs(w.ctrl, outW, errW); err != nil {
		t.Fatal(err)
	}
	// Only the worker holds the write ends from now on: EOF comes when it
	// closes fds 1 and 2.
	outW.Close()
	errW.Close()

	var o outcome
	var wg sync.WaitGroup
	for _, p := range []struct {
		r   *os.File
		dst *[]byte
	}{{outR, &o.Stdout}, {errR, &o.Stderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.r.Close()
			_ = p.r.SetReadDeadline(time.Now().Add(harnessTimeout))
			*p.dst, _ = io.ReadAll(p.r)
		}()
	}
	reqErr := make(chan error, 1)
	go func() {
		err := pyworker.WriteRequest(w.stdin, req)
		w.stdin.Close()
		reqErr <- err
	}()

	o.Result, o.Err = pyworker.ReadResult(w.ctrlR, req.MaxResultBytes)
	wg.Wait()
	if err := <-reqErr; err != nil && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("WriteRequest: %v", err)
	}
	_ = w.cmd.Wait()
	o.ExitCode = w.cmd.ProcessState.ExitCode()
	return o
}

// runScript starts a fresh worker with no preloads and runs one request.
func runScript(t testing.TB, req pyworker.Request) outcome {
	t.Helper()
	w, err := startWorker(t, nil, nil)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if req.MaxResultBytes == 0 {
		req.MaxResultBytes = 1 << 20
	}
	return w.run(t, req)
}

// wire re-encodes a decoded Result in the payload format of docs/PROTOCOL.md,
// members in the order the worker writes them. Value and item results are
// kept byte for byte.
func wire(r pyworker.Result) []byte {
	type errorJSON struct {
		Type      string `json:"type"`
		Message   string `json:"message"`
		Line      int    `json:"line,omitempty"`
		Traceback string `json:"traceback,omitempty"`
	}
	toErr := func(e *pyworker.ErrorInfo) *errorJSON {
		if e == nil {
			return nil
		}
		return &errorJSON{e.Type, e.Message, e.Line, e.Traceback}
	}
	type itemJSON struct {
		Result json.RawMessage `json:"result,omitempty"`
		Error  *errorJSON      `json:"error,omitempty"`
		Stdout string          `json:"stdout"`
	}
	var v any
	switch {
	case !r.OK:
		v = struct {
			OK    bool       `json:"ok"`
			Error *errorJSON `json:"error"`
		}{false, toErr(r.Error)}
	case r.Batch != nil:
		items := make([]itemJSON, len(r.Batch))
		for i, it := range r.Batch {
			items[i] = itemJSON{it.Result, toErr(it.Error), it.Stdout}
		}
		v = struct {
			OK      bool       `json:"ok"`
			Results []itemJSON `json:"results"`
		}{true, items}
	default:
		v = struct {
			OK     bool            `json:"ok"`
			Result json.RawMessage `json:"result"`
		}{true, r.Value}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSpace(buf.Bytes())
}

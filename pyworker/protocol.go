// Package pyworker holds the Python worker that runs inside each jail and the
// Go side of its wire protocol (docs/PROTOCOL.md, version 1).
//
// Everything a worker writes after user code has run may be forged by the
// script, so the decoding half of this package treats its input as hostile:
// reads are bounded, payloads are decoded strictly, and strings that end up in
// logs are capped. A worker is single use, so a forged frame can only lie
// about its own script's result.
//
// The package does not start processes (that is jailproc's job); it only
// encodes and decodes what flows over the worker's fds 0 and 3.
package pyworker

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Source is the worker program. jailproc compiles it once, with the jail's
// interpreter, to a .pyc file that every jail mounts and runs
// (python3 -I -S -B -X utf8 /opt/pyworker/worker.pyc <Arg>); the tests in
// this package run it with -c.
//
//go:embed worker.py
var Source string

// ZygoteLoop is the zygote's fork loop (zygote/zygote.c, cell isolation), built
// for linux/amd64 by `make zygote`; jailproc mounts it beside the compiled
// worker, and worker.py's zygote loads it with ctypes. The test
// TestTheEmbeddedZygoteLoopIsBuiltFromItsSource rebuilds it and compares.
//
//go:embed zygote/zygote.so
var ZygoteLoop []byte

// ProtocolVersion is the version this package speaks; the worker announces it
// in its ready line and the server sends it in each request header.
const ProtocolVersion = 1

// ErrProtocol is wrapped by every error that means the worker wrote something
// the protocol does not allow (possibly forged by the script).
var ErrProtocol = errors.New("pyworker: protocol violation")

// ErrResultTooLarge means the result frame announced a payload over the
// caller's limit; the payload was not read. Errors wrapping it also wrap
// ErrProtocol, since docs/PROTOCOL.md (section 6) counts an oversized frame as
// a violation: the worker itself never sends one for a sane limit.
var ErrResultTooLarge = errors.New("pyworker: result frame over the limit")

// StartError is the worker's own report that it could not start (SSE-FAIL),
// typically a preload import that failed.
type StartError struct {
	// Message names the module and the exception, e.g.
	// "numpy: ModuleNotFoundError: No module named 'numpy'".
	Message string
}

func (e *StartError) Error() string {
	return "pyworker: worker failed to start: " + e.Message
}

// maxReadyLine bounds the ready line: a worker that never sends a newline must
// not make the server buffer without end.
const maxReadyLine = 4 << 10

// Arg builds the single argv configuration entry
// "v1;<preload csv>;<paths colon-separated>".
//
// It panics on an entry the format cannot carry (see ValidateArg): that is a
// configuration error, and callers are expected to have run ValidateArg on
// their configuration at start-up, the way regexp.MustCompile is used on
// constant patterns.
func Arg(preload, pythonPath []string) string {
	if err := ValidateArg(preload, pythonPath); err != nil {
		panic(err)
	}
	return "v1;" + strings.Join(preload, ",") + ";" + strings.Join(pythonPath, ":")
}

// ValidateArg reports whether Arg can represent preload and pythonPath: module
// names must be non-empty and free of ',', ';' and NUL; path entries must be
// non-empty and free of ':' and NUL (the separators of the format, and the
// byte argv cannot hold).
func ValidateArg(preload, pythonPath []string) error {
	for _, m := range preload {
		if m == "" || strings.ContainsAny(m, ",;\x00") {
			return fmt.Errorf("pyworker: preload module %q cannot be passed to the worker", m)
		}
	}
	for _, p := range pythonPath {
		if p == "" || strings.ContainsAny(p, ":\x00") {
			return fmt.Errorf("pyworker: python path entry %q cannot be passed to the worker", p)
		}
	}
	return nil
}

// ReadReady reads the worker's ready line from the control socket. It returns
// nil for "SSE-READY 1", a *StartError for "SSE-FAIL ...", an error wrapping
// io.EOF if the worker closed the socket without writing anything (it died
// during start-up), and an error wrapping ErrProtocol for anything else. It
// never reads more than 4 KiB. Read errors (such as a deadline set on the
// connection by the caller) are returned wrapped.
func ReadReady(r *bufio.Reader) error {
	line, err := readLine(r, maxReadyLine)
	if err != nil {
		return fmt.Errorf("pyworker: ready line: %w", err)
	}
	if msg, ok := strings.CutPrefix(line, "SSE-FAIL "); ok {
		return &StartError{Message: strings.ToValidUTF8(msg, "\uFFFD")}
	}
	v, ok := strings.CutPrefix(line, "SSE-READY ")
	if !ok {
		return fmt.Errorf("%w: unexpected ready line %.100q", ErrProtocol, line)
	}
	if v != strconv.Itoa(ProtocolVersion) {
		return fmt.Errorf("%w: worker speaks protocol %.20q, want %d", ErrProtocol, v, ProtocolVersion)
	}
	return nil
}

// readLine reads one '\n'-terminated line of at most limit bytes (newline
// included) and returns it without the newline. Byte-at-a-time reads keep the
// bound exact whatever the size of r's buffer; lines here are tiny.
func readLine(r *bufio.Reader, limit int) (string, error) {
	var b strings.Builder
	for b.Len() < limit {
		c, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if b.Len() == 0 {
					return "", io.EOF
				}
				return "", fmt.Errorf("%w: %w after %d bytes", ErrProtocol, io.ErrUnexpectedEOF, b.Len())
			}
			return "", err
		}
		if c == '\n' {
			return b.String(), nil
		}
		b.WriteByte(c)
	}
	return "", fmt.Errorf("%w: no newline within %d bytes", ErrProtocol, limit)
}

// SendOutputFDs sends stdoutW and stderrW over the control socket in one
// message: a 1-byte payload 'O' with SCM_RIGHTS carrying both descriptors.
// The caller still owns the files and should close them once this returns, so
// that only the worker holds the write ends.
func SendOutputFDs(ctrl *net.UnixConn, stdoutW, stderrW *os.File) error {
	if ctrl == nil || stdoutW == nil || stderrW == nil {
		return errors.New("pyworker: send output fds: nil connection or file")
	}
	// SyscallConn().Control keeps each descriptor valid for the duration of
	// the send, without File.Fd's side effect of switching it to blocking mode.
	outConn, err := stdoutW.SyscallConn()
	if err != nil {
		return fmt.Errorf("pyworker: send output fds: %w", err)
	}
	errConn, err := stderrW.SyscallConn()
	if err != nil {
		return fmt.Errorf("pyworker: send output fds: %w", err)
	}
	var sendErr error
	ctlErr := outConn.Control(func(outFD uintptr) {
		sendErr = errConn.Control(func(errFD uintptr) {
			oob := syscall.UnixRights(int(outFD), int(errFD))
			n, oobn, err := ctrl.WriteMsgUnix([]byte{'O'}, oob, nil)
			switch {
			case err != nil:
				sendErr = err
			case n != 1 || oobn != len(oob):
				sendErr = fmt.Errorf("short write (%d, %d)", n, oobn)
			}
		})
	})
	if ctlErr != nil {
		return fmt.Errorf("pyworker: send output fds: %w", ctlErr)
	}
	if sendErr != nil {
		return fmt.Errorf("pyworker: send output fds: %w", sendErr)
	}
	return nil
}

// Request is one run, as written to the worker's stdin.
type Request struct {
	// Batch selects batch mode: main(record) for each element of Input,
	// which must then be a JSON array.
	Batch bool
	// Script is the Python source, UTF-8.
	Script []byte
	// Input is strict JSON text; nil (or empty) means no input, in which
	// case single mode calls main() with no argument.
	Input []byte
	// MaxResultBytes caps the result frame's payload; the worker reports
	// output_limit rather than exceed it. Must be positive.
	MaxResultBytes int
}

// WriteRequest writes the request frame (docs/PROTOCOL.md section 3). It does
// not close w: the caller closes the worker's stdin afterwards so a script
// reading stdin sees EOF. The input is not parsed here (the worker reports
// input it cannot decode as a runtime_error); only what would make the frame
// itself wrong is checked.
func WriteRequest(w io.Writer, req Request) error {
	if req.MaxResultBytes <= 0 {
		return fmt.Errorf("pyworker: request: MaxResultBytes must be positive, got %d", req.MaxResultBytes)
	}
	mode := "single"
	if req.Batch {
		mode = "batch"
		if first := bytes.TrimLeft(req.Input, " \t\r\n"); len(first) == 0 || first[0] != '[' {
			return errors.New("pyworker: request: batch input must be a JSON array")
		}
	}
	header := fmt.Sprintf("SSE-REQ %d %s %d %d %d\n", ProtocolVersion, mode, len(req.Script), len(req.Input), req.MaxResultBytes)
	for _, b := range [][]byte{[]byte(header), req.Script, req.Input} {
		if len(b) == 0 {
			continue
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("pyworker: request: %w", err)
		}
	}
	return nil
}

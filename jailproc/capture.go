package jailproc

import (
	"bytes"
	"os"
	"sync"
	"syscall"
)

// capture reads one output pipe of a run to EOF, keeping at most limit bytes.
// Past the limit it keeps draining into io.Discard, so the writer never blocks
// on a full pipe, and signals overflow once.
type capture struct {
	limit    int
	buf      bytes.Buffer
	overflow chan struct{} // closed when more than limit bytes arrived
	done     chan struct{} // closed at EOF
	mu       sync.Mutex
}

func newCapture(r *os.File, limit int) *capture {
	c := &capture{limit: limit, overflow: make(chan struct{}), done: make(chan struct{})}
	go c.run(r)
	return c
}

func (c *capture) run(r *os.File) {
	defer close(c.done)
	defer r.Close()
	chunk := make([]byte, 32<<10)
	over := false
	for {
		n, err := r.Read(chunk)
		if n > 0 && !over {
			c.mu.Lock()
			room := c.limit - c.buf.Len()
			if n > room {
				c.buf.Write(chunk[:max(room, 0)])
				over = true
			} else {
				c.buf.Write(chunk[:n])
			}
			c.mu.Unlock()
			if over {
				close(c.overflow)
			}
		}
		if err != nil {
			return
		}
	}
}

// bytes returns a copy of what was kept so far.
func (c *capture) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// tail keeps the last n bytes written to it: nsjail's diagnostics, for the
// log when a jail fails to start.
type tail struct {
	mu  sync.Mutex
	n   int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.n:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}

// outputPipe makes a pipe whose read end is pollable (non-blocking, served by
// Go's poller) and whose write end, handed to the worker, is blocking. os.Pipe
// would make both ends non-blocking, and a script printing faster than we
// read would then fail with BlockingIOError instead of simply waiting.
func outputPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "|0"), os.NewFile(uintptr(fds[1]), "|1"), nil
}

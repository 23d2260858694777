package httpapi

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
)

// How long, and how much, a refused connection is drained before it is
// closed. Closing a socket with unread bytes makes the kernel send a reset,
// which can destroy the refusal before the client reads it; like net/http,
// the write side is shut first so the client sees the answer and then EOF.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// checkedListener hands fasthttp connections whose bytes pass through a
// framer first (framing.go) and whose request bodies are reserved in the
// server's body budget (bodybudget.go).
type checkedListener struct {
	net.Listener
	s *Server
}

func (s *Server) checkConns(ln net.Listener) net.Listener {
	return &checkedListener{Listener: ln, s: s}
}

func (l *checkedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &checkedConn{Conn: c, budget: l.s.budget}
	cc.f = framer{maxBody: int64(l.s.cfg.MaxBodyBytes), admit: cc.admit, done: cc.bodyDone}
	return cc, nil
}

// checkedConn is one client connection. fasthttp reads and writes it from
// the connection's goroutine; Close may also come from Shutdown's.
type checkedConn struct {
	net.Conn
	budget *bodyBudget
	f      framer

	// rej is set by Read when the framer refused the stream; from then on
	// Read returns errRefused. cut is set once fasthttp has read up to
	// there, so the error it reports next is this refusal.
	rej *rejection
	cut atomic.Bool
	// lingerOnClose is set when fasthttp answered a request it could not
	// read in full (it closes the connection next): Close drains first.
	lingerOnClose atomic.Bool
	drainLeft     int64 // body bytes of a refused request still to drop

	mu     sync.Mutex
	holds  []bodyHold // budget reservations, oldest first
	closed bool
}

// bodyHold is the budget reserved for one request's body. It is given back
// when the answer is written (the body and the copies the handler made of it
// are garbage by then) or when the connection closes.
type bodyHold struct {
	n    int64
	read bool // the body has been read in full
}

// errRefused ends the stream of a refused connection. It is not io.EOF:
// fasthttp closes silently on EOF in the middle of a body, but answers any
// other read error through the error handler.
var errRefused = errors.New("httpapi: request refused by the framer")

func (c *checkedConn) Read(p []byte) (int, error) {
	if c.rej != nil {
		c.drainBody(p)
		c.cut.Store(true)
		return 0, errRefused
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.Conn.Read(p)
	if n == 0 {
		return 0, err
	}
	k, rej := c.f.feed(p[:n])
	if rej == nil {
		return n, err
	}
	c.rej = rej
	if rej.drain > 0 {
		// p[k] is the head's final LF; what follows it is body.
		c.drainLeft = rej.drain - int64(n-k-1)
	}
	if c.f.delivered == 0 {
		// fasthttp answers a request that ends early, but closes silently
		// when the stream ends before the first byte of one: give it one.
		// The refused byte's slot is free (k < n).
		p[k] = 'X'
		k++
	}
	if k == 0 {
		c.cut.Store(true)
		return 0, errRefused
	}
	return k, nil
}

// drainBody reads and drops the rest of a body refused by the budget, within
// the read deadline fasthttp has set (a read error ends it early).
func (c *checkedConn) drainBody(p []byte) {
	for c.drainLeft > 0 {
		n, err := c.Conn.Read(p)
		c.drainLeft -= int64(n)
		if err != nil {
			c.drainLeft = 0
		}
	}
}

func (c *checkedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	var free int64
	if len(c.holds) > 0 && c.holds[0].read {
		free = c.holds[0].n
		c.holds = c.holds[1:]
	}
	c.mu.Unlock()
	c.budget.release(free)
	return n, err
}

func (c *checkedConn) Close() error {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	var free int64
	for _, h := range c.holds {
		free += h.n
	}
	c.holds = nil
	c.mu.Unlock()
	c.budget.release(free)
	if first && (c.cut.Load() || c.lingerOnClose.Load()) {
		c.linger()
	}
	return c.Conn.Close()
}

func (c *checkedConn) linger() {
	d := lingerTime
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		// Without a half-close the client sees EOF only at Close: take what
		// is already on its way, do not wait for more.
		d = 50 * time.Millisecond
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
}

// admit is the framer's callback: reserve n more bytes for the current
// request's body.
func (c *checkedConn) admit(n int64, first bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := n
	if !first && len(c.holds) > 0 {
		total += c.holds[len(c.holds)-1].n
	}
	if c.closed || !c.budget.reserve(n, total) {
		return false
	}
	if first {
		c.holds = append(c.holds, bodyHold{n: n})
	} else {
		c.holds[len(c.holds)-1].n = total
	}
	return true
}

func (c *checkedConn) bodyDone(reserved bool) {
	if !reserved {
		return
	}
	c.mu.Lock()
	if len(c.holds) > 0 {
		c.holds[len(c.holds)-1].read = true
	}
	c.mu.Unlock()
}

// connRejection returns the framer's refusal when fasthttp reports an error
// for a request it could not read because the framer cut the connection
// there; nil otherwise.
func (s *Server) connRejection(c *fiber.Ctx) *apiError {
	cc, ok := c.Context().Conn().(*checkedConn)
	if !ok || !cc.cut.Load() || cc.rej == nil {
		return nil
	}
	ae := &apiError{Type: cc.rej.typ, Message: cc.rej.msg, cause: errors.New("httpapi: connection refused by the request framer: " + cc.rej.msg)}
	if ae.Type == TypeOverloaded {
		ae.Message += "; retry after " + retryAfterSeconds(s.cfg.RetryAfter) + " seconds, or send a smaller body"
		s.rec.Overloaded()
	}
	return ae
}

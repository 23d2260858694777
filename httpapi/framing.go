package httpapi

// framer is a strict HTTP/1.1 request framer (RFC 9112) that runs over the
// raw bytes of a connection before fasthttp sees them. fasthttp is lenient
// where leniency lets two parsers disagree on where a request ends (request
// smuggling): it takes any Transfer-Encoding but "identity" as chunked, lets
// chunked win over Content-Length, folds obs-fold lines, accepts bare LF and
// serves HTTP/1.1 without Host. A proxy in front that frames the same bytes
// differently would let one client's bytes become another request.
//
// The framer follows every request on the connection, pipelined ones
// included: its head line by line, then its body by Content-Length or by
// chunks, to find where the next request starts. It passes each byte on as
// soon as it is checked, and stops at the first byte it refuses: fasthttp
// then sees a request that ends early and answers it through the API's error
// handler, which asks the connection why (see conncheck.go). A head can only
// be complete for fasthttp at its final LF, which is passed on only after
// the whole head was checked, so a refused request never reaches a handler.

import (
	"bytes"
	"fmt"
)

const (
	stLead        = iota // before a request line: empty lines allowed
	stMethod             // the method token
	stTarget             // the request target
	stVersion            // HTTP/1.x up to CR
	stVersionLF          // the LF of the request line
	stFieldStart         // start of a field line, or the CR of the empty line
	stFieldName          // the field name, up to the colon
	stFieldValue         // the field value, up to CR
	stFieldLF            // the LF of a field line
	stHeadLF             // the LF of the empty line that ends the head
	stBody               // a Content-Length body
	stChunkSize          // hex digits of a chunk size
	stChunkExt           // a chunk extension, up to CR (ignored)
	stChunkSizeLF        // the LF of a chunk-size line
	stChunkData          // chunk data
	stChunkDataCR        // the CR after chunk data
	stChunkDataLF        // the LF after chunk data
	stTrailer            // after the last chunk: only the final CRLF
	stTrailerLF          // its LF
)

// Bounds of the framer's own state; everything else is bounded by fasthttp's
// header buffer (431) and --max-body (413).
const (
	maxLeadBytes     = 8    // empty-line bytes tolerated before a request line
	maxMethodBytes   = 32   // longest method token
	maxFieldValue    = 1024 // longest Content-Length, Transfer-Encoding, Host or Expect value
	maxChunkExtBytes = 4096 // longest chunk extension
	maxChunkDigits   = 15   // fasthttp's own limit on chunk-size digits (64-bit)
	maxCLDigits      = 18   // significant digits of a Content-Length that fits int64
)

// rejection is why the framer stopped a connection: an API error type and
// its message. drain, for a body refused by the budget, is how many body
// bytes follow the refused head: they are read and dropped before the
// refusal is answered, so that the client, still sending, reads the answer
// instead of a reset.
type rejection struct {
	typ, msg string
	drain    int64
}

func refuse(format string, args ...any) *rejection {
	return &rejection{typ: TypeInvalidRequest, msg: fmt.Sprintf(format, args...)}
}

// Which field of the head the framer is reading.
const (
	fieldOther = iota
	fieldContentLength
	fieldTransferEncoding
	fieldHost
	fieldExpect
)

// framer holds one connection's parse state. admit reserves n more body bytes
// for the current request (first is true for its first reservation) and
// reports whether the budget allows them; done says the current request's
// body has been read in full.
type framer struct {
	maxBody int64
	admit   func(n int64, first bool) bool
	done    func(reserved bool)

	st        int
	lead      int // empty-line bytes before this request line
	delivered int // bytes of this request's head passed on
	n         int // length of the current token (method, version, name)
	version   []byte
	http10    bool
	name      []byte // the field name, lower case, when short enough to matter
	field     int
	value     []byte
	clCount   int
	teCount   int
	hostCount int
	cl        int64 // -1: over maxCLDigits
	remaining int64 // bytes left of a body or chunk
	chunkSize int64
	total     int64 // chunked body bytes so far
	reserved  bool  // this request holds a budget reservation

	expectContinue bool // Expect: 100-continue
}

// feed checks p, the next bytes of the connection. It returns how many of
// them may be passed on and, when the connection must stop there, why.
func (f *framer) feed(p []byte) (int, *rejection) {
	for i := 0; i < len(p); {
		if f.st == stBody || f.st == stChunkData {
			k := int(min(f.remaining, int64(len(p)-i)))
			i += k
			f.remaining -= int64(k)
			if f.remaining == 0 {
				if f.st == stBody {
					f.requestDone()
				} else {
					f.st = stChunkDataCR
				}
			}
			continue
		}
		// delivered counts the bytes of this request's head (not the empty
		// lines before it): a byte is counted before step, which may end the
		// request and reset the count for the next one.
		wasLead := f.st == stLead
		if !wasLead {
			f.delivered++
		}
		if rej := f.step(p[i]); rej != nil {
			return i, rej
		}
		i++
		if wasLead && f.st != stLead {
			f.delivered++
		}
	}
	return len(p), nil
}

// requestDone resets the state for the next request on the connection.
func (f *framer) requestDone() {
	f.done(f.reserved)
	*f = framer{maxBody: f.maxBody, admit: f.admit, done: f.done,
		version: f.version[:0], name: f.name[:0], value: f.value[:0]}
}

// step checks one byte outside bodies and chunk data.
func (f *framer) step(c byte) *rejection {
	switch f.st {
	case stLead:
		return f.lead1(c)
	case stMethod, stTarget, stVersion, stVersionLF:
		return f.requestLine(c)
	case stFieldStart, stFieldName, stFieldValue, stFieldLF:
		return f.fieldLine(c)
	case stHeadLF:
		if c != '\n' {
			return bareCR()
		}
		return f.headEnd()
	default:
		return f.chunked(c)
	}
}

func bareCR() *rejection {
	return refuse("a CR without LF in the request; end every line of the head with CRLF")
}

func bareLF() *rejection {
	return refuse("a line of the request ends in a bare LF; end every line of the head with CRLF")
}

var errRequestLine = "the request line is malformed; send METHOD /path HTTP/1.1 with single spaces, ending in CRLF"

func (f *framer) lead1(c byte) *rejection {
	switch {
	case c == '\r' || c == '\n':
		// RFC 9112 section 2.2: empty lines before a request are ignored
		// (fasthttp skips them too), but only a few.
		if f.lead++; f.lead > maxLeadBytes {
			return refuse("too many empty lines before the request line")
		}
	case isTchar(c):
		f.st, f.n = stMethod, 1
	default:
		return refuse("%s", errRequestLine)
	}
	return nil
}

func (f *framer) requestLine(c byte) *rejection {
	switch f.st {
	case stMethod:
		switch {
		case c == ' ':
			f.st, f.n = stTarget, 0
		case isTchar(c) && f.n < maxMethodBytes:
			f.n++
		default:
			return refuse("%s", errRequestLine)
		}
	case stTarget:
		switch {
		case c == ' ' && f.n > 0:
			f.st = stVersion
		case c > 0x20 && c < 0x7f:
			f.n++
		default:
			return refuse("%s", errRequestLine)
		}
	case stVersion:
		switch {
		case c == '\r':
			switch string(f.version) {
			case "HTTP/1.1":
			case "HTTP/1.0":
				f.http10 = true
			default:
				return refuse("only HTTP/1.1 and HTTP/1.0 are served; the request line must end in HTTP/1.1")
			}
			f.st = stVersionLF
		case c == '\n':
			return bareLF()
		case len(f.version) < 8:
			f.version = append(f.version, c)
		default:
			return refuse("only HTTP/1.1 and HTTP/1.0 are served; the request line must end in HTTP/1.1")
		}
	case stVersionLF:
		if c != '\n' {
			return bareCR()
		}
		f.st = stFieldStart
	}
	return nil
}

func (f *framer) fieldLine(c byte) *rejection {
	switch f.st {
	case stFieldStart:
		switch {
		case c == '\r':
			f.st = stHeadLF
		case c == '\n':
			return bareLF()
		case c == ' ' || c == '\t':
			return refuse("a header line starts with whitespace (obsolete line folding); send each header on one line")
		case isTchar(c):
			f.st, f.name, f.n = stFieldName, append(f.name[:0], lower(c)), 1
		default:
			return refuse("a header name holds a character that is not allowed; use letters, digits and -")
		}
	case stFieldName:
		switch {
		case c == ':':
			f.st, f.value, f.field = stFieldValue, f.value[:0], fieldKind(f.name, f.n)
		case c == ' ' || c == '\t':
			return refuse("whitespace between a header name and its colon; write Name: value")
		case isTchar(c):
			if f.n++; len(f.name) < 20 {
				f.name = append(f.name, lower(c))
			}
		default:
			return refuse("a header name holds a character that is not allowed; use letters, digits and -")
		}
	case stFieldValue:
		switch {
		case c == '\r':
			f.st = stFieldLF
		case c == '\n':
			return bareLF()
		case c < 0x20 && c != '\t' || c == 0x7f:
			return refuse("a header value holds a control character")
		case f.field != fieldOther:
			if len(f.value) >= maxFieldValue {
				return refuse("a Content-Length, Transfer-Encoding, Host or Expect header is too long")
			}
			f.value = append(f.value, c)
		}
	case stFieldLF:
		if c != '\n' {
			return bareCR()
		}
		f.st = stFieldStart
		return f.fieldDone()
	}
	return nil
}

func fieldKind(name []byte, n int) int {
	if n != len(name) {
		return fieldOther
	}
	switch string(name) {
	case "content-length":
		return fieldContentLength
	case "transfer-encoding":
		return fieldTransferEncoding
	case "host":
		return fieldHost
	case "expect":
		return fieldExpect
	}
	return fieldOther
}

// fieldDone checks a complete field line whose value matters for framing.
func (f *framer) fieldDone() *rejection {
	v := bytes.Trim(f.value, " \t")
	switch f.field {
	case fieldContentLength:
		if f.clCount++; f.clCount > 1 {
			return refuse("more than one Content-Length header; send exactly one")
		}
		cl, ok := parseContentLength(v)
		if !ok {
			return refuse("Content-Length must be a single non-negative decimal number")
		}
		f.cl = cl
	case fieldTransferEncoding:
		if f.teCount++; f.teCount > 1 || !bytes.EqualFold(v, []byte("chunked")) {
			return refuse("the only Transfer-Encoding accepted is one header with exactly: chunked")
		}
	case fieldHost:
		if f.hostCount++; f.hostCount > 1 {
			return refuse("more than one Host header; send exactly one")
		}
		if !validHost(v) {
			return refuse("the Host header is not a valid host[:port]")
		}
	case fieldExpect:
		// fasthttp answers 100 Continue only to exactly this value.
		f.expectContinue = f.expectContinue || bytes.Equal(v, []byte("100-continue"))
	}
	return nil
}

// parseContentLength accepts 1*DIGIT. A value with more significant digits
// than fit an int64 is returned as -1 (over any body limit).
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	sig := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		if sig > 0 || c != '0' {
			sig++
		}
		if sig <= maxCLDigits {
			n = n*10 + int64(c-'0')
		}
	}
	if sig > maxCLDigits {
		return -1, true
	}
	return n, true
}

// headEnd checks the whole head at its final LF and sets up the body.
func (f *framer) headEnd() *rejection {
	switch {
	case !f.http10 && f.hostCount == 0:
		return refuse("an HTTP/1.1 request needs a Host header")
	case f.teCount > 0 && f.clCount > 0:
		return refuse("Content-Length and Transfer-Encoding together are not accepted; send one of them")
	case f.teCount > 0 && f.http10:
		return refuse("Transfer-Encoding is not accepted in an HTTP/1.0 request; send Content-Length")
	case f.cl < 0:
		return &rejection{typ: TypeRequestTooLarge, msg: f.tooLarge()}
	}
	switch {
	case f.teCount > 0:
		f.st, f.n, f.chunkSize = stChunkSize, 0, 0
	case f.cl > 0:
		f.st, f.remaining = stBody, f.cl
		// Over the limit, fasthttp answers 413 without reading the body, so
		// nothing is reserved.
		if f.cl <= f.maxBody {
			if !f.admit(f.cl, true) {
				// Refused before fasthttp sees the end of the head: it never
				// allocates the body's buffer.
				rej := overBudget()
				if !f.expectContinue {
					rej.drain = f.cl // a client that waits for 100 sends none
				}
				return rej
			}
			f.reserved = true
		}
	default:
		f.requestDone()
	}
	return nil
}

func overBudget() *rejection {
	return &rejection{typ: TypeOverloaded, msg: "the server is receiving too many large request bodies at once"}
}

func (f *framer) tooLarge() string {
	return fmt.Sprintf("the request body is larger than this server's limit of %d bytes; send a smaller script or input, or split a batch", f.maxBody)
}

// chunked checks the framing of a chunked body: chunk-size [ext] CRLF, data,
// CRLF, ..., 0 CRLF, CRLF. Trailer fields are refused.
func (f *framer) chunked(c byte) *rejection {
	const malformed = "the chunked body is malformed: %s"
	switch f.st {
	case stChunkSize:
		switch d := hexVal(c); {
		case d >= 0:
			if f.n++; f.n > maxChunkDigits {
				return refuse(malformed, "a chunk size has more than 15 hex digits")
			}
			f.chunkSize = f.chunkSize<<4 | int64(d)
		case f.n > 0 && (c == ';' || c == ' ' || c == '\t'):
			f.st = stChunkExt
		case f.n > 0 && c == '\r':
			f.st = stChunkSizeLF
		default:
			return refuse(malformed, "a chunk size is not a hex number")
		}
	case stChunkExt:
		switch {
		case c == '\r':
			f.st = stChunkSizeLF
		case c < 0x20 && c != '\t' || c == 0x7f:
			return refuse(malformed, "a chunk extension holds a control character")
		default:
			if f.n++; f.n > maxChunkDigits+maxChunkExtBytes {
				return refuse(malformed, "a chunk extension is too long")
			}
		}
	case stChunkSizeLF:
		if c != '\n' {
			return refuse(malformed, "a chunk-size line does not end in CRLF")
		}
		return f.chunkStart()
	case stChunkDataCR, stTrailer:
		if c != '\r' {
			if f.st == stTrailer {
				return refuse("trailer fields after a chunked body are not accepted")
			}
			return refuse(malformed, "chunk data is not followed by CRLF")
		}
		f.st++
	case stChunkDataLF:
		if c != '\n' {
			return refuse(malformed, "chunk data is not followed by CRLF")
		}
		f.st, f.n, f.chunkSize = stChunkSize, 0, 0
	case stTrailerLF:
		if c != '\n' {
			return refuse(malformed, "the last chunk does not end in CRLF CRLF")
		}
		f.requestDone()
	}
	return nil
}

// chunkStart runs at the LF of a chunk-size line.
func (f *framer) chunkStart() *rejection {
	if f.chunkSize == 0 {
		f.st = stTrailer
		return nil
	}
	if f.total += f.chunkSize; f.total > f.maxBody {
		return &rejection{typ: TypeRequestTooLarge, msg: f.tooLarge()}
	}
	if !f.admit(f.chunkSize, !f.reserved) {
		return overBudget()
	}
	f.reserved = true
	f.st, f.remaining = stChunkData, f.chunkSize
	return nil
}

// isTchar: RFC 9110 token characters.
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// validHost accepts host[:port] made of RFC 3986 reg-name, IP-literal and
// port characters (or nothing, which RFC 9112 allows).
func validHost(v []byte) bool {
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case bytes.IndexByte([]byte("-._~!$&'()*+,;=:[]%"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

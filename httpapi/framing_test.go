package httpapi

import (
	"testing"
)

// frame feeds data to a fresh framer in pieces of at most step bytes, the
// way reads arrive, and returns how many bytes it passed on and why it
// stopped (nil: it did not).
func frame(data []byte, step int) (int, *rejection, int64) {
	var reserved int64
	f := framer{maxBody: 1 << 20,
		admit: func(n int64, first bool) bool { reserved += n; return reserved <= 3<<20 },
		done:  func(bool) {}}
	passed := 0
	for len(data) > 0 {
		k := min(step, len(data))
		n, rej := f.feed(data[:k])
		passed += n
		if rej != nil {
			return passed, rej, reserved
		}
		data = data[k:]
	}
	return passed, nil, reserved
}

// The framer's verdict cannot depend on how the bytes were split into reads:
// otherwise a client could pick the split that slips past a check.
func FuzzFramerVerdictDoesNotDependOnReadBoundaries(f *testing.F) {
	for _, s := range []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /execute HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: y\r\n\r\n",
		"\r\nPOST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		whole, wholeRej, wholeRes := frame(data, len(data)+1)
		split, splitRej, splitRes := frame(data, int(step)%16+1)
		if whole != split || (wholeRej == nil) != (splitRej == nil) || wholeRes != splitRes {
			t.Fatalf("in one read: %d bytes, %v, %d reserved; in reads of %d: %d bytes, %v, %d reserved",
				whole, wholeRej, wholeRes, int(step)%16+1, split, splitRej, splitRes)
		}
		if wholeRej != nil && *wholeRej != *splitRej {
			t.Fatalf("refusals differ: %v and %v", wholeRej, splitRej)
		}
		if whole > len(data) {
			t.Fatalf("passed on %d of %d bytes", whole, len(data))
		}
	})
}

// A head is passed on whole only when it is accepted: the final LF of a
// refused head never reaches fasthttp.
func TestTheFinalLFOfARefusedHeadIsNeverPassedOn(t *testing.T) {
	for _, head := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", // over maxBody: fasthttp answers 413
	} {
		n, rej, _ := frame([]byte(head), 1<<20)
		if rej != nil && n >= len(head) {
			t.Errorf("%q refused (%s) but passed on whole", head, rej.msg)
		}
		if rej == nil && n != len(head) {
			t.Errorf("%q accepted but %d of %d bytes passed on", head, n, len(head))
		}
	}
}

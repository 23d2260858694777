package pyworker_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/secure-script-executor/executor/pyworker"
)

var allowedTypes = map[string]bool{
	"syntax_error": true, "missing_main": true, "runtime_error": true,
	"result_not_json": true, "memory_limit": true, "output_limit": true,
}

var itemTypes = map[string]bool{"runtime_error": true, "result_not_json": true, "output_limit": true}

// checkAccepted is the property every accepted payload must have: it
// re-encodes to a payload that decodes to the same Result, its error types
// come from the closed sets, and its texts are valid UTF-8 within the caps.
func checkAccepted(t *testing.T, res pyworker.Result) {
	t.Helper()
	checkErr := func(e *pyworker.ErrorInfo, types map[string]bool) {
		if e == nil {
			t.Fatal("missing error")
		}
		if !types[e.Type] {
			t.Fatalf("error type %q accepted", e.Type)
		}
		for _, s := range []string{e.Message, e.Traceback} {
			if len(s) > pyworker.MaxTextBytes || !utf8.ValidString(s) {
				t.Fatalf("text of %d bytes (valid UTF-8: %t) accepted", len(s), utf8.ValidString(s))
			}
		}
		if e.Line < 0 {
			t.Fatalf("line %d", e.Line)
		}
	}
	switch {
	case !res.OK:
		if res.Value != nil || res.Batch != nil {
			t.Fatal("failed run with a value")
		}
		checkErr(res.Error, allowedTypes)
	case res.Batch != nil:
		if res.Value != nil || res.Error != nil {
			t.Fatal("batch with a value or an error")
		}
		for _, it := range res.Batch {
			if (it.Result == nil) == (it.Error == nil) {
				t.Fatal("item without exactly one of result and error")
			}
			if it.Error != nil {
				checkErr(it.Error, itemTypes)
			}
		}
	default:
		if res.Value == nil || res.Error != nil {
			t.Fatal("single success without a value, or with an error")
		}
	}
	for _, v := range append([]json.RawMessage{res.Value}, batchValues(res)...) {
		if v != nil {
			checkStrict(t, v)
		}
	}
	payload := asciiJSON(wire(res))
	again, err := pyworker.DecodeResult(payload)
	if err != nil {
		t.Fatalf("re-encoded payload %s rejected: %v", payload, err)
	}
	if !reflect.DeepEqual(compactValues(again), compactValues(res)) {
		t.Fatalf("round trip changed the result:\n%+v\n%+v", res, again)
	}
}

func FuzzDecodeResult(f *testing.F) {
	for _, s := range []string{
		`{"ok":true,"result":{"msg":"done"}}`,
		`{"ok":true,"results":[{"result":1,"stdout":"a\n"},{"error":{"type":"runtime_error","message":"E","line":2,"traceback":"T"},"stdout":""}]}`,
		`{"ok":false,"error":{"type":"syntax_error","message":"SyntaxError: x","line":1}}`,
		`{"ok":false,"error":{"type":"timeout","message":"x"}}`,
		`{"ok":true,"result":"\ud800"}`,
		`{"ok":true,"result":{"a":1,"a":2,"inf":1e999,"big":12345678901234567890}}`,
		`{"ok":true,"result":{"\u0061":[-0.5e-400,1E+308],"b":{"a":null}}}`,
		`{"ok":true,"results":[{"result":{"k":1,"k":2},"stdout":""}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		res, err := pyworker.DecodeResult(payload)
		if err != nil {
			if !errors.Is(err, pyworker.ErrProtocol) {
				t.Fatalf("rejection not wrapping ErrProtocol: %v", err)
			}
			return
		}
		checkAccepted(t, res)
	})
}

func FuzzReadResult(f *testing.F) {
	f.Add([]byte("SSE-RES 35\n{\"ok\":true,\"result\":{\"msg\":\"done\"}}"), uint16(100))
	f.Add([]byte("SSE-RES 2\n{}"), uint16(100))
	f.Add([]byte("SSE-RES 99999\n"), uint16(10))
	f.Add([]byte("SSE-RES 5\n{\"ok\""), uint16(100))
	f.Fuzz(func(t *testing.T, data []byte, maxBytes uint16) {
		res, err := pyworker.ReadResult(bufio.NewReader(bytes.NewReader(data)), int(maxBytes))
		if err != nil {
			if !errors.Is(err, pyworker.ErrProtocol) && !errors.Is(err, io.EOF) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		checkAccepted(t, res)
	})
}

// asciiJSON escapes every non-ASCII rune of a JSON text (they can only be in
// strings) the way the worker does, since DecodeResult accepts ASCII only.
func asciiJSON(b []byte) []byte {
	var out bytes.Buffer
	for _, r := range string(b) {
		switch {
		case r < utf8.RuneSelf:
			out.WriteByte(byte(r))
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&out, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
	}
	return out.Bytes()
}

// compactValues drops insignificant whitespace from raw values, which the
// decoder passes through as it found them.
func compactValues(r pyworker.Result) pyworker.Result {
	compact := func(v json.RawMessage) json.RawMessage {
		if v == nil {
			return nil
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, v); err != nil {
			panic(err)
		}
		return buf.Bytes()
	}
	r.Value = compact(r.Value)
	if r.Batch != nil {
		items := make([]pyworker.Item, len(r.Batch))
		for i, it := range r.Batch {
			it.Result = compact(it.Result)
			items[i] = it
		}
		r.Batch = items
	}
	return r
}

func batchValues(r pyworker.Result) []json.RawMessage {
	var vs []json.RawMessage
	for _, it := range r.Batch {
		vs = append(vs, it.Result)
	}
	return vs
}

// checkStrict is an independent check of an accepted value (through
// encoding/json's tokens, not the decoder's own scanner): finite numbers,
// integers of at most MaxIntDigits digits, and no member name twice in an
// object. Names holding U+FFFD are skipped: encoding/json turns every lone
// surrogate into it, so distinct names can look equal here.
func checkStrict(t *testing.T, v json.RawMessage) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	type frame struct {
		object, key bool
		names       map[string]bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("accepted value %.80s: %v", v, err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.object && top.key
		if top != nil && top.object {
			top.key = !top.key
		}
		switch x := tok.(type) {
		case json.Delim:
			switch x {
			case '{', '[':
				stack = append(stack, &frame{object: x == '{', key: true, names: map[string]bool{}})
			default:
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].key = true
				}
				continue
			}
		case json.Number:
			if f, err := x.Float64(); err != nil && math.IsInf(f, 0) {
				t.Fatalf("accepted a number that is not finite: %s", x)
			}
			if n := strings.TrimLeft(string(x), "-"); !strings.ContainsAny(n, ".eE") && len(n) > pyworker.MaxIntDigits {
				t.Fatalf("accepted an integer of %d digits", len(n))
			}
		case string:
			if isKey && !strings.ContainsRune(x, utf8.RuneError) {
				if top.names[x] {
					t.Fatalf("accepted a duplicate member name %q in %.80s", x, v)
				}
				top.names[x] = true
			}
		}
	}
}

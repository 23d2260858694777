package pyworker_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/pyworker"
)

func TestArgJoinsPreloadAndPathsWithTheDocumentedSeparators(t *testing.T) {
	for _, c := range []struct {
		preload, path []string
		want          string
	}{
		{nil, nil, "v1;;"},
		{[]string{"numpy", "a.b"}, nil, "v1;numpy,a.b;"},
		{nil, []string{"/opt/lib", "/x y;z"}, "v1;;/opt/lib:/x y;z"},
	} {
		if got := pyworker.Arg(c.preload, c.path); got != c.want {
			t.Errorf("Arg(%q, %q) = %q; want %q", c.preload, c.path, got, c.want)
		}
	}
}

func TestArgRefusesEntriesItsFormatCannotCarry(t *testing.T) {
	for _, c := range []struct{ preload, path []string }{
		{[]string{"a,b"}, nil},
		{[]string{"a;b"}, nil},
		{[]string{""}, nil},
		{nil, []string{"/a:/b"}},
		{nil, []string{""}},
		{nil, []string{"/a\x00"}},
	} {
		if pyworker.ValidateArg(c.preload, c.path) == nil {
			t.Errorf("ValidateArg(%q, %q) accepted", c.preload, c.path)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Arg(%q, %q) did not panic", c.preload, c.path)
				}
			}()
			pyworker.Arg(c.preload, c.path)
		}()
	}
}

// countingReader counts what the codec pulled from the connection, to prove
// reads are bounded.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadReadyAcceptsOnlyTheVersionOneReadyLine(t *testing.T) {
	for _, c := range []struct {
		in        string
		protocol  bool
		eof       bool
		startFail string
	}{
		{in: "SSE-READY 1\n"},
		{in: "SSE-READY 1\nextra after is not read"},
		{in: "SSE-FAIL numpy: ImportError: nope\n", startFail: "numpy: ImportError: nope"},
		{in: "SSE-READY 2\n", protocol: true},
		{in: "SSE-READY 1 \n", protocol: true},
		{in: "SSE-READY\n", protocol: true},
		{in: "hello\n", protocol: true},
		{in: "SSE-READY 1", protocol: true},
		{in: "", eof: true},
	} {
		err := pyworker.ReadReady(bufio.NewReader(strings.NewReader(c.in)))
		var se *pyworker.StartError
		switch {
		case c.startFail != "":
			if !errors.As(err, &se) || se.Message != c.startFail {
				t.Errorf("%q: %v; want StartError %q", c.in, err, c.startFail)
			}
		case c.protocol:
			if !errors.Is(err, pyworker.ErrProtocol) {
				t.Errorf("%q: %v; want ErrProtocol", c.in, err)
			}
		case c.eof:
			if !errors.Is(err, io.EOF) || errors.Is(err, pyworker.ErrProtocol) {
				t.Errorf("%q: %v; want io.EOF only", c.in, err)
			}
		default:
			if err != nil {
				t.Errorf("%q: %v", c.in, err)
			}
		}
	}
}

func TestReadReadyNeverConsumesMoreThanFourKiBWithoutANewline(t *testing.T) {
	cr := &countingReader{r: io.MultiReader(strings.NewReader("SSE-FAIL "), infiniteA{})}
	err := pyworker.ReadReady(bufio.NewReaderSize(cr, 16))
	if !errors.Is(err, pyworker.ErrProtocol) {
		t.Fatalf("err = %v", err)
	}
	if cr.n > 4096+16 {
		t.Fatalf("read %d bytes", cr.n)
	}
}

type infiniteA struct{}

func (infiniteA) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

func TestWriteRequestWritesTheHeaderThenScriptThenInput(t *testing.T) {
	var buf bytes.Buffer
	err := pyworker.WriteRequest(&buf, pyworker.Request{Batch: true, Script: []byte("é\n"), Input: []byte(" [1]"), MaxResultBytes: 77})
	if err != nil {
		t.Fatal(err)
	}
	if want := "SSE-REQ 1 batch 3 4 77\né\n [1]"; buf.String() != want {
		t.Fatalf("got %q; want %q", buf.String(), want)
	}
	buf.Reset()
	if err := pyworker.WriteRequest(&buf, pyworker.Request{Script: []byte("x"), MaxResultBytes: 1}); err != nil {
		t.Fatal(err)
	}
	if want := "SSE-REQ 1 single 1 0 1\nx"; buf.String() != want {
		t.Fatalf("got %q; want %q", buf.String(), want)
	}
}

func TestWriteRequestRefusesRequestsTheWorkerCouldNotRun(t *testing.T) {
	for _, req := range []pyworker.Request{
		{Script: []byte("x"), MaxResultBytes: 0},
		{Batch: true, Script: []byte("x"), MaxResultBytes: 10},
		{Batch: true, Script: []byte("x"), Input: []byte(`{"a":1}`), MaxResultBytes: 10},
	} {
		if err := pyworker.WriteRequest(io.Discard, req); err == nil {
			t.Errorf("%+v accepted", req)
		}
	}
}

func frame(payload string) string { return "SSE-RES " + strconv.Itoa(len(payload)) + "\n" + payload }

func compactJSON(dst *bytes.Buffer, s string) error { return json.Compact(dst, []byte(s)) }

func TestReadResultRejectsMalformedHeaders(t *testing.T) {
	for _, in := range []string{
		"SSE-RES \n{}",
		"SSE-RES 02\n{}",
		"SSE-RES +2\n{}",
		"SSE-RES -2\n{}",
		"SSE-RES 2 \n{}",
		"SSE-RES  2\n{}",
		"sse-res 2\n{}",
		"SSE-RES 0x2\n{}",
		"SSE-RES 1234567890\n",
		"SSE-RES 2\r\n{}",
		"SSE-RES 2",
		"SSE-RES " + strings.Repeat("9", 40) + "\n",
	} {
		_, err := pyworker.ReadResult(bufio.NewReader(strings.NewReader(in)), 1<<20)
		if !errors.Is(err, pyworker.ErrProtocol) {
			t.Errorf("%q: %v; want ErrProtocol", in, err)
		}
	}
}

func TestReadResultRefusesAnOversizedFrameWithoutReadingItsPayload(t *testing.T) {
	cr := &countingReader{r: io.MultiReader(strings.NewReader("SSE-RES 1000001\n"), infiniteA{})}
	_, err := pyworker.ReadResult(bufio.NewReaderSize(cr, 16), 1000000)
	if !errors.Is(err, pyworker.ErrResultTooLarge) || !errors.Is(err, pyworker.ErrProtocol) {
		t.Fatalf("err = %v", err)
	}
	if cr.n > 32 {
		t.Fatalf("read %d bytes", cr.n)
	}
}

func TestReadResultReportsATruncatedPayloadAsAProtocolViolation(t *testing.T) {
	_, err := pyworker.ReadResult(bufio.NewReader(strings.NewReader("SSE-RES 40\n{\"ok\":true,")), 100)
	if !errors.Is(err, pyworker.ErrProtocol) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v", err)
	}
}

func TestReadResultReportsNothingAtAllAsEOFNotAViolation(t *testing.T) {
	_, err := pyworker.ReadResult(bufio.NewReader(strings.NewReader("")), 100)
	if !errors.Is(err, io.EOF) || errors.Is(err, pyworker.ErrProtocol) {
		t.Fatalf("err = %v", err)
	}
}

func TestReadResultPassesReadDeadlinesThrough(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	go b.Write([]byte("SSE-RES 10\n{"))
	_, err := pyworker.ReadResult(bufio.NewReader(a), 100)
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, pyworker.ErrProtocol) {
		t.Fatalf("err = %v", err)
	}
}

func TestReadResultDecodesAWellFormedFrameAndLeavesWhatFollows(t *testing.T) {
	br := bufio.NewReader(strings.NewReader(frame(`{"ok":true,"result":{"a":[1]}}`) + "TRAILER"))
	res, err := pyworker.ReadResult(br, 100)
	if err != nil || !res.OK || string(res.Value) != `{"a":[1]}` {
		t.Fatalf("%+v %v", res, err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "TRAILER" {
		t.Fatalf("consumed past the frame: rest %q", rest)
	}
}

func TestDecodeResultAcceptsEveryShapeOfThePayload(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"ok":true,"result":null}`, ""},
		{` { "ok" : true , "result" : [1, "a\ud800"] } `, ""},
		{`{"result":1,"ok":true}`, `{"ok":true,"result":1}`},
		{`{"ok":true,"results":[]}`, ""},
		{`{"ok":true,"results":[{"result":1,"stdout":"x"},{"error":{"type":"output_limit","message":"m"},"stdout":""}]}`, ""},
		{`{"ok":false,"error":{"type":"syntax_error","message":"SyntaxError: x","line":3,"traceback":"t"}}`, ""},
		{`{"ok":false,"error":{"type":"memory_limit","message":"MemoryError","line":0}}`, `{"ok":false,"error":{"type":"memory_limit","message":"MemoryError"}}`},
	} {
		res, err := pyworker.DecodeResult([]byte(c.in))
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		want := c.want
		if want == "" {
			var buf bytes.Buffer
			if err := compactJSON(&buf, c.in); err != nil {
				t.Fatal(err)
			}
			want = buf.String()
		}
		if got := string(wire(res)); got != want {
			t.Errorf("%s:\n got %s\nwant %s", c.in, got, want)
		}
	}
}

func TestDecodeResultRejectsEverythingElse(t *testing.T) {
	deep := strings.Repeat("[", 201) + strings.Repeat("]", 201)
	for _, in := range []string{
		``,
		`null`,
		`[]`,
		`{}`,
		`{"ok":true}`,
		`{"ok":"true","result":1}`,
		`{"ok":1,"result":1}`,
		`{"ok":null,"result":1}`,
		`{"OK":true,"result":1}`,
		`{"ok":true,"Result":1}`,
		`{"ok":true,"result":1,"extra":0}`,
		`{"ok":true,"ok":true,"result":1}`,
		`{"ok":true,"result":1,"result":2}`,
		`{"ok":true,"result":1,"results":[]}`,
		`{"ok":true,"result":1,"error":{"type":"runtime_error","message":"m"}}`,
		`{"ok":true,"results":null}`,
		`{"ok":true,"results":{}}`,
		`{"ok":true,"results":[1]}`,
		`{"ok":true,"results":[{"result":1}]}`,
		`{"ok":true,"results":[{"stdout":""}]}`,
		`{"ok":true,"results":[{"result":1,"error":{"type":"runtime_error","message":"m"},"stdout":""}]}`,
		`{"ok":true,"results":[{"result":1,"stdout":null}]}`,
		`{"ok":true,"results":[{"result":1,"stdout":3}]}`,
		`{"ok":true,"results":[{"error":{"type":"memory_limit","message":"m"},"stdout":""}]}`,
		`{"ok":true,"results":[{"error":{"type":"syntax_error","message":"m"},"stdout":""}]}`,
		`{"ok":false}`,
		`{"ok":false,"result":1,"error":{"type":"runtime_error","message":"m"}}`,
		`{"ok":false,"error":null}`,
		`{"ok":false,"error":"boom"}`,
		`{"ok":false,"error":{"type":"timeout","message":"m"}}`,
		`{"ok":false,"error":{"type":"Runtime_Error","message":"m"}}`,
		`{"ok":false,"error":{"type":"runtime_error"}}`,
		`{"ok":false,"error":{"message":"m"}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":null}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":"m","line":-1}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":"m","line":1.5}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":"m","line":1e3}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":"m","line":"3"}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":"m","line":99999999999}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":"m","traceback":7}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":"m","where":"x"}}`,
		`{"ok":false,"error":{"type":"runtime_error","message":"m","type":"runtime_error"}}`,
		`{"ok":true,"result":"é"}`,
		`{"ok":true,"result":1}{}`,
		`{"ok":true,"result":1} x`,
		`{"ok":true,"result":NaN}`,
		`{"ok":true,"result":[1,]}`,
		`{"ok":true,"result":` + deep + `}`,
		`{"ok":true,"results":[{"result":` + deep + `,"stdout":""}]}`,
		`{"ok":true,"result":"a` + "\x01" + `"}`,
		`{"ok":true,"result":{"a":1`,
	} {
		if res, err := pyworker.DecodeResult([]byte(in)); !errors.Is(err, pyworker.ErrProtocol) {
			t.Errorf("%.80s: accepted (%+v) or wrong error %v", in, res, err)
		}
	}
}

func TestDecodeResultAcceptsTheDeepestLegalNesting(t *testing.T) {
	deep := strings.Repeat(`{"a":[`, 100) + `"[{\""` + strings.Repeat("]}", 100)
	if _, err := pyworker.DecodeResult([]byte(`{"ok":true,"result":` + deep + `}`)); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeResultTruncatesHugeMessagesAndTracebacksOnARuneBoundary(t *testing.T) {
	long := strings.Repeat(`\u00e9`, pyworker.MaxTextBytes) // 2 UTF-8 bytes each
	res, err := pyworker.DecodeResult([]byte(`{"ok":false,"error":{"type":"runtime_error","message":"x` + long + `","traceback":"` + long + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	m, tb := res.Error.Message, res.Error.Traceback
	if len(m) != pyworker.MaxTextBytes-1 || len(tb) != pyworker.MaxTextBytes || !strings.HasSuffix(m, "é") {
		t.Fatalf("lengths %d, %d", len(m), len(tb))
	}
}

func TestSendOutputFDsPassesBothWriteEndsInOneMessage(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "sock")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		defer conns[i].Close()
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	defer outR.Close()
	defer errR.Close()
	if err := pyworker.SendOutputFDs(conns[0], outW, errW); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	errW.Close()

	buf, oob := make([]byte, 8), make([]byte, syscall.CmsgSpace(3*4))
	n, oobn, _, _, err := conns[1].ReadMsgUnix(buf, oob)
	if err != nil || n != 1 || buf[0] != 'O' {
		t.Fatalf("payload %q, err %v", buf[:n], err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d control messages, err %v", len(msgs), err)
	}
	got, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(got) != 2 {
		t.Fatalf("fds %v, err %v", got, err)
	}
	for i, r := range []*os.File{outR, errR} {
		w := os.NewFile(uintptr(got[i]), "received")
		if _, err := w.Write([]byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if b, err := io.ReadAll(r); err != nil || string(b) != string(rune('a'+i)) {
			t.Fatalf("pipe %d got %q, err %v", i, b, err)
		}
	}
	if err := pyworker.SendOutputFDs(conns[0], nil, errW); err == nil {
		t.Fatal("nil file accepted")
	}
}

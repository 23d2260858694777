package server

// Hostile input: odd scripts and results, forged worker protocol frames, and
// bad HTTP against the real server.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

func (h *hostile) testInput(t *testing.T) {
	validJSON := func(t *testing.T, r response) {
		if !json.Valid([]byte(r.Raw)) || !utf8.ValidString(r.Raw) {
			t.Fatalf("the answer is not valid UTF-8 JSON: %q", r.Raw)
		}
	}
	oneMB := strings.Repeat("a", 1<<20)
	h.runCases(t, []hcase{
		{name: "unicode_emoji_rtl", script: "# שלום עולם 👋 \u202eevil\u202c\ndef main(名前):\n    ñ = 'مرحبا 👩\u200d👩\u200d👧 \u202e!olleh'\n    print(ñ, 名前)\n    return {'echo': 名前, 'text': ñ, 'len': len(ñ)}\n",
			extra: []string{`"input": "日本語 🚀"`}, status: 200, check: func(t *testing.T, r response) {
				validJSON(t, r)
				jsonEq(t, r.Body["result"], `{"echo": "日本語 🚀", "text": "مرحبا 👩\u200d👩\u200d👧 \u202e!olleh", "len": 19}`)
				if r.Body["stdout"] != "مرحبا 👩\u200d👩\u200d👧 \u202e!olleh 日本語 🚀\n" {
					t.Errorf("stdout = %q", r.Body["stdout"])
				}
			}},
		// Lone surrogates cannot be UTF-8: the answer must still be valid.
		{name: "lone_surrogate_result", script: "def main():\n    return ['\\ud800', '\\udfff x']\n",
			status: 200, check: validJSON},
		// A NUL byte in the source cannot compile: the script's syntax error.
		{name: "nul_byte_in_source", script: "def main():\n    return 1\x00\n",
			status: 422, typ: "syntax_error", msg: "null bytes"},
		{name: "one_megabyte_single_line", script: "X = '" + oneMB + "'; main = lambda: len(X)",
			status: 200, check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], fmt.Sprint(1<<20)) }},
		{name: "non_utf8_output", script: "import os, sys\ndef main():\n    os.write(1, b'ok \\xff\\xfe bad \\xc3( end\\n')\n    os.write(2, b'\\x80\\x81\\n')\n    return 'x'\n",
			status: 200, check: func(t *testing.T, r response) {
				validJSON(t, r)
				if r.Body["stdout"] != "ok \ufffd\ufffd bad \ufffd( end\n" || r.Body["stderr"] != "\ufffd\ufffd\n" {
					t.Errorf("stdout %q stderr %q", r.Body["stdout"], r.Body["stderr"])
				}
			}},
		{name: "deep_recursion", script: "def f(n):\n    return f(n + 1)\ndef main():\n    return f(0)\n",
			status: 422, typ: "runtime_error", msg: "RecursionError"},
		// Python 3.11 keeps Python frames on the heap, not the C stack: with
		// the recursion limit lifted, deep recursion eats memory until the
		// cgroup OOM killer ends it.
		{name: "recursion_limit_lifted_python_frames", script: "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\ndef main():\n    return f(0)\n",
			status: 422, typ: "memory_limit"},
		// C recursion (pickling a list nested 2*10**5 deep) overflows the
		// 8 MiB stack: a segfault, reported as the script's runtime_error.
		{name: "recursion_limit_lifted_c_stack_overflow", script: "import sys, pickle\nsys.setrecursionlimit(10**6)\ndef main():\n    l = []\n    for i in range(2 * 10**5):\n        l = [l]\n    return len(pickle.dumps(l))\n",
			status: 422, typ: "runtime_error", msg: "segmentation fault"},
		// The parser has its own nesting limit.
		{name: "deeply_nested_expression", script: "def main():\n    return " + strings.Repeat("(", 1000) + "1" + strings.Repeat(")", 1000) + "\n",
			status: 422, typ: "syntax_error"},
		{name: "deeply_nested_result", script: "def main():\n    l = []\n    for i in range(100000):\n        l = [l]\n    return l\n",
			status: 422, typ: "result_not_json", msg: "deeper"},
	})
}

func (h *hostile) testProtocol(t *testing.T) {
	h.runCases(t, []hcase{
		// fd 3 is the result channel. Junk on it breaks only this run.
		{name: "junk_frame_on_fd3", script: "import os\ndef main():\n    os.write(3, b'SSE-RES zzz\\n{}')\n    return 'real'\n",
			status: 422, typ: "runtime_error", msg: "result channel"},
		{name: "forged_ready_line_on_fd3", script: "import os\ndef main():\n    os.write(3, b'SSE-READY 1\\n')\n    return 'real'\n",
			status: 422, typ: "runtime_error", msg: "result channel"},
		// A header announcing more than --max-result: a protocol violation
		// (the server never reads past the cap).
		{name: "oversized_frame_on_fd3", script: "import os\ndef main():\n    os.write(3, b'SSE-RES 99999999999\\n')\n    return 'real'\n",
			status: 422, typ: "runtime_error", msg: "result channel"},
		// A well-formed forged frame is believed: it can only describe this
		// run's own result, which the script could return anyway.
		{name: "valid_looking_frame_on_fd3", script: "import os\ndef main():\n    body = b'{\"ok\":true,\"result\":\"forged by the script\"}'\n    os.write(3, b'SSE-RES %d\\n' % len(body) + body)\n    return 'real'\n",
			status: 200, check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], `"forged by the script"`) }},
		// An error type the protocol does not know (here "internal") is a
		// protocol violation, never a 500.
		{name: "forged_internal_error_on_fd3", script: "import os\ndef main():\n    body = b'{\"ok\":false,\"error\":{\"type\":\"internal\",\"message\":\"x\"}}'\n    os.write(3, b'SSE-RES %d\\n' % len(body) + body)\n    return 'real'\n",
			status: 422, typ: "runtime_error", msg: "result channel"},
		{name: "half_frame_then_exit", script: "import os\ndef main():\n    os.write(3, b'SSE-RES 100\\n{\"ok\":')\n    os._exit(0)\n",
			status: 422, typ: "runtime_error"},
		{name: "close_fd3", script: "import os\ndef main():\n    os.close(3)\n    return 'real'\n",
			status: 422, typ: "runtime_error"},
		// fd 3 closed and reopened as a file: the result goes to the file.
		{name: "fd3_replaced_by_a_file", script: "import os\ndef main():\n    os.close(3)\n    open('/tmp/x', 'w')\n    return 'real'\n",
			status: 422, typ: "runtime_error"},
		{name: "fd3_replaced_by_stdout", script: "import os\ndef main():\n    os.dup2(1, 3)\n    return 'real'\n",
			status: 422, typ: "runtime_error"},
		// fd 0 is the read end of the request pipe, at EOF.
		{name: "write_to_fd0", script: "import os\ndef main():\n    os.write(0, b'SSE-REQ 1 single 10 0 100\\n')\n",
			status: 422, typ: "runtime_error", msg: "Bad file descriptor"},
		{name: "read_fd0", script: "import os\ndef main():\n    return os.read(0, 100).decode()\n",
			status: 200, check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], `""`) }},
		{name: "frames_printed_on_stdout_and_stderr", script: "import sys, os\ndef main():\n    print('SSE-RES 30\\n{\"ok\":true,\"result\":\"forged\"}')\n    sys.stderr.write('SSE-RES 30\\n{\"ok\":true,\"result\":\"forged\"}')\n    os.write(1, b'SSE-READY 1\\n')\n    return 'real'\n",
			status: 200, check: func(t *testing.T, r response) {
				jsonEq(t, r.Body["result"], `"real"`)
				if !strings.Contains(r.Body["stdout"].(string), "SSE-RES 30") || !strings.Contains(r.Body["stderr"].(string), "SSE-RES 30") {
					t.Errorf("the printed frames should stay in stdout and stderr: %s", r.Raw)
				}
			}},
	})

	// A well-formed batch frame of another size cannot be the answer to
	// this batch: a protocol violation, never a 500 (issue 10 item 3).
	t.Run("forged_batch_frame_of_another_size_on_fd3", func(t *testing.T) {
		script := "import os\ndef main(r):\n    body = b'{\"ok\":true,\"results\":[{\"result\":\"forged\",\"stdout\":\"\"}]}'\n    os.write(3, b'SSE-RES %d\\n' % len(body) + body)\n    return r\n"
		b, _ := json.Marshal(script)
		r := h.post(t, "/execute/batch", "application/json", `{"script":`+string(b)+`,"inputs":[1,2,3]}`)
		h.expect(t, r, 422, "runtime_error")
		if !strings.Contains(errMessage(r), "result channel") {
			t.Errorf("error message %q", errMessage(r))
		}
		h.hello(t)
	})

	// Forgers and honest scripts at once: every honest request gets its own
	// result, no forger's frame reaches another request.
	t.Run("forgers_never_reach_other_requests", func(t *testing.T) {
		forger := "import os\ndef main(i):\n    body = b'{\"ok\":true,\"result\":\"victim %d\"}' % i\n    for _ in range(3):\n        os.write(3, b'SSE-RES %d\\n' % len(body) + body)\n    return 'forger'\n"
		honest := "import time\ndef main(i):\n    time.sleep(0.05)\n    return {'me': i}\n"
		var wg sync.WaitGroup
		errs := make(chan string, 16)
		for i := 0; i < 6; i++ {
			wg.Add(2)
			go func(i int) {
				defer wg.Done()
				r := h.execute(t, forger, fmt.Sprintf(`"input": %d`, i))
				if r.Status != 200 || r.Body["result"] != fmt.Sprintf("victim %d", i) {
					errs <- fmt.Sprintf("forger %d: %s", i, r.Raw)
				}
			}(i)
			go func(i int) {
				defer wg.Done()
				r := h.execute(t, honest, fmt.Sprintf(`"input": %d`, 100+i))
				if r.Status != 200 || fmt.Sprint(r.Body["result"]) != fmt.Sprintf("map[me:%d]", 100+i) {
					errs <- fmt.Sprintf("honest %d: %s", i, r.Raw)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		h.hello(t)
	})
}

func (h *hostile) testHTTP(t *testing.T) {
	script := `"def main():\n    return 1"`
	nested := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := []struct {
		name, ctype, body string
		status            int
		typ, msg          string
	}{
		{"malformed_json", "application/json", `{"script": "def main(): return 1",}`, 400, "invalid_request", ""},
		{"truncated_json", "application/json", `{"script": "def main(): ret`, 400, "invalid_request", ""},
		{"trailing_garbage", "application/json", `{"script": ` + script + `} {"script": "x"}`, 400, "invalid_request", ""},
		{"script_is_a_number", "application/json", `{"script": 42}`, 400, "invalid_request", "script"},
		{"script_is_null", "application/json", `{"script": null}`, 400, "invalid_request", "script"},
		{"script_is_an_array", "application/json", `{"script": ["def main(): return 1"]}`, 400, "invalid_request", "script"},
		{"timeout_is_a_string", "application/json", `{"script": ` + script + `, "timeout_ms": "soon"}`, 400, "invalid_request", "timeout_ms"},
		{"timeout_is_negative", "application/json", `{"script": ` + script + `, "timeout_ms": -5}`, 400, "invalid_request", "timeout_ms"},
		{"timeout_is_huge", "application/json", `{"script": ` + script + `, "timeout_ms": 1e400}`, 400, "invalid_request", ""},
		{"body_is_an_array", "application/json", `[` + script + `]`, 400, "invalid_request", ""},
		{"unknown_field", "application/json", `{"script": ` + script + `, "scirpt": "x"}`, 400, "invalid_request", "scirpt"},
		{"duplicate_field", "application/json", `{"script": ` + script + `, "script": "def main(): return 2"}`, 400, "invalid_request", "script"},
		{"empty_body", "application/json", ``, 400, "invalid_request", "empty"},
		{"whitespace_body", "application/json", " \n\t ", 400, "invalid_request", "empty"},
		{"invalid_utf8", "application/json", "{\"script\": \"def main(): return '\xff\xfe'\"}", 400, "invalid_request", "UTF-8"},
		{"text_plain", "text/plain", `{"script": ` + script + `}`, 415, "unsupported_media_type", ""},
		{"no_content_type", "-", `{"script": ` + script + `}`, 415, "unsupported_media_type", ""},
		{"latin1_charset", "application/json; charset=latin1", `{"script": ` + script + `}`, 415, "unsupported_media_type", ""},
		{"form_encoded", "application/x-www-form-urlencoded", `script=def+main()`, 415, "unsupported_media_type", ""},
		{"input_nested_1000_levels", "application/json", `{"script": ` + script + `, "input": ` + nested(1000) + `}`, 400, "invalid_request", "input"},
		{"input_nested_100000_levels", "application/json", `{"script": ` + script + `, "input": ` + nested(100000) + `}`, 400, "invalid_request", ""},
		{"unknown_field_nested_1000_levels", "application/json", `{"script": ` + script + `, "x": ` + nested(1000) + `}`, 400, "invalid_request", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.post(t, "/execute", c.ctype, c.body)
			h.expect(t, r, c.status, c.typ)
			if c.msg != "" && !strings.Contains(errMessage(r), c.msg) {
				t.Errorf("message %q lacks %q", errMessage(r), c.msg)
			}
			if strings.Contains(r.Raw, "\xff") || len(r.Raw) > 4096 {
				t.Errorf("the error echoes the request: %.300q", r.Raw)
			}
			h.hello(t)
		})
	}

	t.Run("headers_too_large", func(t *testing.T) {
		req, _ := http.NewRequest("POST", h.url+"/execute", strings.NewReader(`{"script": `+script+`}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Padding", strings.Repeat("p", 64<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 431 || !strings.Contains(string(raw), `"headers_too_large"`) {
			t.Fatalf("status %d: %s", resp.StatusCode, raw)
		}
		h.hello(t)
	})

	addr := strings.TrimPrefix(h.url, "http://")
	// Over --max-body (2 MiB). The server answers before reading it all, so
	// the request goes over a raw connection (Go's client would report the
	// reset of its unfinished upload instead of the answer).
	t.Run("oversize_body", func(t *testing.T) {
		body := `{"script": "` + strings.Repeat("#", 3<<20) + `"}`
		st, raw := rawRequest(t, addr, fmt.Sprintf("POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body)), body)
		if st != 413 || !strings.Contains(raw, `"request_too_large"`) {
			t.Fatalf("%d %s", st, raw)
		}
		h.hello(t)
	})
	t.Run("oversize_body_chunked", func(t *testing.T) {
		chunk := strings.Repeat("#", 64<<10)
		body := fmt.Sprintf("%x\r\n{\"script\": \"\r\n", 12) + strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk), 48) + "0\r\n\r\n"
		st, raw := rawRequest(t, addr, "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", body)
		if st != 413 || !strings.Contains(raw, `"request_too_large"`) {
			t.Fatalf("%d %s", st, raw)
		}
		h.hello(t)
	})
	// Headers complete, then the body one byte a second: the read timeout
	// (1 s here) must cut the client off, not let it hold a connection.
	t.Run("slow_drip_body", func(t *testing.T) {
		h.slowDrip(t, addr, "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", `{"script": "def main(): return 1"`)
	})
	t.Run("slow_drip_headers", func(t *testing.T) {
		h.slowDrip(t, addr, "", "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
	})

	t.Run("300_idle_keepalive_connections", func(t *testing.T) {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < 300; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			conns = append(conns, c)
			// Half of them made a request and now idle between requests,
			// half never sent anything.
			if i%2 == 0 {
				fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("connection %d: /healthz %d", i, resp.StatusCode)
				}
			}
		}
		start := time.Now()
		h.hello(t)
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("hello took %s with 300 idle connections open", d)
		}
	})
}

// slowDrip sends head at once, then drip one byte a second, and expects the
// server to end the connection within its read timeout (1 s) plus slack,
// answering 408 request_timeout if it answers at all.
func (h *hostile) slowDrip(t *testing.T, addr, head, drip string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if head != "" {
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < len(drip); i++ {
			if _, err := c.Write([]byte{drip[i]}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	raw, err := io.ReadAll(c)
	took := time.Since(start)
	if err != nil && len(raw) > 0 && errors.Is(err, syscall.ECONNRESET) {
		// The server answered and closed with our unread drip in its
		// buffer: the kernel resets the connection. Cut off all the same.
		err = nil
	}
	if err != nil {
		t.Fatalf("the connection was not closed after %s: %v (read %q)", took, err, raw)
	}
	if took > 3500*time.Millisecond {
		t.Fatalf("the server held a slow client for %s (read timeout 1s)", took)
	}
	if len(raw) > 0 {
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(raw))), nil)
		if err != nil {
			t.Fatalf("answer %q: %v", raw, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 408 || !strings.Contains(string(body), `"request_timeout"`) {
			t.Fatalf("answer %d %s, want 408 request_timeout", resp.StatusCode, body)
		}
	}
	t.Logf("cut off after %s, answer %q", took.Round(time.Millisecond), firstLine(string(raw)))
	h.hello(t)
}

// rawRequest writes head and body on a new connection (write errors are
// ignored: the server may answer and close early) and reads one response.
func rawRequest(t *testing.T, addr, head, body string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go io.WriteString(c, head+body)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

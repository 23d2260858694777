package server

// Hostile results and hostile HTTP framing: values that are not strict JSON
// (forged on fd 3 or built from lying str subclasses), and requests that a
// proxy in front and this server could frame differently (request
// smuggling).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// forgeFrame is a script that writes payload as its own result frame on fd 3
// before main returns, then returns 'real'.
func forgeFrame(payload string) string {
	return fmt.Sprintf("import os\ndef main(*a):\n    body = %q.encode()\n    os.write(3, b'SSE-RES %%d\\n' %% len(body) + body)\n    return 'real'\n", payload)
}

func (h *hostile) testResults(t *testing.T) {
	big := strings.Repeat("7", 4301)
	h.runCases(t, []hcase{
		// The server re-checks what the worker sends as strict JSON: a forged
		// frame cannot hand clients what the worker would refuse to write.
		{name: "forged_duplicate_keys_inf_and_huge_int", script: forgeFrame(`{"ok":true,"result":{"a":1,"a":2,"inf":1e999,"big":123}}`),
			status: 422, typ: "runtime_error", msg: "result channel"},
		{name: "forged_duplicate_keys", script: forgeFrame(`{"ok":true,"result":{"a":1,"\u0061":2}}`),
			status: 422, typ: "runtime_error", msg: "result channel"},
		{name: "forged_float_overflow", script: forgeFrame(`{"ok":true,"result":[1e999]}`),
			status: 422, typ: "runtime_error", msg: "result channel"},
		{name: "forged_huge_integer", script: forgeFrame(`{"ok":true,"result":` + big + `}`),
			status: 422, typ: "runtime_error", msg: "result channel"},
		// Without forging: a str subclass whose hash and == lie makes two
		// dict keys that are the same JSON string.
		{name: "str_subclass_keys_collide", script: "class K(str):\n    def __hash__(self):\n        return 42\n    def __eq__(self, o):\n        return False\ndef main():\n    return {'a': 1, K('a'): 2}\n",
			status: 422, typ: "result_not_json", msg: "result['a'] is a duplicate key"},
		{name: "surrogate_pair_key_collides_with_its_character", script: "def main():\n    return {'x': {'\\U0001F600': 1, '\\ud83d\\ude00': 2}}\n",
			status: 422, typ: "result_not_json", msg: "duplicate key"},
		// The script lifts Python's own int limit; JSON readers keep theirs.
		{name: "int_digit_limit_lifted", script: "import sys\ndef main():\n    sys.set_int_max_str_digits(0)\n    return {'n': 10**5000}\n",
			status: 422, typ: "result_not_json", msg: "more than 4300 digits"},
	})
	batch := func(t *testing.T, script, inputs string) response {
		return h.post(t, "/execute/batch", "application/json", fmt.Sprintf(`{"script":%q,"inputs":%s}`, script, inputs))
	}
	t.Run("batch_item_keys_collide", func(t *testing.T) {
		r := batch(t, "class K(str):\n    __hash__ = lambda self: 7\n    __eq__ = lambda self, o: False\ndef main(i):\n    return {'k': i, K('k'): i} if i else {'k': i}\n", "[0,1]")
		h.expect(t, r, 200, "")
		items, _ := r.Body["results"].([]any)
		if len(items) != 2 {
			t.Fatalf("results: %s", r.Raw)
		}
		jsonEq(t, items[0], `{"result": {"k": 0}, "stdout": ""}`)
		e, _ := items[1].(map[string]any)["error"].(map[string]any)
		if e["type"] != "result_not_json" || !strings.Contains(fmt.Sprint(e["message"]), "result['k'] is a duplicate key") {
			t.Fatalf("item 1: %s", r.Raw)
		}
		h.hello(t)
	})
	t.Run("forged_batch_item_not_strict", func(t *testing.T) {
		r := batch(t, forgeFrame(`{"ok":true,"results":[{"result":{"a":1,"a":2},"stdout":""}]}`), "[1]")
		h.expect(t, r, 422, "runtime_error")
		h.hello(t)
	})
	// A forged frame with fewer items than records: the script's
	// runtime_error, never a 500.
	t.Run("forged_batch_with_too_few_items", func(t *testing.T) {
		r := batch(t, forgeFrame(`{"ok":true,"results":[]}`), "[1,2]")
		h.expect(t, r, 422, "runtime_error")
		if !strings.Contains(errMessage(r), "result channel") {
			t.Errorf("message %q", errMessage(r))
		}
		h.hello(t)
	})
}

// rawAnswer is one response read off a raw connection.
type rawAnswer struct {
	status     int
	body       string
	retryAfter string
}

// exchange writes raw on a new connection and reads until the server closes
// it (or 5 s pass). It returns the responses in order and whether the
// server closed the connection.
func exchange(t *testing.T, addr, raw string) ([]rawAnswer, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Like a client that sends its whole request before reading: the kernel
	// buffers it. A refusal must reach such a client, not a reset.
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(c)
	closed := err == nil || errors.Is(err, syscall.ECONNRESET)
	var out []rawAnswer
	br := bufio.NewReader(bytes.NewReader(all))
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 100 {
			continue
		}
		out = append(out, rawAnswer{status: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After")})
	}
	return out, closed
}

// okExecutions reads executor_executions_total{outcome="ok"}: a request
// smuggled past the framing checks would run and count there.
func (h *hostile) okExecutions(t *testing.T) float64 {
	t.Helper()
	v, _ := sampleValue(scrape(t, h.s), `executor_executions_total{outcome="ok"}`)
	return v
}

// helloRequest is a complete, valid /execute request: the payload a smuggler
// hides after a request whose framing is ambiguous.
func helloRequest() string {
	b, _ := json.Marshal(map[string]string{"script": hello})
	return fmt.Sprintf("POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
}

func (h *hostile) testSmuggling(t *testing.T) {
	addr := strings.TrimPrefix(h.url, "http://")
	post := "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	get := "GET /healthz HTTP/1.1\r\nHost: x\r\n"
	smuggled := helloRequest()
	cases := []struct {
		name, raw string
		before    int // valid answers (200) expected before the refusal
		status    int
		typ       string
	}{
		{"content_length_and_chunked", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"chunked_and_content_length", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"two_different_content_lengths", post + "Content-Length: 0\r\nContent-Length: 5\r\n\r\nGET /" + smuggled, 0, 400, "invalid_request"},
		{"two_equal_content_lengths", post + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"content_length_list", post + "Content-Length: 0, 0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"content_length_plus_sign", post + "Content-Length: +0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"content_length_negative", post + "Content-Length: -1\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"content_length_hex", post + "Content-Length: 0x0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"content_length_two_numbers", post + "Content-Length: 0 5\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"content_length_empty", post + "Content-Length: \r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"content_length_huge", post + "Content-Length: 18446744073709551617\r\n\r\n" + smuggled, 0, 413, "request_too_large"},
		{"xchunked", post + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"chunked_identity", post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"identity", post + "Transfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"two_transfer_encoding_headers", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"transfer_encoding_obs_fold", post + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"obs_fold", get + "X-Note: a\r\n\tb\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"transfer_encoding_in_http10", "POST /execute HTTP/1.0\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"http11_without_host", "GET /healthz HTTP/1.1\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"two_hosts", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"host_with_space", "GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"space_before_colon", post + "Content-Length : 0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"tab_before_colon", post + "Transfer-Encoding\t: chunked\r\nContent-Length: 0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"bare_lf_line_endings", "GET /healthz HTTP/1.1\nHost: x\n\n" + smuggled, 0, 400, "invalid_request"},
		{"bare_lf_in_one_header", get + "X-A: 1\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"bare_cr_in_a_value", get + "X-A: 1\r2\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"nul_in_a_value", get + "X-A: 1\x002\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"nul_in_a_name", post + "Content-Length\x00: 0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"double_space_in_request_line", "GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"http09_request_line", "GET /healthz\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"unknown_http_version", "GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"space_in_target", "GET /health z HTTP/1.1\r\nHost: x\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"chunk_size_overflow", post + "Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"chunk_size_not_hex", post + "Transfer-Encoding: chunked\r\n\r\nzz\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"chunk_size_negative", post + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"chunk_size_bare_lf", post + "Transfer-Encoding: chunked\r\n\r\n0\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"chunk_data_without_crlf", post + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"chunk_extension_with_bare_lf", post + "Transfer-Encoding: chunked\r\n\r\n0;x\n\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		{"trailer_fields", post + "Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n" + smuggled, 0, 400, "invalid_request"},
		// fasthttp answers this one itself and closes: the rest of the
		// header block, sent whole, must not turn the answer into a reset.
		{"header_block_over_the_read_buffer", post + "X-Padding: " + strings.Repeat("p", 64<<10) + "\r\nContent-Length: 2\r\n\r\n{}" + smuggled, 0, 431, "headers_too_large"},
		{"pipelined_after_a_valid_request", get + "\r\n" + post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 1, 400, "invalid_request"},
		{"pipelined_after_a_valid_chunked_request", post + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + get + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get + "X: \x01\r\n\r\n" + smuggled, 2, 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.okExecutions(t)
			answers, closed := exchange(t, addr, c.raw)
			if len(answers) != c.before+1 {
				t.Fatalf("%d answers, want %d then the refusal: %+v", len(answers), c.before, answers)
			}
			last := answers[c.before]
			var body struct {
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal([]byte(last.body), &body); err != nil || last.status != c.status || body.Error.Type != c.typ || body.Error.Message == "" {
				t.Fatalf("answer %d %s, want %d %s", last.status, last.body, c.status, c.typ)
			}
			if !closed {
				t.Fatalf("the connection stayed open after the refusal (%s)", body.Error.Message)
			}
			if after := h.okExecutions(t); after != before {
				t.Fatalf("a smuggled request ran: ok executions %v -> %v", before, after)
			}
			t.Logf("%d %s", last.status, body.Error.Message)
			h.hello(t)
		})
	}
	h.validFraming(t, addr)
}

// validFraming: what RFC 9112 allows still works, on one connection.
func (h *hostile) validFraming(t *testing.T, addr string) {
	body, _ := json.Marshal(map[string]string{"script": hello})
	chunked := fmt.Sprintf("%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", 5, body[:5], len(body)-5, body[5:])
	for _, c := range []struct{ name, raw string }{
		{"chunked_with_extension_and_mixed_case", "POST /execute HTTP/1.1\r\nhost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: Chunked\r\n\r\n" + chunked},
		{"empty_lines_before_the_request_and_padded_content_length", "\r\n" + strings.Replace(helloRequest(), "Content-Length: ", "Content-Length:  00", 1)},
		{"http10_without_host", "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
		{"expect_100_continue", strings.Replace(helloRequest(), "Host: x\r\n", "Host: x\r\nExpect: 100-continue\r\n", 1)},
	} {
		t.Run("valid/"+c.name, func(t *testing.T) {
			// Three times on one connection, the last asking to close.
			raw := c.raw + c.raw + strings.Replace(c.raw, "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
			answers, closed := exchange(t, addr, raw)
			if len(answers) != 3 || !closed {
				t.Fatalf("answers %+v, closed %t", answers, closed)
			}
			for _, a := range answers {
				if a.status != 200 {
					t.Fatalf("answer %d %s", a.status, a.body)
				}
			}
		})
	}
}

// With a small body budget (4 MiB: bodies over 64 KiB may use 3 MiB of it),
// three 1 MiB bodies in flight fill it: the fourth large body is refused at
// once, unread, with 429 overloaded and Retry-After, by Content-Length and
// by chunk size alike, while a small request still runs. Once the held
// bodies are gone, a large body fits again.
func TestALargeBodyOverTheInflightBudgetIsRefusedAsOverloadedWhileSmallRequestsStillRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server")
	}
	s := startServer(t, nil, "--max-body", "1MiB", "--max-inflight-body", "4MiB", "--read-timeout", "30s")
	s.waitReady()
	addr := strings.TrimPrefix(s.url, "http://")
	head := func(cl int) string {
		return fmt.Sprintf("POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", cl)
	}
	waitInflight := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); s.app.api.InflightBodyBytes() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("body bytes in flight: %d, want %d", s.app.api.InflightBodyBytes(), want)
			}
		}
	}
	// Three clients announce 1 MiB and send only the start of it.
	var held []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, head(1<<20)+`{"script": "`)
		held = append(held, c)
	}
	waitInflight(3 << 20)

	body := `{"script": "X = '` + strings.Repeat("a", 900<<10) + `'\ndef main():\n    return len(X)"}`
	for name, raw := range map[string]string{
		"content_length": head(len(body)) + body,
		"chunked": "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body),
		// It waits for 100 Continue before sending the body: the refusal
		// must not wait for a body that will not come.
		"expect_100_continue": strings.Replace(head(len(body)), "Host: x\r\n", "Host: x\r\nExpect: 100-continue\r\n", 1),
	} {
		answers, closed := exchange(t, addr, raw)
		if len(answers) != 1 || answers[0].status != 429 || !strings.Contains(answers[0].body, `"overloaded"`) || answers[0].retryAfter == "" || !closed {
			t.Fatalf("%s: a large body over the budget: %+v (closed %t)", name, answers, closed)
		}
		t.Logf("%s: 429 Retry-After %s %s", name, answers[0].retryAfter, answers[0].body)
	}
	if r := s.execute(hello); r.Status != 200 {
		t.Fatalf("a small request while the budget is full: %d %s", r.Status, r.Raw)
	}

	for _, c := range held {
		c.Close()
	}
	waitInflight(0)
	answers, _ := exchange(t, addr, strings.Replace(head(len(body)), "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)+body)
	if len(answers) != 1 || answers[0].status != 200 || !strings.Contains(answers[0].body, fmt.Sprintf(`"result":%d`, 900<<10)) {
		t.Fatalf("a large body once the budget is free again: %+v", answers)
	}
	waitInflight(0)
}

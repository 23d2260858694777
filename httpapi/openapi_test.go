package httpapi_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/secure-script-executor/executor/httpapi"
	"github.com/secure-script-executor/executor/internal/apispec"
)

func openAPIValidator(t *testing.T) *apispec.Validator {
	t.Helper()
	v, err := apispec.New(httpapi.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTheOpenAPIDocumentIsValidOpenAPI31AndListsExactlyTheErrorTypesOfTheAPI(t *testing.T) {
	v := openAPIValidator(t)
	var want []string
	for _, typ := range executor.ErrorTypes {
		want = append(want, string(typ))
	}
	if got := v.ErrorTypes(); !slices.Equal(got, want) {
		t.Errorf("the document's ErrorType enum is\n%v\nbut executor.ErrorTypes is\n%v", got, want)
	}
}

func TestGetOpenAPIJSONServesTheDocumentWithoutAnAPIKey(t *testing.T) {
	s := httpapi.New(httpapi.Config{APIKeys: []string{"secret"}}, okRunner("1"))
	r := do(t, s, http.MethodGet, "/openapi.json", "")
	if r.status != 200 || r.body["openapi"] != "3.1.0" {
		t.Fatalf("status %d, openapi %v", r.status, r.body["openapi"])
	}
	if r.raw != string(httpapi.OpenAPIDocument()) {
		t.Error("GET /openapi.json is not the embedded document")
	}
}

// producer makes the server answer with one error type: through a
// validating client (send), or over a raw connection (raw).
type producer struct {
	typ    string
	runner *fakeRunner
	send   func(t *testing.T, c *http.Client, url string) *http.Response
	raw    string
}

func postJSON(body string, header ...string) func(t *testing.T, c *http.Client, url string) *http.Response {
	return func(t *testing.T, c *http.Client, url string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, url+"/execute", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
}

func scriptFailure(st executor.Status) *fakeRunner {
	return &fakeRunner{result: executor.Result{Status: st, Error: &executor.ScriptError{Type: st, Message: "failed", Line: 2}}}
}

func errorProducers() []producer {
	ok := `{"script":"x"}`
	get := func(method, path string) func(t *testing.T, c *http.Client, url string) *http.Response {
		return func(t *testing.T, c *http.Client, url string) *http.Response {
			req, _ := http.NewRequest(method, url+path, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
	}
	return []producer{
		{httpapi.TypeInvalidRequest, okRunner("1"), postJSON(`{"scirpt":"x"}`), ""},
		{httpapi.TypeUnauthorized, okRunner("1"), postJSON(ok, "Authorization", "Bearer wrong"), ""},
		{httpapi.TypeNotFound, okRunner("1"), get(http.MethodGet, "/run"), ""},
		{httpapi.TypeMethodNotAllowed, okRunner("1"), get(http.MethodGet, "/execute"), ""},
		{httpapi.TypeRequestTimeout, okRunner("1"), nil, slowHead},
		{httpapi.TypeRequestTooLarge, okRunner("1"), nil, largeHead},
		{httpapi.TypeUnsupportedMediaType, okRunner("1"), postJSON(ok, "Content-Type", "text/plain"), ""},
		{httpapi.TypeHeadersTooLarge, okRunner("1"), postJSON(ok, "X-Padding", strings.Repeat("p", 64<<10)), ""},
		{httpapi.TypeSyntaxError, scriptFailure(executor.StatusSyntaxError), postJSON(ok), ""},
		{httpapi.TypeMissingMain, scriptFailure(executor.StatusMissingMain), postJSON(ok), ""},
		{httpapi.TypeRuntimeError, scriptFailure(executor.StatusRuntimeError), postJSON(ok), ""},
		{httpapi.TypeResultNotJSON, scriptFailure(executor.StatusResultNotJSON), postJSON(ok), ""},
		{httpapi.TypeTimeout, scriptFailure(executor.StatusTimeout), postJSON(ok), ""},
		{httpapi.TypeMemoryLimit, scriptFailure(executor.StatusMemoryLimit), postJSON(ok), ""},
		{httpapi.TypeOutputLimit, scriptFailure(executor.StatusOutputLimit), postJSON(ok), ""},
		{httpapi.TypeOverloaded, &fakeRunner{err: errOverloaded}, postJSON(ok), ""},
		{httpapi.TypeSandboxUnavailable, &fakeRunner{err: errSandbox}, postJSON(ok), ""},
		{httpapi.TypeInternal, &fakeRunner{err: errors.New("boom")}, postJSON(ok), ""},
	}
}

// rawRequest writes head on a fresh connection and returns the answer,
// parsed: for answers Go's client cannot get (a body the server refuses
// before reading it, a request that never ends).
func rawRequest(t *testing.T, url, head string) (*http.Request, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, head)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(http.MethodPost, url+"/execute", nil)
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("no answer to %q: %v", head, err)
	}
	return req, resp
}

const (
	// slowHead promises a body and sends one byte of it: the read timeout
	// answers 408.
	slowHead = "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
	// largeHead announces a body over the 1 MiB limit: 413 before reading.
	largeHead = "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n{"
)

func TestEveryDocumentedErrorTypeIsProducedAndItsAnswerMatchesTheOpenAPIDocument(t *testing.T) {
	v := openAPIValidator(t)
	for _, p := range errorProducers() {
		t.Run(p.typ, func(t *testing.T) {
			s := httpapi.New(httpapi.Config{APIKeys: []string{"right"}, MaxBodyBytes: 1 << 20,
				ReadTimeout: 300 * time.Millisecond}, p.runner)
			url, _ := serve(t, s)
			t.Cleanup(func() { s.Shutdown(t.Context()) })
			var resp *http.Response
			if p.send == nil {
				var req *http.Request
				req, resp = rawRequest(t, url, p.raw)
				body, _ := io.ReadAll(resp.Body)
				if err := v.Check(req, resp.StatusCode, resp.Header, body); err != nil {
					t.Fatal(err)
				}
				resp.Body = io.NopCloser(strings.NewReader(string(body)))
			} else {
				client := &http.Client{Transport: v.Transport(&http.Transport{}, nil)}
				if p.typ != httpapi.TypeUnauthorized && p.typ != httpapi.TypeNotFound && p.typ != httpapi.TypeMethodNotAllowed {
					client.Transport = v.Transport(authorized{"right"}, nil)
				}
				resp = p.send(t, client, url)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct{ Type string } `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&body)
			if body.Error.Type != p.typ {
				t.Fatalf("answer %d has type %q, want %q", resp.StatusCode, body.Error.Type, p.typ)
			}
		})
	}
	if seen := v.Seen(); !slices.Equal(seen, sortedCopy(v.ErrorTypes())) {
		t.Errorf("error types answered: %v\nthe document lists: %v", seen, v.ErrorTypes())
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// authorized adds the API key to every request.
type authorized struct{ key string }

func (a authorized) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+a.key)
	return http.DefaultTransport.RoundTrip(req)
}

func TestSuccessfulAnswersOfEveryRouteMatchTheOpenAPIDocument(t *testing.T) {
	v := openAPIValidator(t)
	runner := okRunner(`{"a":[1,null]}`)
	runner.result.Usage = executor.Usage{Wall: time.Millisecond, CPU: time.Millisecond, CPUMeasured: true}
	s := httpapi.New(httpapi.Config{MemoryLimit: 256 << 20}, runner)
	url, _ := serve(t, s)
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	client := &http.Client{Transport: v.Transport(nil, nil)}
	for _, path := range []string{"/healthz", "/readyz", "/runtime", "/openapi.json"} {
		resp, err := client.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	resp, err := client.Post(url+"/execute", "application/json", strings.NewReader(`{"script":"x","timeout_ms":100,"memory_limit_mb":32}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	runner.result = executor.Result{Status: executor.StatusOK, Batch: []executor.BatchItem{
		{Result: json.RawMessage("1")}, {Error: &executor.ScriptError{Type: executor.StatusRuntimeError, Message: "boom", Line: 1, Traceback: "tb"}}}}
	resp, err = client.Post(url+"/execute/batch", "application/json", strings.NewReader(`{"script":"x","inputs":[1,2]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("batch: %d", resp.StatusCode)
	}
}

func TestAnAnswerThatBreaksTheDocumentIsCaught(t *testing.T) {
	v := openAPIValidator(t)
	req, _ := http.NewRequest(http.MethodPost, "http://x/execute", nil)
	h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"abc"}}
	for name, body := range map[string]string{
		"no usage":        `{"result":1,"stdout":"","stderr":"","duration_ms":1}`,
		"an extra field":  `{"result":1,"stdout":"","stderr":"","duration_ms":1,"usage":{"wall_ms":1},"extra":1}`,
		"negative cpu_ms": `{"result":1,"stdout":"","stderr":"","duration_ms":1,"usage":{"wall_ms":1,"cpu_ms":-1}}`,
	} {
		if err := v.Check(req, 200, h, []byte(body)); err == nil {
			t.Errorf("%s: not caught", name)
		}
	}
	if err := v.Check(req, 422, h, []byte(`{"error":{"type":"overloaded","message":"m"},"stdout":"","stderr":"","usage":{"wall_ms":1}}`)); err == nil {
		t.Error("a 422 with a non-script type was not caught")
	}
	if err := v.Check(req, 429, h, []byte(`{"error":{"type":"overloaded","message":"m"}}`)); err == nil {
		t.Error("a 429 without Retry-After was not caught")
	}
	if err := v.Check(req, 200, http.Header{"Content-Type": {"application/json"}},
		[]byte(`{"result":1,"stdout":"","stderr":"","duration_ms":1,"usage":{"wall_ms":1}}`)); err == nil {
		t.Error("an answer without X-Request-Id was not caught")
	}
	if err := v.Check(req, 418, h, []byte(`{}`)); err == nil {
		t.Error("an undocumented status was not caught")
	}
}

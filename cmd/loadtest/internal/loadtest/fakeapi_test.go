package loadtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeAPI behaves like the executor's HTTP API closely enough for the load
// tool: it checks the request shape, answers most requests with 200 and a
// deterministic share with the API's error envelope (422 runtime_error and
// syntax_error, 429 overloaded with Retry-After, a non-JSON 502), and tallies
// exactly what it sent so tests can compare the summary against ground truth.
type fakeAPI struct {
	wantKey string
	// holdUntil, when > 0, makes each request wait (up to 2s) until that
	// many requests have been in flight at once. Concurrency then shows
	// deterministically instead of depending on scheduling luck.
	holdUntil int
	reached   chan struct{}
	released  bool // reached is closed; guarded by mu
	// plan, when set, replaces the default plan (package func plan) of
	// which response the n-th request gets (status -1: the connection is
	// closed without an answer, a transport error); delay, when set, is how
	// long the n-th request takes before it is answered.
	plan  func(n int) (status int, errType string)
	delay func(n int) time.Duration

	mu          sync.Mutex
	n           int
	statuses    map[int]int
	types       map[string]int
	retryAfter  int
	inFlight    int
	maxInFlight int
	paths       map[string]int
	bodies      []map[string]json.RawMessage
	badRequests []string
}

// newFakeAPI starts the server; opts configure it before it accepts requests
// so its settings need no locking.
func newFakeAPI(t *testing.T, opts ...func(*fakeAPI)) (*fakeAPI, *httptest.Server) {
	t.Helper()
	f := &fakeAPI{statuses: map[int]int{}, types: map[string]int{}, paths: map[string]int{}, reached: make(chan struct{})}
	for _, o := range opts {
		o(f)
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

// plan decides the n-th response (n from 1). The first five requests cover
// every kind, so even a run starved of CPU by other work on the machine sees
// them all; after that a fixed cycle of 10 keeps the mix.
func plan(n int) (status int, errType string) {
	if n > 5 {
		n = n%10 + 1
	}
	switch n {
	case 2:
		return http.StatusUnprocessableEntity, "runtime_error"
	case 3:
		return http.StatusTooManyRequests, "overloaded"
	case 4:
		return http.StatusUnprocessableEntity, "syntax_error"
	case 5:
		return http.StatusBadGateway, "" // non-JSON body, as a proxy would send
	}
	return http.StatusOK, ""
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	problem := ""
	switch {
	case r.Method != http.MethodPost:
		problem = "method " + r.Method
	case r.Header.Get("Content-Type") != "application/json":
		problem = "content-type " + r.Header.Get("Content-Type")
	case f.wantKey != "" && r.Header.Get("Authorization") != "Bearer "+f.wantKey:
		problem = "authorization " + r.Header.Get("Authorization")
	default:
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			problem = "body: " + err.Error()
		} else if _, ok := body["script"]; !ok {
			problem = "body without script"
		}
	}

	f.mu.Lock()
	f.n++
	n := f.n
	f.paths[r.URL.Path]++
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	if f.holdUntil > 0 && f.maxInFlight == f.holdUntil && !f.released {
		f.released = true
		close(f.reached)
	}
	if problem != "" {
		f.badRequests = append(f.badRequests, problem)
	}
	if len(f.bodies) < 3 {
		f.bodies = append(f.bodies, body)
	}
	f.mu.Unlock()

	if f.holdUntil > 0 {
		select {
		case <-f.reached:
		case <-time.After(2 * time.Second):
		}
	}

	if f.delay != nil {
		time.Sleep(f.delay(n))
	}
	planFn := plan
	if f.plan != nil {
		planFn = f.plan
	}
	status, errType := planFn(n)
	if problem != "" {
		status, errType = http.StatusBadRequest, "invalid_request"
	}

	if status == -1 {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}

	f.mu.Lock()
	f.inFlight--
	f.statuses[status]++
	if status != http.StatusOK {
		if errType == "" {
			f.types[UnknownErrorType]++
		} else {
			f.types[errType]++
		}
	}
	if status == http.StatusTooManyRequests {
		f.retryAfter++
	}
	f.mu.Unlock()

	switch {
	case status == http.StatusOK:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"result": {"msg": "done"}, "stdout": "hello\n"}`)
	case errType == "":
		http.Error(w, "<html>bad gateway</html>", status)
	default:
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error": {"type": %q, "message": "something about it"}, "stdout": ""}`, errType)
	}
}

type tally struct {
	total, maxInFlight, retryAfter int
	statuses                       map[string]uint64
	types                          map[string]uint64
	paths                          map[string]int
	bodies                         []map[string]json.RawMessage
	badRequests                    []string
}

func (f *fakeAPI) tally() tally {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := tally{
		total: f.n, maxInFlight: f.maxInFlight, retryAfter: f.retryAfter,
		statuses: map[string]uint64{}, types: map[string]uint64{}, paths: map[string]int{},
		bodies: f.bodies, badRequests: f.badRequests,
	}
	for k, v := range f.statuses {
		t.statuses[strconv.Itoa(k)] = uint64(v)
	}
	for k, v := range f.types {
		t.types[k] = uint64(v)
	}
	for k, v := range f.paths {
		t.paths[k] = v
	}
	return t
}

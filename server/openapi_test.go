package server

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"

	"github.com/secure-script-executor/executor/httpapi"
	"github.com/secure-script-executor/executor/internal/apispec"
)

// Every answer a test of this package gets from a server's API port through
// Go's default HTTP client is validated against the OpenAPI document
// (httpapi/openapi.json) before the test sees it: a mismatch is the
// request's error, so the test fails, and TestMain fails the run too in
// case a test ignored the error. Answers read from raw connections (the
// hostile-input tests) are not validated.
var (
	openAPI  *apispec.Validator
	apiHosts sync.Map // host:port of every server's API listener
)

func init() {
	v, err := apispec.New(httpapi.OpenAPIDocument())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	openAPI = v
	http.DefaultTransport = v.Transport(http.DefaultTransport, func(req *http.Request) bool {
		_, ok := apiHosts.Load(req.URL.Host)
		return ok
	})
}

// validateAnswersOf makes the validating transport check answers from the
// server at base (an http:// URL).
func validateAnswersOf(base string) {
	if u, err := url.Parse(base); err == nil {
		apiHosts.Store(u.Host, true)
	}
}

// forgetAnswersOf stops checking answers from base once its server is gone:
// the kernel may give the port to anything next (a test's Prometheus once
// got a stopped server's port, and its answers were checked as the API's).
func forgetAnswersOf(base string) {
	if u, err := url.Parse(base); err == nil {
		apiHosts.Delete(u.Host)
	}
}

// openAPIVerdict is TestMain's last word: a non-zero code when any answer
// did not match the document, and, for information, which documented error
// types no end-to-end test produced (the httpapi tests produce every one).
func openAPIVerdict(code int) int {
	failures := openAPI.Failures()
	for _, f := range failures {
		fmt.Fprintln(os.Stderr, "OpenAPI mismatch:", f)
	}
	var missing []string
	seen := openAPI.Seen()
	for _, t := range openAPI.ErrorTypes() {
		if !slices.Contains(seen, t) {
			missing = append(missing, t)
		}
	}
	fmt.Fprintf(os.Stderr, "openapi: %d answers validated against httpapi/openapi.json, %d mismatches; error types not produced end to end: %v\n",
		openAPI.Checked(), len(failures), missing)
	if len(failures) > 0 && code == 0 {
		return 1
	}
	return code
}

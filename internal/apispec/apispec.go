// Package apispec checks HTTP answers against the API's OpenAPI document
// (httpapi/openapi.json), for tests: an answer the document does not
// describe is a bug in the server or in the document.
//
// It uses kin-openapi, which validates OpenAPI 3.1 documents with JSON
// Schema 2020-12 semantics (type arrays such as ["integer", "null"],
// const, oneOf).
package apispec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Validator validates answers and remembers which error types it saw. It is
// safe for concurrent use.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
	// unrouted describes answers to requests for paths or methods the
	// document does not have: only errors, with the error schema of their
	// status.
	unrouted *openapi3.Operation

	mu       sync.Mutex
	checked  int
	seen     map[string]int
	failures []string
}

// New loads and validates doc, an OpenAPI 3.1 document.
func New(doc []byte) (*Validator, error) {
	loader := openapi3.NewLoader()
	t, err := loader.LoadFromData(doc)
	if err != nil {
		return nil, fmt.Errorf("apispec: load: %w", err)
	}
	if !t.IsOpenAPI31OrLater() {
		return nil, fmt.Errorf("apispec: document is OpenAPI %s, want 3.1", t.OpenAPI)
	}
	if err := t.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("apispec: the document is not valid OpenAPI: %w", err)
	}
	router, err := gorillamux.NewRouter(t)
	if err != nil {
		return nil, fmt.Errorf("apispec: router: %w", err)
	}
	unrouted := &openapi3.Operation{Responses: openapi3.NewResponses()}
	for name, status := range map[string]int{"BadRequest": 400, "NotFound": 404, "MethodNotAllowed": 405,
		"RequestTimeout": 408, "RequestTooLarge": 413, "HeadersTooLarge": 431, "Internal": 500} {
		r := t.Components.Responses[name]
		if r == nil {
			return nil, fmt.Errorf("apispec: the document has no components.responses.%s", name)
		}
		unrouted.Responses.Set(strconv.Itoa(status), r)
	}
	return &Validator{doc: t, router: router, unrouted: unrouted, seen: map[string]int{}}, nil
}

// ErrorTypes returns the document's enum of error types, in its order.
func (v *Validator) ErrorTypes() []string {
	var out []string
	for _, e := range v.doc.Components.Schemas["ErrorType"].Value.Enum {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// Check validates one answer to req. body is the whole response body.
func (v *Validator) Check(req *http.Request, status int, header http.Header, body []byte) error {
	v.noteErrorType(body)
	route, _, err := v.router.FindRoute(req)
	if errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed) {
		route = &routers.Route{Spec: v.doc, Path: req.URL.Path, Method: req.Method, Operation: v.unrouted}
	} else if err != nil {
		return fmt.Errorf("apispec: find route of %s %s: %w", req.Method, req.URL.Path, err)
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		return fmt.Errorf("apispec: %s %s answered %d, which the OpenAPI document does not describe: %w; body: %.400s",
			req.Method, req.URL.Path, status, err, body)
	}
	return nil
}

// noteErrorType counts the error type of an error answer.
func (v *Validator) noteErrorType(body []byte) {
	var e struct {
		Error struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Type == "" {
		return
	}
	v.mu.Lock()
	v.seen[e.Error.Type]++
	v.mu.Unlock()
}

// Seen returns the error types of the answers checked so far, sorted.
func (v *Validator) Seen() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]string, 0, len(v.seen))
	for t := range v.seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Checked is how many answers a Transport validated.
func (v *Validator) Checked() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.checked
}

// Failures returns every mismatch a Transport found.
func (v *Validator) Failures() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.failures)
}

// Transport wraps inner (http.DefaultTransport when nil) so that every
// answer to a request that only accepts (all when nil) is validated as it
// arrives. A mismatch is returned as the request's
// error, so the test that sent it fails, and is kept for Failures, so a test
// that ignores transport errors cannot hide it.
func (v *Validator) Transport(inner http.RoundTripper, only func(*http.Request) bool) http.RoundTripper {
	if inner == nil {
		inner = http.DefaultTransport
	}
	return &transport{v: v, inner: inner, only: only}
}

type transport struct {
	v     *Validator
	inner http.RoundTripper
	only  func(*http.Request) bool
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.inner.RoundTrip(req)
	if err != nil || req.Method == http.MethodHead || (t.only != nil && !t.only(req)) {
		return resp, err
	}
	t.v.mu.Lock()
	t.v.checked++
	t.v.mu.Unlock()
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		// A body cut short (e.g. the server shutting down) is the test's
		// business: hand it on as it came.
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
		return resp, nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := t.v.Check(req, resp.StatusCode, resp.Header, body); err != nil {
		t.v.mu.Lock()
		t.v.failures = append(t.v.failures, err.Error())
		t.v.mu.Unlock()
		return nil, err
	}
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

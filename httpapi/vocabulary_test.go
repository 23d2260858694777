package httpapi

import (
	"net/http"
	"testing"

	"github.com/secure-script-executor/executor"
)

// Every error type of the one list has an HTTP status, exactly the
// script-level ones are 422, and only internal is 500.
func TestEveryErrorTypeHasItsOwnHTTPStatusFromTheOneList(t *testing.T) {
	if len(statusOf) != len(executor.ErrorTypes) {
		t.Fatalf("%d statuses for %d error types", len(statusOf), len(executor.ErrorTypes))
	}
	for _, typ := range executor.ErrorTypes {
		st, ok := statusOf[string(typ)]
		switch {
		case !ok:
			t.Errorf("%s has no status", typ)
		case typ.Script() != (st == http.StatusUnprocessableEntity):
			t.Errorf("%s: status %d, script-level %v", typ, st, typ.Script())
		case (typ == executor.TypeInternal) != (st == http.StatusInternalServerError):
			t.Errorf("%s: status %d", typ, st)
		}
	}
}

// The log's method label is the metrics' label: TRACE is TRACE in both,
// an unknown token "other".
func TestTheLogsMethodLabelsAreTheMetricsLabels(t *testing.T) {
	for m, want := range map[string]string{"TRACE": "TRACE", "CONNECT": "CONNECT", "POST": "POST", "PROPFIND": "other", "post": "other"} {
		if got := methodLabel(m); got != want || got != executor.MethodLabel(m) {
			t.Errorf("methodLabel(%q) = %q, want %q", m, got, want)
		}
	}
}

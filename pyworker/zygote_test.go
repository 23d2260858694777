package pyworker_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/secure-script-executor/executor/pyworker"
)

// The server embeds the zygote's fork loop as a built file. It must be the
// build of the C source next to it: an edit to zygote.c without `make
// zygote`, or a library from elsewhere, fails here.
func TestTheEmbeddedZygoteLoopIsBuiltFromItsSource(t *testing.T) {
	out := filepath.Join(t.TempDir(), "zygote.so")
	if b, err := exec.Command("zygote/build.sh", out).CombinedOutput(); err != nil {
		t.Fatalf("build the zygote loop (gcc comes with scripts/setup.sh test): %v\n%s", err, b)
	}
	built, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(built, pyworker.ZygoteLoop) {
		t.Fatalf("the embedded zygote loop (%d bytes) is not the build of zygote/zygote.c (%d bytes): run make zygote and commit zygote/zygote.so", len(pyworker.ZygoteLoop), len(built))
	}
}

package jailproc

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// searchableDir is a new folder that every uid can traverse, down from /.
func searchableDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if !searchableByAll(d) {
		t.Skipf("%s is not searchable by every uid (a private $TMPDIR?)", d)
	}
	return d
}

// On a host whose /run or /tmp is mounted noexec (a common hardening) a
// cell's zygote could not map its fork loop from the worker folder, and
// every cell would fail to start: such a parent is passed over for cell
// isolation, and an error names it when no parent is left. Jail isolation
// only reads the compiled worker and may use it.
func TestTheWorkerFolderOfACellIsNeverOnANoexecFileSystem(t *testing.T) {
	noexecDir := searchableDir(t)
	if err := syscall.Mount("none", noexecDir, "tmpfs", syscall.MS_NOEXEC|syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755,size=1m"); err != nil {
		t.Skipf("cannot mount a noexec tmpfs here (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(noexecDir, syscall.MNT_DETACH) })
	if !noexec(noexecDir) {
		t.Fatal("the noexec tmpfs is not seen as noexec")
	}
	okDir := searchableDir(t)

	dir, err := workerFolderIn([]string{noexecDir, okDir}, true)
	if err != nil || filepath.Dir(dir) != okDir {
		t.Fatalf("cell worker folder %q (%v), want one in %s", dir, err, okDir)
	}
	if _, err := workerFolderIn([]string{noexecDir}, true); err == nil || !strings.Contains(err.Error(), "noexec") {
		t.Fatalf("only a noexec parent, cell isolation: err %v, want one that names the noexec file system", err)
	}
	dir, err = workerFolderIn([]string{noexecDir}, false)
	if err != nil || filepath.Dir(dir) != noexecDir {
		t.Fatalf("jail worker folder %q (%v), want one in %s", dir, err, noexecDir)
	}
}

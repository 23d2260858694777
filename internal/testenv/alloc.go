package testenv

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Host uids handed to tests come in blocks of uidBlock, between uidLow and
// uidHigh: far above real accounts and above the server's default range, so a
// test never shares a uid with a server of the machine or with another test
// suite running at the same time.
const (
	uidBlock = 1 << 16
	uidLow   = 1 << 22
	uidHigh  = 1<<31 - uidBlock
)

// uidLockDir holds one lock file per block taken. The lock is an flock held
// by this test process until it exits, so it is released even when the
// process is killed, and two processes can never hold one block.
var uidLockDir = filepath.Join(os.TempDir(), "executor-test-uid-blocks")

var (
	heldMu sync.Mutex
	held   []*os.File // kept open: closing would release the lock
)

// UIDBase returns the first uid of a block of 65536 host uids that no other
// process on this machine holds, for one server or supervisor of one test.
// Every call gives a new block.
func UIDBase(t testing.TB) int {
	t.Helper()
	if err := os.MkdirAll(uidLockDir, 0o755); err != nil {
		t.Fatalf("testenv: uid lock folder: %v", err)
	}
	for range 1000 {
		base := uidLow + rand.IntN((uidHigh-uidLow)/uidBlock)*uidBlock
		f, err := os.OpenFile(filepath.Join(uidLockDir, strconv.Itoa(base)+".lock"), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatalf("testenv: uid lock: %v", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		heldMu.Lock()
		held = append(held, f)
		heldMu.Unlock()
		return base
	}
	t.Fatal("testenv: no free uid block after 1000 tries")
	return 0
}

// UIDBaseArg is UIDBase as a command-line argument.
func UIDBaseArg(t testing.TB) string { return strconv.Itoa(UIDBase(t)) }

// CgroupRoot is where the machine's cgroup hierarchies are mounted.
const CgroupRoot = "/sys/fs/cgroup"

// cgroupDirs are the folders a cgroup parent named name occupies: one per
// v1 controller the supervisor uses, or one on a v2 host.
func cgroupDirs(name string) []string {
	if _, err := os.Stat(filepath.Join(CgroupRoot, "cgroup.controllers")); err == nil {
		return []string{filepath.Join(CgroupRoot, name)}
	}
	var dirs []string
	for _, ctl := range []string{"memory", "pids", "cpu", "cpu,cpuacct", "cpuacct"} {
		if _, err := os.Stat(filepath.Join(CgroupRoot, ctl)); err == nil {
			dirs = append(dirs, filepath.Join(CgroupRoot, ctl, name))
		}
	}
	return dirs
}

// CgroupParent returns a cgroup parent name for one test that no other test
// or process uses, and removes it (in every hierarchy) when t ends; a group
// still holding children is left and reported, since that is a leak.
func CgroupParent(t testing.TB, name string) string {
	t.Helper()
	parent := CgroupParentName(name)
	t.Cleanup(func() {
		for _, d := range cgroupDirs(parent) {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Errorf("testenv: cgroup parent %s not removed: %v (left: %v)", d, err, CgroupsLeft(t, parent))
			}
		}
	})
	return parent
}

// CgroupParentName returns a cgroup parent name no other test or process
// uses, for a server that outlives one test (it removes its parent itself on
// Close).
func CgroupParentName(name string) string {
	return fmt.Sprintf("executor-test-%s-%d-%d", strings.ReplaceAll(name, "/", "-"), os.Getpid(), rand.IntN(1<<30))
}

// CgroupsLeft lists the groups below parent in every hierarchy the
// supervisor uses (v1: memory, pids, cpu; v2: the unified one). A parent that
// does not exist has none; any other read error fails t, so that a check on
// the wrong hierarchy cannot pass by reading nothing.
func CgroupsLeft(t testing.TB, parent string) []string {
	t.Helper()
	var left []string
	for _, d := range cgroupDirs(parent) {
		entries, err := os.ReadDir(d)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatalf("testenv: read cgroup %s: %v", d, err)
		}
		for _, e := range entries {
			if e.IsDir() {
				left = append(left, filepath.Join(d, e.Name()))
			}
		}
	}
	return left
}

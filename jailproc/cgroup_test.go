package jailproc

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// fakeCgroupFS is a cgroup v2 tree in a temporary directory whose control
// file writes follow the kernel's rules that prepareV2 depends on:
//   - writing to cgroup.subtree_control of a non-root group (one with a
//     cgroup.type file) that still lists processes in cgroup.procs fails
//     with EBUSY ("no internal processes");
//   - writing a pid to G/cgroup.procs moves that process: it leaves every
//     other cgroup.procs of the tree and is appended to G's.
//
// Every write is recorded, relative to the root, as "path <- data".
type fakeCgroupFS struct {
	t      *testing.T
	root   string
	writes []string
	// beforeWrite, when set, runs before each write and may fail it.
	beforeWrite func(rel, data string) error
	// beforeRemove, when set, runs before each rmdir.
	beforeRemove func(rel string)
	// groupFiles are the control files the "kernel" puts in a new group.
	groupFiles map[string]string
}

// v2GroupFiles is what a cgroup v2 kernel of 5.19 or later shows in a new
// group with memory, pids and cpu enabled (the files the supervisor reads).
var v2GroupFiles = map[string]string{
	"cgroup.procs":  "",
	"cpu.stat":      "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
	"memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
	"memory.peak":   "0\n",
}

func (f *fakeCgroupFS) mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for name, content := range f.groupFiles {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func newFakeCgroupFS(t *testing.T, files map[string]string) *fakeCgroupFS {
	t.Helper()
	f := &fakeCgroupFS{t: t, root: t.TempDir(), groupFiles: v2GroupFiles}
	for name, content := range files {
		p := filepath.Join(f.root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, oldMkdir, oldRemove := cgroupWriteFile, cgroupMkdir, cgroupRemoveDir
	cgroupWriteFile, cgroupMkdir, cgroupRemoveDir = f.write, f.mkdir, f.removeDir
	t.Cleanup(func() { cgroupWriteFile, cgroupMkdir, cgroupRemoveDir = old, oldMkdir, oldRemove })
	return f
}

func (f *fakeCgroupFS) rel(name string) string {
	r, err := filepath.Rel(f.root, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fakeCgroupFS) read(rel string) string {
	b, _ := os.ReadFile(filepath.Join(f.root, rel))
	return string(b)
}

func (f *fakeCgroupFS) write(name string, data []byte) error {
	rel := f.rel(name)
	f.writes = append(f.writes, rel+" <- "+string(data))
	if f.beforeWrite != nil {
		if err := f.beforeWrite(rel, string(data)); err != nil {
			return err
		}
	}
	dir := filepath.Dir(name)
	switch filepath.Base(name) {
	case "cgroup.subtree_control":
		_, typeErr := os.Stat(filepath.Join(dir, "cgroup.type"))
		if procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs")); typeErr == nil && strings.TrimSpace(string(procs)) != "" {
			return &fs.PathError{Op: "write", Path: name, Err: syscall.EBUSY}
		}
		return os.WriteFile(name, data, 0o644)
	case "cgroup.procs":
		pid := strings.TrimSpace(string(data))
		filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "cgroup.procs" && p != name {
				b, _ := os.ReadFile(p)
				var keep []string
				for _, l := range strings.Fields(string(b)) {
					if l != pid {
						keep = append(keep, l)
					}
				}
				os.WriteFile(p, []byte(strings.Join(keep, "\n")), 0o644)
			}
			return nil
		})
		b, _ := os.ReadFile(name)
		return os.WriteFile(name, append(b, []byte(pid+"\n")...), 0o644)
	}
	return os.WriteFile(name, data, 0o644)
}

func (f *fakeCgroupFS) prepare(t *testing.T, mode CgroupMode, parent string) (cgroupSetup, error) {
	t.Helper()
	return prepareCgroups(Config{Cgroups: mode, CgroupRoot: f.root, CgroupParent: parent})
}

func wantWrites(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("writes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// What Docker --cgroupns=private and containerd/CRI-O on cgroup v2 give a
// container: /sys/fs/cgroup is the container's own (non-root) group, and
// tini (pid 1) and the server (pid 7) live in it.
func containerRoot(procs string) map[string]string {
	return map[string]string{
		"cgroup.controllers":     "cpuset cpu io memory hugetlb pids rdma misc\n",
		"cgroup.subtree_control": "",
		"cgroup.type":            "domain\n",
		"cgroup.procs":           procs,
	}
}

func TestCgroupV2NamespaceRootWithProcessesMovesThemIntoALeafFirst(t *testing.T) {
	f := newFakeCgroupFS(t, containerRoot("1\n7\n"))
	s, err := f.prepare(t, CgroupsRequired, "executor")
	if err != nil {
		t.Fatal(err)
	}
	if s.version != CgroupV2 {
		t.Fatalf("version %v, reason %q", s.version, s.reason)
	}
	wantWrites(t, f.writes,
		"executor-server/cgroup.procs <- 1",
		"executor-server/cgroup.procs <- 7",
		"cgroup.subtree_control <- +memory +pids",
		"executor/cgroup.subtree_control <- +memory +pids",
	)
	if got := strings.Fields(f.read("cgroup.procs")); len(got) != 0 {
		t.Fatalf("root still holds %v", got)
	}
	if got := strings.Fields(f.read("executor-server/cgroup.procs")); !slices.Equal(got, []string{"1", "7"}) {
		t.Fatalf("leaf holds %v", got)
	}
	for _, want := range []string{"moved 2 process(es)", "pids 1,7", filepath.Join(f.root, "executor-server"), "no internal processes"} {
		if !strings.Contains(s.reason, want) {
			t.Fatalf("setup reason %q lacks %q", s.reason, want)
		}
	}
	g, err := s.newGroup(groupLimits{memory: 1 << 20, procs: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.dirs, []string{filepath.Join(f.root, "executor", g.name)}) {
		t.Fatalf("worker groups %v", g.dirs)
	}
}

func TestCgroupV2EBUSYOnTheRootMovesTheLateProcessAndRetriesOnce(t *testing.T) {
	// cgroup.procs is empty when checked, then a process appears (a fork)
	// before subtree_control is written: the kernel answers EBUSY.
	f := newFakeCgroupFS(t, containerRoot(""))
	first := true
	f.beforeWrite = func(rel, data string) error {
		if rel == "cgroup.subtree_control" && first {
			first = false
			return os.WriteFile(filepath.Join(f.root, "cgroup.procs"), []byte("99\n"), 0o644)
		}
		return nil
	}
	s, err := f.prepare(t, CgroupsRequired, "executor")
	if err != nil {
		t.Fatal(err)
	}
	wantWrites(t, f.writes,
		"cgroup.subtree_control <- +memory +pids", // EBUSY
		"executor-server/cgroup.procs <- 99",
		"cgroup.subtree_control <- +memory +pids",
		"executor/cgroup.subtree_control <- +memory +pids",
	)
	if s.version != CgroupV2 || !strings.Contains(s.reason, "moved 1 process(es) (pids 99)") {
		t.Fatalf("version %v reason %q", s.version, s.reason)
	}
}

func TestCgroupV2HierarchyRootIsNeverEvacuated(t *testing.T) {
	// --cgroupns=host with the host tree mounted: the real root has no
	// cgroup.type, is exempt from the rule, and its processes are the host's.
	files := containerRoot("1\n2\n3\n")
	delete(files, "cgroup.type")
	f := newFakeCgroupFS(t, files)
	s, err := f.prepare(t, CgroupsRequired, "executor")
	if err != nil {
		t.Fatal(err)
	}
	wantWrites(t, f.writes,
		"cgroup.subtree_control <- +memory +pids",
		"executor/cgroup.subtree_control <- +memory +pids",
	)
	if s.version != CgroupV2 || s.reason != "" || f.read("cgroup.procs") != "1\n2\n3\n" {
		t.Fatalf("version %v reason %q procs %q", s.version, s.reason, f.read("cgroup.procs"))
	}
	if _, err := os.Stat(filepath.Join(f.root, "executor-server")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a leaf was created at the hierarchy root: %v", err)
	}
}

func TestCgroupV2AlreadyDelegatedRootIsLeftAlone(t *testing.T) {
	// A second start in the same container: the processes were moved and
	// the controllers enabled by the first.
	files := containerRoot("")
	files["cgroup.subtree_control"] = "memory pids\n"
	files["executor-server/cgroup.procs"] = "1\n7\n"
	f := newFakeCgroupFS(t, files)
	s, err := f.prepare(t, CgroupsRequired, "executor")
	if err != nil {
		t.Fatal(err)
	}
	wantWrites(t, f.writes,
		"cgroup.subtree_control <- +memory +pids",
		"executor/cgroup.subtree_control <- +memory +pids",
	)
	if s.version != CgroupV2 || s.reason != "" {
		t.Fatalf("version %v reason %q", s.version, s.reason)
	}
}

func TestCgroupV2NestedParentDelegatesAtEveryLevel(t *testing.T) {
	f := newFakeCgroupFS(t, containerRoot("1\n"))
	s, err := f.prepare(t, CgroupsRequired, "apps/executor")
	if err != nil {
		t.Fatal(err)
	}
	wantWrites(t, f.writes,
		"apps-executor-server/cgroup.procs <- 1",
		"cgroup.subtree_control <- +memory +pids",
		"apps/cgroup.subtree_control <- +memory +pids",
		"apps/executor/cgroup.subtree_control <- +memory +pids",
	)
	if s.version != CgroupV2 {
		t.Fatalf("version %v reason %q", s.version, s.reason)
	}
}

func TestCgroupV2FailuresFallBackInAutoAndRefuseInRequired(t *testing.T) {
	t.Run("missing controller", func(t *testing.T) {
		files := containerRoot("1\n")
		files["cgroup.controllers"] = "cpu io memory\n"
		f := newFakeCgroupFS(t, files)
		s, err := f.prepare(t, CgroupsAuto, "executor")
		if err != nil || s.version != CgroupNone || !strings.Contains(s.reason, `"pids" is not available`) {
			t.Fatalf("auto: %v %v %q", err, s.version, s.reason)
		}
		if len(f.writes) != 0 {
			t.Fatalf("wrote %v although the controller is missing", f.writes)
		}
		if _, err := f.prepare(t, CgroupsRequired, "executor"); err == nil || !strings.Contains(err.Error(), "required") {
			t.Fatalf("required: %v", err)
		}
	})
	t.Run("a process that cannot be moved", func(t *testing.T) {
		f := newFakeCgroupFS(t, containerRoot("1\n"))
		f.beforeWrite = func(rel, data string) error {
			if rel == "executor-server/cgroup.procs" {
				return &fs.PathError{Op: "write", Path: rel, Err: syscall.EPERM}
			}
			return nil
		}
		s, err := f.prepare(t, CgroupsAuto, "executor")
		if err != nil || s.version != CgroupNone || !strings.Contains(s.reason, "move pid 1") {
			t.Fatalf("%v %v %q", err, s.version, s.reason)
		}
	})
	t.Run("a process that exited meanwhile is skipped", func(t *testing.T) {
		f := newFakeCgroupFS(t, containerRoot("1\n5\n"))
		f.beforeWrite = func(rel, data string) error {
			if rel == "executor-server/cgroup.procs" && data == "5" {
				os.WriteFile(filepath.Join(f.root, "cgroup.procs"), nil, 0o644) // 1 was moved, 5 is gone
				return &fs.PathError{Op: "write", Path: rel, Err: syscall.ESRCH}
			}
			return nil
		}
		s, err := f.prepare(t, CgroupsRequired, "executor")
		if err != nil || s.version != CgroupV2 || !strings.Contains(s.reason, "moved 1 process(es) (pids 1)") {
			t.Fatalf("%v %v %q", err, s.version, s.reason)
		}
	})
}

func TestCgroupV1IsUnchanged(t *testing.T) {
	f := newFakeCgroupFS(t, map[string]string{"memory/tasks": "1\n", "pids/tasks": "1\n"})
	s, err := f.prepare(t, CgroupsRequired, "executor")
	if err != nil || s.version != CgroupV1 || s.memsw || s.reason != "" {
		t.Fatalf("%v %v memsw %v %q", err, s.version, s.memsw, s.reason)
	}
	for _, d := range []string{"memory/executor", "pids/executor"} {
		if fi, err := os.Stat(filepath.Join(f.root, d)); err != nil || !fi.IsDir() {
			t.Fatalf("%s: %v", d, err)
		}
	}
	if len(f.writes) != 0 {
		t.Fatalf("v1 set-up wrote control files: %v", f.writes)
	}
	g, err := s.newGroup(groupLimits{memory: 1 << 20, procs: 4})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.dirs, []string{filepath.Join(f.root, "memory/executor", g.name), filepath.Join(f.root, "pids/executor", g.name)}) {
		t.Fatalf("%v", g.dirs)
	}
}

func TestReadPIDsSkipsProcessesOutsideThePIDNamespace(t *testing.T) {
	// The kernel lists a process of another pid namespace as 0, and writing
	// 0 to cgroup.procs would move the writer itself instead.
	p := filepath.Join(t.TempDir(), "cgroup.procs")
	os.WriteFile(p, []byte("0\n12\n0\n345\n"), 0o644)
	if got, err := readPIDs(p); err != nil || !slices.Equal(got, []int{12, 345}) {
		t.Fatalf("%v %v", got, err)
	}
}

// removeDir emulates rmdir on a cgroup: it removes the folder with its
// control files, but answers EBUSY while cgroup.procs lists a process.
func (f *fakeCgroupFS) removeDir(name string) error {
	if f.beforeRemove != nil {
		f.beforeRemove(f.rel(name))
	}
	if procs, _ := os.ReadFile(filepath.Join(name, "cgroup.procs")); strings.TrimSpace(string(procs)) != "" {
		return &fs.PathError{Op: "rmdir", Path: name, Err: syscall.EBUSY}
	}
	if _, err := os.Stat(name); err != nil {
		return err
	}
	return os.RemoveAll(name)
}

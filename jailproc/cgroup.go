package jailproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CgroupVersion is the cgroup hierarchy the jails use.
type CgroupVersion int

const (
	// CgroupNone: no usable hierarchy; limits are rlimits only.
	CgroupNone CgroupVersion = 0
	// CgroupV1: per-controller hierarchies (/sys/fs/cgroup/memory, .../pids).
	CgroupV1 CgroupVersion = 1
	// CgroupV2: the unified hierarchy with memory and pids delegated.
	CgroupV2 CgroupVersion = 2
)

func (v CgroupVersion) String() string {
	switch v {
	case CgroupV1:
		return "v1"
	case CgroupV2:
		return "v2"
	default:
		return "none"
	}
}

// cgroupSetup is what prepareCgroups found and created.
type cgroupSetup struct {
	version CgroupVersion
	root    string // CgroupRoot
	parent  string // CgroupParent
	// memsw is true when v1 swap accounting exists, so memory+swap can be
	// capped too (otherwise a jail could spill into swap past MemoryLimit).
	memsw bool
	// reason explains why no cgroups are used (version == CgroupNone).
	reason string
	// cpu is true when the cpu controller caps each jail's CPU bandwidth
	// (Config.CPUMsPerSec); cpuReason says why not when it was asked for.
	cpu       bool
	cpuReason string
	// cpuacct is the v1 hierarchy that counts CPU time (cpuacct.usage):
	// mounted on its own or together with cpu ("cpu,cpuacct"); "" when
	// there is none, and CPU usage is then not measured.
	cpuacct string
	// names hands out the worker groups' names.
	names *groupNamer
	// free keeps emptied worker groups for reuse (v1 only, else nil).
	free *groupPool
}

// prepareCgroups detects the hierarchy and creates the parent groups. The
// supervisor creates one group per worker below them (newGroup) and removes
// it after the worker is gone.
func prepareCgroups(c Config) (cgroupSetup, error) {
	s := cgroupSetup{root: c.CgroupRoot, parent: c.CgroupParent, names: newGroupNamer()}
	if c.Cgroups == CgroupsOff {
		s.reason = "cgroups disabled by configuration"
		return s, nil
	}
	var err error
	if _, statErr := os.Stat(filepath.Join(c.CgroupRoot, "cgroup.controllers")); statErr == nil {
		err = prepareV2(&s)
	} else {
		err = prepareV1(&s)
	}
	if err != nil {
		if c.Cgroups == CgroupsRequired {
			return s, fmt.Errorf("cgroups are required but unusable: %w", err)
		}
		s.version = CgroupNone
		s.reason = err.Error()
	}
	if s.version == CgroupV1 {
		s.free = &groupPool{}
	}
	if c.CPUMsPerSec > 0 && s.version != CgroupNone {
		if err := s.prepareCPU(); err != nil {
			// Not fatal: RLIMIT_CPU still bounds a jail's total CPU time;
			// only its share of the cores while it runs is not capped.
			s.cpuReason = err.Error()
		} else {
			s.cpu = true
		}
	}
	return s, nil
}

// prepareCPU sets up the cpu controller for the jails' parent: v1, a parent
// in the cpu hierarchy; v2, "+cpu" delegated from the root down to the
// parent, after memory and pids (which prepareV2 already delegated).
func (s *cgroupSetup) prepareCPU() error {
	if s.version == CgroupV1 {
		mount := filepath.Join(s.root, "cpu")
		if _, err := os.Stat(filepath.Join(mount, "cpu.cfs_quota_us")); err != nil {
			return fmt.Errorf("cgroup v1 controller \"cpu\" is not mounted at %s", mount)
		}
		return os.MkdirAll(filepath.Join(mount, s.parent), 0o755)
	}
	avail, _ := os.ReadFile(filepath.Join(s.root, "cgroup.controllers"))
	if !containsWord(string(avail), "cpu") {
		return fmt.Errorf("cgroup v2 controller \"cpu\" is not available at %s", s.root)
	}
	dir := s.root
	for _, elem := range append([]string{""}, strings.Split(filepath.Clean(s.parent), string(filepath.Separator))...) {
		dir = filepath.Join(dir, elem)
		ctl := filepath.Join(dir, "cgroup.subtree_control")
		if err := cgroupWriteFile(ctl, []byte("+cpu")); err != nil {
			return fmt.Errorf("enable cpu in %s: %w", ctl, err)
		}
	}
	return nil
}

func prepareV1(s *cgroupSetup) error {
	for _, ctl := range []string{"memory", "pids"} {
		mount := filepath.Join(s.root, ctl)
		if _, err := os.Stat(filepath.Join(mount, "tasks")); err != nil {
			return fmt.Errorf("cgroup v1 controller %q is not mounted at %s", ctl, mount)
		}
		if err := os.MkdirAll(filepath.Join(mount, s.parent), 0o755); err != nil {
			return fmt.Errorf("create cgroup v1 parent: %w", err)
		}
	}
	_, err := os.Stat(filepath.Join(s.root, "memory", s.parent, "memory.memsw.limit_in_bytes"))
	s.memsw = err == nil
	s.version = CgroupV1
	s.cpuacct = findCPUAcct(s.root)
	if s.cpuacct != "" {
		if err := os.MkdirAll(filepath.Join(s.cpuacct, s.parent), 0o755); err != nil {
			s.cpuacct = "" // CPU usage unmeasured; limits still hold
		}
	}
	return nil
}

// findCPUAcct returns where the v1 cpuacct controller is mounted: on its own
// (/sys/fs/cgroup/cpuacct) or together with cpu (cpu,cpuacct, usually with
// cpu and cpuacct as links to it), or "".
func findCPUAcct(root string) string {
	cpu, _ := filepath.EvalSymlinks(filepath.Join(root, "cpu"))
	for _, name := range []string{"cpuacct", "cpu,cpuacct", "cpuacct,cpu"} {
		dir := filepath.Join(root, name)
		if _, err := os.Stat(filepath.Join(dir, "cpuacct.usage")); err != nil {
			continue
		}
		if real, _ := filepath.EvalSymlinks(dir); real != "" && real == cpu {
			return filepath.Join(root, "cpu") // one group serves both
		}
		return dir
	}
	return ""
}

// cgroupWriteFile writes one cgroup control file. Tests replace it to
// emulate the kernel's answers (EBUSY) on a fake cgroupfs tree.
var cgroupWriteFile = func(name string, data []byte) error {
	return os.WriteFile(name, data, 0o644)
}

// prepareV2 creates <root>/<parent> and delegates memory and pids to it. A
// cgroup v2 group can only enable a controller for its children when its own
// parent has enabled it, and only while it holds no processes itself, which
// is why the jails live one level below a process-free parent.
//
// In a private cgroup namespace (Docker --cgroupns=private, containerd and
// CRI-O on cgroup v2) <root> is the container's own cgroup and holds the
// container's processes (tini, this server), so enabling controllers in its
// cgroup.subtree_control fails with EBUSY ("no internal processes" rule).
// prepareV2 then first moves every process of <root> into a leaf child
// <root>/<parent>-server, as nsjail's moveSelfIntoChildCgroup does for
// itself. It never does this at the hierarchy's real root (no cgroup.type
// file there): the real root is exempt from the rule, and its processes are
// the whole host's.
func prepareV2(s *cgroupSetup) error {
	avail, err := os.ReadFile(filepath.Join(s.root, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("read cgroup v2 controllers: %w", err)
	}
	for _, ctl := range []string{"memory", "pids"} {
		if !containsWord(string(avail), ctl) {
			return fmt.Errorf("cgroup v2 controller %q is not available at %s", ctl, s.root)
		}
	}
	var done []string
	rootCtl := filepath.Join(s.root, "cgroup.subtree_control")
	if enabled, _ := os.ReadFile(rootCtl); !containsWord(string(enabled), "memory") || !containsWord(string(enabled), "pids") {
		// Proactive: a namespace root holding processes would refuse anyway.
		if pids, _ := readPIDs(filepath.Join(s.root, "cgroup.procs")); len(pids) > 0 && !isHierarchyRoot(s.root) {
			what, err := s.evacuateRoot()
			if err != nil {
				return err
			}
			done = append(done, what)
		}
	}
	err = cgroupWriteFile(rootCtl, []byte("+memory +pids"))
	if errors.Is(err, syscall.EBUSY) && !isHierarchyRoot(s.root) {
		// A process appeared in the root since the check above (or
		// cgroup.procs could not be read): move it too, then retry once.
		what, merr := s.evacuateRoot()
		if merr != nil {
			return merr
		}
		done = append(done, what)
		err = cgroupWriteFile(rootCtl, []byte("+memory +pids"))
	}
	if err != nil {
		return fmt.Errorf("enable memory and pids in %s: %w", rootCtl, err)
	}
	parent := filepath.Join(s.root, s.parent)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create cgroup v2 parent: %w", err)
	}
	// Every group between the root and the parent (a nested --cgroup-parent
	// such as a/b) and the parent itself delegate the controllers in turn.
	dir := s.root
	for _, elem := range strings.Split(filepath.Clean(s.parent), string(filepath.Separator)) {
		dir = filepath.Join(dir, elem)
		ctl := filepath.Join(dir, "cgroup.subtree_control")
		if err := cgroupWriteFile(ctl, []byte("+memory +pids")); err != nil {
			return fmt.Errorf("enable memory and pids in %s: %w", ctl, err)
		}
	}
	s.version = CgroupV2
	s.reason = strings.Join(done, "; ")
	return nil
}

// serverLeaf is the leaf group that receives the processes of a namespace
// root: <root>/<parent>-server (slashes of a nested parent become dashes).
func (s *cgroupSetup) serverLeaf() string {
	return filepath.Join(s.root, strings.ReplaceAll(filepath.Clean(s.parent), string(filepath.Separator), "-")+"-server")
}

// evacuateRoot moves every process listed in <root>/cgroup.procs into the
// server leaf. It repeats while processes remain (one may fork meanwhile),
// skips processes that exited, and returns what it did for the log.
func (s *cgroupSetup) evacuateRoot() (string, error) {
	leaf := s.serverLeaf()
	if err := os.MkdirAll(leaf, 0o755); err != nil {
		return "", fmt.Errorf("cgroup v2: create leaf %s for the processes of %s: %w", leaf, s.root, err)
	}
	var moved []string
	for round := 0; round < 5; round++ {
		pids, err := readPIDs(filepath.Join(s.root, "cgroup.procs"))
		if err != nil {
			return "", fmt.Errorf("cgroup v2: list the processes of %s: %w", s.root, err)
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			err := cgroupWriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(pid)))
			switch {
			case err == nil:
				moved = append(moved, strconv.Itoa(pid))
			case errors.Is(err, syscall.ESRCH):
				// exited meanwhile
			default:
				return "", fmt.Errorf("cgroup v2: move pid %d from %s into %s: %w", pid, s.root, leaf, err)
			}
		}
	}
	return fmt.Sprintf("moved %d process(es) (pids %s) from %s into the leaf %s so that %s can enable memory and pids for its children (cgroup v2 \"no internal processes\" rule)",
		len(moved), strings.Join(moved, ","), s.root, leaf, s.root), nil
}

// readPIDs reads a cgroup.procs file. 0 (a process outside this pid
// namespace) is skipped: writing 0 to cgroup.procs would mean "the writer".
func readPIDs(name string) ([]int, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// isHierarchyRoot reports whether dir is the real root of the cgroup v2
// hierarchy, which has no cgroup.type file. A cgroup namespace root (what a
// container sees at /sys/fs/cgroup) is a non-root group and has one.
func isHierarchyRoot(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "cgroup.type"))
	return errors.Is(err, os.ErrNotExist)
}

func containsWord(list, word string) bool {
	for _, f := range strings.Fields(list) {
		if f == word {
			return true
		}
	}
	return false
}

// parentDirs lists the jails' parent groups in every hierarchy used.
func (s cgroupSetup) parentDirs() []string {
	switch s.version {
	case CgroupV1:
		dirs := []string{filepath.Join(s.root, "memory", s.parent), filepath.Join(s.root, "pids", s.parent), filepath.Join(s.root, "cpu", s.parent)}
		if s.cpuacct != "" && s.cpuacct != filepath.Join(s.root, "cpu") {
			dirs = append(dirs, filepath.Join(s.cpuacct, s.parent))
		}
		return dirs
	case CgroupV2:
		return []string{filepath.Join(s.root, s.parent)}
	}
	return nil
}

// removeParents removes the jails' parent groups if they are empty. For a
// nested v2 parent (a/b) only the last element is removed.
func (s cgroupSetup) removeParents() {
	for _, dir := range s.parentDirs() {
		os.Remove(dir)
	}
}

// staleAge is how old a worker's cgroup must be before removeStale takes it
// for a leftover: far older than a spawn's window between creating the
// folder and moving the worker in, so a worker being set up by another
// server sharing the parent is never touched.
const staleAge = time.Minute

// removeStale removes the empty worker groups under the parents: what a
// previous server left when it was SIGKILLed (a crash, an OOM kill of the
// server) before removing them, and the NSJAIL.* groups of versions that let
// nsjail create them. rmdir succeeds only on a group without tasks, so a live
// worker is never affected. It returns how many it removed.
func (s cgroupSetup) removeStale() int {
	removed := 0
	for _, parent := range s.parentDirs() {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if !e.IsDir() || !(strings.HasPrefix(e.Name(), groupPrefix) || strings.HasPrefix(e.Name(), "NSJAIL.")) {
				continue
			}
			info, err := e.Info()
			if err != nil || time.Since(info.ModTime()) < staleAge {
				continue
			}
			if os.Remove(filepath.Join(parent, e.Name())) == nil {
				removed++
			}
		}
	}
	return removed
}

package jailproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
}

// prepareCgroups detects the hierarchy and creates the parent groups nsjail
// needs. nsjail itself creates and removes one NSJAIL.<pid> group per jail
// below these parents.
func prepareCgroups(c Config) (cgroupSetup, error) {
	s := cgroupSetup{root: c.CgroupRoot, parent: c.CgroupParent}
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
	return s, nil
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
	return nil
}

// prepareV2 creates <root>/<parent> and delegates memory and pids to it. A
// cgroup v2 group can only enable a controller for its children when its own
// parent has enabled it, and only while it holds no processes itself, which
// is why the jails live one level below a process-free parent.
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
	parent := filepath.Join(s.root, s.parent)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create cgroup v2 parent: %w", err)
	}
	for _, dir := range []string{s.root, parent} {
		ctl := filepath.Join(dir, "cgroup.subtree_control")
		if err := os.WriteFile(ctl, []byte("+memory +pids"), 0o644); err != nil {
			return fmt.Errorf("enable memory and pids in %s: %w", ctl, err)
		}
	}
	s.version = CgroupV2
	return nil
}

func containsWord(list, word string) bool {
	for _, f := range strings.Fields(list) {
		if f == word {
			return true
		}
	}
	return false
}

// groupDirs returns the folders nsjail creates for the jail whose child has
// the given host pid.
func (s cgroupSetup) groupDirs(childPID int) []string {
	name := "NSJAIL." + strconv.Itoa(childPID)
	switch s.version {
	case CgroupV1:
		return []string{
			filepath.Join(s.root, "memory", s.parent, name),
			filepath.Join(s.root, "pids", s.parent, name),
		}
	case CgroupV2:
		return []string{filepath.Join(s.root, s.parent, name)}
	}
	return nil
}

// removeGroups removes what nsjail left behind when it was killed before it
// could clean up. rmdir on a cgroup succeeds only once it holds no task.
func (s cgroupSetup) removeGroups(childPID int) error {
	var errs []error
	for _, dir := range s.groupDirs(childPID) {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

package jailproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// childGroupPrefix names the cgroups the supervisor creates for cell
// children itself (nsjail creates NSJAIL.<pid> ones for jails): CELL.<pid>,
// pid being the child's host pid.
const childGroupPrefix = "CELL."

// childGroup is the cgroup of one cell child: memory, pids and (when
// enabled) cpu, in every hierarchy the supervisor uses, created before the
// child is handed out and removed once it is gone.
type childGroup struct {
	v    CgroupVersion
	dirs []string // v1: one per controller, memory first; v2: one
}

// newChildGroup creates the group for the child with the given host pid,
// sets its limits and moves the child into it. On error nothing is left.
func (s cgroupSetup) newChildGroup(c Config, pid int) (_ *childGroup, err error) {
	if s.version == CgroupNone {
		return nil, nil
	}
	name := childGroupPrefix + strconv.Itoa(pid)
	g := &childGroup{v: s.version}
	type file struct{ dir, name, value string }
	var files []file
	mem := strconv.FormatInt(c.MemoryLimit, 10)
	procs := strconv.Itoa(c.MaxProcs)
	// CFS bandwidth: quota per 100 ms period, as nsjail computes it.
	quota := strconv.Itoa(c.CPUMsPerSec * 100)
	if s.version == CgroupV1 {
		memDir := filepath.Join(s.root, "memory", s.parent, name)
		pidsDir := filepath.Join(s.root, "pids", s.parent, name)
		g.dirs = []string{memDir, pidsDir}
		files = append(files, file{memDir, "memory.limit_in_bytes", mem})
		if s.memsw {
			files = append(files, file{memDir, "memory.memsw.limit_in_bytes", mem})
		}
		files = append(files, file{pidsDir, "pids.max", procs})
		if s.cpu {
			cpuDir := filepath.Join(s.root, "cpu", s.parent, name)
			g.dirs = append(g.dirs, cpuDir)
			files = append(files, file{cpuDir, "cpu.cfs_period_us", "100000"}, file{cpuDir, "cpu.cfs_quota_us", quota})
		}
	} else {
		dir := filepath.Join(s.root, s.parent, name)
		g.dirs = []string{dir}
		files = append(files, file{dir, "memory.max", mem}, file{dir, "memory.swap.max", "0"}, file{dir, "pids.max", procs})
		if s.cpu {
			files = append(files, file{dir, "cpu.max", quota + " 100000"})
		}
	}
	defer func() {
		if err != nil {
			g.remove()
		}
	}()
	for _, d := range g.dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(f.dir, f.name), []byte(f.value), 0); err != nil {
			return nil, fmt.Errorf("cgroup limit %s: %w", f.name, err)
		}
	}
	for _, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return nil, fmt.Errorf("move the child into its cgroup: %w", err)
		}
	}
	return g, nil
}

// oomKilled reports whether the kernel's OOM killer killed a process of the
// group (v2 memory.events, v1 memory.oom_control: "oom_kill N").
func (g *childGroup) oomKilled() bool {
	if g == nil {
		return false
	}
	name := "memory.events"
	if g.v == CgroupV1 {
		name = "memory.oom_control"
	}
	b, err := os.ReadFile(filepath.Join(g.dirs[0], name))
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
			k, _ := strconv.Atoi(n)
			return k > 0
		}
	}
	return false
}

// remove removes the group's folders, retrying briefly while the kernel
// still counts a dying task in it (rmdir fails with EBUSY until it is gone).
func (g *childGroup) remove() error {
	if g == nil {
		return nil
	}
	var err error
	for i := 0; i < 100; i++ {
		var errs []error
		for _, d := range g.dirs {
			if e := os.Remove(d); e != nil && !errors.Is(e, os.ErrNotExist) {
				errs = append(errs, e)
			}
		}
		if err = errors.Join(errs...); err == nil {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return err
}

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// jail is the nsjail command line of the server's jails (jailproc/command.go,
// copied on purpose: the ceiling must not depend on the code it measures),
// minus the worker: no --pass_fd, no worker.pyc mount, any command instead.
type jail struct {
	nsjail   string
	python   string   // resolved interpreter
	roBinds  []string // same discovery as jailproc.discoverLayout
	symlinks []string
	seccomp  string // policy text, "" = none
	cg       cgroups
}

// Limits as the server's defaults (server/config.go), so that a ceiling jail
// costs what a server jail costs.
const (
	jailUID       = 1000
	memoryLimit   = 256 << 20
	addressSpace  = 1 << 30
	tmpSize       = 16 << 20
	maxProcs      = 32
	maxOpenFiles  = 64
	runTimeout    = 5 * time.Second
	maxLifetimeS  = 365 // --time_limit: max-idle-age 5m + timeout 5s + 1m, as server/app.go
	ceilingScript = "import json"
)

func newJail(o Options, cg cgroups, withSeccomp bool) (jail, error) {
	j := jail{nsjail: o.Nsjail, cg: cg}
	if st, err := os.Stat(o.Nsjail); err != nil || st.IsDir() {
		return j, fmt.Errorf("nsjail not found at %s (run `make setup`)", o.Nsjail)
	}
	python, err := filepath.EvalSymlinks(o.Python)
	if err != nil {
		return j, fmt.Errorf("python: %w", err)
	}
	out, err := exec.Command(python, "-I", "-S", "-c", "import os;print(os.path.dirname(os.__file__))").Output()
	if err != nil {
		return j, fmt.Errorf("python %s does not run: %w", python, err)
	}
	j.python = python
	j.roBinds = []string{python, strings.TrimSpace(string(out))}
	triple := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	for _, dir := range []string{"/usr/lib/" + triple, "/usr/lib64", "/lib/" + triple, "/lib64"} {
		if real, err := filepath.EvalSymlinks(dir); err != nil || real != dir {
			continue
		}
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			j.roBinds = append(j.roBinds, dir)
		}
	}
	for _, link := range []string{"/lib", "/lib64"} {
		if target, err := os.Readlink(link); err == nil {
			j.symlinks = append(j.symlinks, target+":"+link)
		}
	}
	if withSeccomp {
		b, err := os.ReadFile(o.Seccomp)
		if err != nil {
			return j, fmt.Errorf("seccomp policy: %w", err)
		}
		j.seccomp = string(b)
	}
	return j, nil
}

// args is jailproc's (*Supervisor).args with the given extra read-only binds
// and command.
func (j jail) args(hostUID int, extraBinds []string, argv ...string) []string {
	idmap := fmt.Sprintf("%d:%d:1", jailUID, hostUID)
	mib := func(n int64) string { return strconv.FormatInt((n+1<<20-1)>>20, 10) }
	a := []string{
		"--mode", "o",
		"--quiet",
		"--user", idmap, "--group", idmap,
		"--hostname", "sandbox",
		"--cwd", "/tmp",
		"--time_limit", strconv.Itoa(maxLifetimeS),
		"--nice_level", "19",
		"--iface_no_lo",
		"--rlimit_as", mib(addressSpace),
		"--rlimit_cpu", strconv.Itoa(int(runTimeout.Seconds()) + 2),
		"--rlimit_fsize", mib(tmpSize),
		"--rlimit_nofile", strconv.Itoa(maxOpenFiles),
		"--rlimit_nproc", strconv.Itoa(maxProcs),
		"--rlimit_stack", "8",
		"--rlimit_core", "0",
		"--mount", "none:/tmp:tmpfs:size=" + strconv.Itoa(tmpSize) + ",mode=1777",
		"--env", "LANG=C.UTF-8",
		"--env", "HOME=/tmp",
		"--env", "OPENBLAS_NUM_THREADS=1",
		"--env", "OMP_NUM_THREADS=1",
		"--env", "MKL_NUM_THREADS=1",
	}
	for _, p := range append(append([]string{}, j.roBinds...), extraBinds...) {
		a = append(a, "--bindmount_ro", p)
	}
	for _, sl := range j.symlinks {
		a = append(a, "--symlink", sl)
	}
	a = append(a, j.cg.args()...)
	if j.seccomp != "" {
		a = append(a, "--seccomp_string", j.seccomp)
	}
	return append(append(a, "--"), argv...)
}

// cgroups is the bench's own parent group, as jailproc.prepareCgroups makes
// the server's.
type cgroups struct {
	version int // 0 none, 1, 2
	root    string
	parent  string
	memsw   bool
	dirs    []string // created by us, removed by cleanup
}

func (c cgroups) args() []string {
	switch c.version {
	case 1:
		a := []string{
			"--cgroup_mem_max", strconv.Itoa(memoryLimit),
			"--cgroup_mem_mount", filepath.Join(c.root, "memory"),
			"--cgroup_mem_parent", c.parent,
			"--cgroup_pids_max", strconv.Itoa(maxProcs),
			"--cgroup_pids_mount", filepath.Join(c.root, "pids"),
			"--cgroup_pids_parent", c.parent,
		}
		if c.memsw {
			a = append(a, "--cgroup_mem_memsw_max", strconv.Itoa(memoryLimit))
		}
		return a
	case 2:
		return []string{
			"--use_cgroupv2",
			"--cgroupv2_mount", filepath.Join(c.root, c.parent),
			"--cgroup_mem_max", strconv.Itoa(memoryLimit),
			"--cgroup_mem_swap_max", "0",
			"--cgroup_pids_max", strconv.Itoa(maxProcs),
		}
	}
	return nil
}

// prepareCgroups creates <root>/{memory,pids}/<parent> (v1) or
// <root>/<parent> (v2) with memory and pids delegated.
func prepareCgroups(root, parent string) (cgroups, error) {
	c := cgroups{root: root, parent: parent}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		dir := filepath.Join(root, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return c, err
		}
		c.dirs = append(c.dirs, dir)
		for _, d := range []string{root, dir} {
			if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+memory +pids"), 0o644); err != nil {
				return c, fmt.Errorf("enable memory and pids in %s: %w", d, err)
			}
		}
		c.version = 2
		return c, nil
	}
	for _, ctl := range []string{"memory", "pids"} {
		if _, err := os.Stat(filepath.Join(root, ctl, "tasks")); err != nil {
			return c, fmt.Errorf("cgroup v1 controller %s is not mounted at %s", ctl, filepath.Join(root, ctl))
		}
		dir := filepath.Join(root, ctl, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return c, err
		}
		c.dirs = append(c.dirs, dir)
	}
	_, err := os.Stat(filepath.Join(root, "memory", parent, "memory.memsw.limit_in_bytes"))
	c.memsw = err == nil
	c.version = 1
	return c, nil
}

// removeCgroupDirs removes the given parent groups and any empty NSJAIL.*
// group nsjail left in them. Groups still holding tasks are retried briefly.
func removeCgroupDirs(dirs []string) error {
	var errs []error
	for _, dir := range dirs {
		var err error
		for try := 0; try < 20; try++ {
			children, _ := filepath.Glob(filepath.Join(dir, "NSJAIL.*"))
			for _, ch := range children {
				os.Remove(ch)
			}
			if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SpawnResult is one loop measurement: Loops goroutines each running the
// command back to back for the duration.
type SpawnResult struct {
	Name      string  `json:"name"`
	Command   string  `json:"command"`
	Loops     int     `json:"loops"`
	Spawns    int     `json:"spawns"`   // completed with exit status 0
	Failures  int     `json:"failures"` // anything else
	Seconds   float64 `json:"seconds"`  // first start to last exit
	PerSecond float64 `json:"per_second"`
	WallMs    float64 `json:"wall_ms_mean"` // per successful spawn
	CPUMs     float64 `json:"cpu_ms_mean"`  // user+sys of nsjail and everything it waited for, per spawn
	Example   string  `json:"failure_example,omitempty"`
}

// spawnLoops runs argv(loop) in `loops` parallel loops for d.
func spawnLoops(ctx context.Context, name string, loops int, d time.Duration, argv func(loop int) []string) SpawnResult {
	r := SpawnResult{Name: name, Loops: loops, Command: strings.Join(quoteArgs(argv(0)), " ")}
	var mu sync.Mutex
	var wall, cpu time.Duration
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := 0; i < loops; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := argv(i)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				var stderr bytes.Buffer
				cmd := exec.CommandContext(ctx, args[0], args[1:]...)
				cmd.Stderr = &stderr
				t0 := time.Now()
				err := cmd.Run()
				el := time.Since(t0)
				mu.Lock()
				if err == nil {
					r.Spawns++
					wall += el
					cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
				} else {
					r.Failures++
					if r.Example == "" {
						r.Example = strings.TrimSpace(err.Error() + ": " + lastLine(stderr.String()))
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.Seconds = time.Since(start).Seconds()
	if r.Seconds > 0 {
		r.PerSecond = float64(r.Spawns) / r.Seconds
	}
	if r.Spawns > 0 {
		r.WallMs = float64(wall.Microseconds()) / 1000 / float64(r.Spawns)
		r.CPUMs = float64(cpu.Microseconds()) / 1000 / float64(r.Spawns)
	}
	return r
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := lines[len(lines)-1]
	if len(l) > 300 {
		l = l[:300]
	}
	return l
}

// quoteArgs shortens the command for the report: the seccomp policy is
// several KB.
func quoteArgs(a []string) []string {
	out := make([]string, len(a))
	for i, s := range a {
		switch {
		case len(s) > 80:
			out[i] = "'<" + strconv.Itoa(len(s)) + " bytes>'"
		case s == "" || strings.ContainsAny(s, " '\"$;&|<>*?()"):
			out[i] = "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		default:
			out[i] = s
		}
	}
	return out
}

// Ceiling is the raw spawn capacity of the machine.
type Ceiling struct {
	ImportJSON []SpawnResult `json:"import_json"` // one per loop count
	Pass       []SpawnResult `json:"pass"`
	Breakdown  []SpawnResult `json:"breakdown"` // one loop each
}

// Best is the highest rate among rs.
func Best(rs []SpawnResult) SpawnResult {
	var b SpawnResult
	for _, r := range rs {
		if r.PerSecond > b.PerSecond {
			b = r
		}
	}
	return b
}

// measureCeiling runs the nsjail loops: the ceiling with `import json` and
// `pass` for each loop count, then the single-loop breakdown of a spawn.
func measureCeiling(ctx context.Context, o Options, logf func(string, ...any)) (Ceiling, error) {
	var c Ceiling
	cg, err := prepareCgroups(o.CgroupRoot, fmt.Sprintf("%s-ceiling-%d", o.Prefix, os.Getpid()))
	defer func() {
		if err := removeCgroupDirs(cg.dirs); err != nil {
			logf("bench: cleaning up cgroups: %v", err)
		}
	}()
	if err != nil {
		return c, fmt.Errorf("cgroups for the ceiling jails: %w", err)
	}
	full, err := newJail(o, cg, true)
	if err != nil {
		return c, err
	}
	py := func(script string) func(int) []string {
		return func(i int) []string {
			return append([]string{full.nsjail}, full.args(o.UIDBase+i, nil, full.python, "-I", "-S", "-c", script)...)
		}
	}
	for _, w := range []struct {
		script string
		into   *[]SpawnResult
	}{{ceilingScript, &c.ImportJSON}, {"pass", &c.Pass}} {
		for _, n := range o.Loops {
			r := spawnLoops(ctx, "nsjail python -c '"+w.script+"'", n, o.CeilingDuration, py(w.script))
			logf("bench: ceiling %-32s loops=%d  %6.1f spawns/s  (%d ok, %d failed)", r.Name, n, r.PerSecond, r.Spawns, r.Failures)
			if r.Spawns == 0 {
				return c, fmt.Errorf("no jail ran: %s (command: %s)", r.Example, r.Command)
			}
			*w.into = append(*w.into, r)
			if ctx.Err() != nil {
				return c, ctx.Err()
			}
		}
	}
	if o.BreakdownDuration <= 0 {
		return c, nil
	}
	bare, err := newJail(o, cgroups{}, false)
	if err != nil {
		return c, err
	}
	truePath, err := filepath.EvalSymlinks("/usr/bin/true")
	if err != nil {
		truePath = "/bin/true"
	}
	steps := []struct {
		name string
		argv func(int) []string
	}{
		{"python -c pass, no jail", func(int) []string { return []string{full.python, "-I", "-S", "-c", "pass"} }},
		{"python -c 'import json', no jail", func(int) []string { return []string{full.python, "-I", "-S", "-c", ceilingScript} }},
		{"nsjail /usr/bin/true, no cgroups, no seccomp", func(i int) []string {
			return append([]string{bare.nsjail}, bare.args(o.UIDBase+i, []string{truePath}, truePath)...)
		}},
		{"nsjail /usr/bin/true, no seccomp", func(i int) []string {
			j := full
			j.seccomp = ""
			return append([]string{j.nsjail}, j.args(o.UIDBase+i, []string{truePath}, truePath)...)
		}},
		{"nsjail /usr/bin/true", func(i int) []string {
			return append([]string{full.nsjail}, full.args(o.UIDBase+i, []string{truePath}, truePath)...)
		}},
		{"nsjail python -c pass", py("pass")},
		{"nsjail python -c 'import json'", py(ceilingScript)},
	}
	for _, s := range steps {
		r := spawnLoops(ctx, s.name, 1, o.BreakdownDuration, s.argv)
		logf("bench: breakdown %-45s %6.1f ms wall, %6.1f ms CPU per spawn (%d ok, %d failed)", r.Name, r.WallMs, r.CPUMs, r.Spawns, r.Failures)
		c.Breakdown = append(c.Breakdown, r)
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
	}
	return c, nil
}

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/secure-script-executor/executor/jailproc"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ceilingScript is what a ceiling jail runs: the yardstick, an
// interpreter that imports json.
const ceilingScript = "import json"

// newJails makes jailproc supervisors with the server's default limits, so
// that a ceiling jail is built by the same code, with the same options, as a
// server's jail; only the program differs. cgroups and seccomp can be left
// out for the breakdown of a spawn's cost.
func newJails(o Options, parent string, cgroups, seccomp bool) (*jailproc.Supervisor, error) {
	if st, err := os.Stat(o.Nsjail); err != nil || st.IsDir() {
		return nil, fmt.Errorf("nsjail not found at %s (run `make setup`)", o.Nsjail)
	}
	cfg := jailproc.Config{
		NsjailPath:   o.Nsjail,
		PythonBin:    o.Python,
		Cgroups:      jailproc.CgroupsRequired,
		CgroupRoot:   o.CgroupRoot,
		CgroupParent: parent,
		CPUMsPerSec:  1000, // the server's default
	}
	if !cgroups {
		cfg.Cgroups = jailproc.CgroupsOff
	}
	if !seccomp {
		cfg.SeccompPolicy = jailproc.SeccompNone
	}
	// The uid range is for Start, which the bench does not use: every loop
	// gets its own uid through CommandLine.
	return jailproc.New(cfg, jailproc.UIDRange{Base: o.UIDBase, Size: 1})
}

// cgroupParents lists the parent groups jailproc created for parent.
func cgroupParents(root, parent string) []string {
	var dirs []string
	for _, d := range []string{filepath.Join(root, "memory", parent), filepath.Join(root, "pids", parent), filepath.Join(root, "cpu", parent), filepath.Join(root, parent)} {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
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
	parent := fmt.Sprintf("%s-ceiling-%d", o.Prefix, os.Getpid())
	defer func() {
		if err := removeCgroupDirs(cgroupParents(o.CgroupRoot, parent)); err != nil {
			logf("bench: cleaning up cgroups: %v", err)
		}
	}()
	full, err := newJails(o, parent, true, true)
	if err != nil {
		return c, fmt.Errorf("the ceiling jails: %w", err)
	}
	defer full.Close()
	for _, w := range []struct {
		script string
		into   *[]SpawnResult
	}{{ceilingScript, &c.ImportJSON}, {"pass", &c.Pass}} {
		for _, n := range o.Loops {
			r := spawnLoops(ctx, "nsjail python -c '"+w.script+"'", n, o.CeilingDuration, jailedPython(o, full, w.script))
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
	c.Breakdown, err = measureBreakdown(ctx, o, parent, full, logf)
	return c, err
}

// jailCommand is the command line of loop i: argv in a jail of s.
func jailCommand(o Options, s *jailproc.Supervisor, extraBinds []string, argv ...string) func(int) []string {
	return func(i int) []string {
		return append([]string{o.Nsjail}, s.CommandLine(o.UIDBase+i, extraBinds, argv...)...)
	}
}

func jailedPython(o Options, s *jailproc.Supervisor, script string) func(int) []string {
	return jailCommand(o, s, nil, s.PythonBin(), "-I", "-S", "-c", script)
}

// measureBreakdown measures what one spawn costs, one layer at a time.
func measureBreakdown(ctx context.Context, o Options, parent string, full *jailproc.Supervisor, logf func(string, ...any)) ([]SpawnResult, error) {
	bare, err := newJails(o, parent, false, false)
	if err != nil {
		return nil, err
	}
	defer bare.Close()
	noSeccomp, err := newJails(o, parent, true, false)
	if err != nil {
		return nil, err
	}
	defer noSeccomp.Close()
	truePath, err := filepath.EvalSymlinks("/usr/bin/true")
	if err != nil {
		truePath = "/bin/true"
	}
	trueBind, python := []string{truePath}, full.PythonBin()
	steps := []struct {
		name string
		argv func(int) []string
	}{
		{"python -c pass, no jail", func(int) []string { return []string{python, "-I", "-S", "-c", "pass"} }},
		{"python -c 'import json', no jail", func(int) []string { return []string{python, "-I", "-S", "-c", ceilingScript} }},
		{"nsjail /usr/bin/true, no cgroups, no seccomp", jailCommand(o, bare, trueBind, truePath)},
		{"nsjail /usr/bin/true, no seccomp", jailCommand(o, noSeccomp, trueBind, truePath)},
		{"nsjail /usr/bin/true", jailCommand(o, full, trueBind, truePath)},
		{"nsjail python -c pass", jailedPython(o, full, "pass")},
		{"nsjail python -c 'import json'", jailedPython(o, full, ceilingScript)},
	}
	var out []SpawnResult
	for _, s := range steps {
		r := spawnLoops(ctx, s.name, 1, o.BreakdownDuration, s.argv)
		logf("bench: breakdown %-45s %6.1f ms wall, %6.1f ms CPU per spawn (%d ok, %d failed)", r.Name, r.WallMs, r.CPUMs, r.Spawns, r.Failures)
		out = append(out, r)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

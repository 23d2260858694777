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

	// SeccompPolicy is the path of a kafel policy file. Default "" applies
	// DefaultSeccompPolicy; SeccompNone disables filtering.
	SeccompPolicy string

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

const mib = 1 << 20

func (c Config) withDefaults() Config {
	if c.PythonBin == "" {
		c.PythonBin = "/usr/bin/python3"
	}
	if c.Timeout == 0 {
		c.Timeout = executor.DefaultTimeout
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 10 * time.Second
	}
	if c.MaxLifetime == 0 {
		c.MaxLifetime = 10 * time.Minute
	}
	if c.MemoryLimit == 0 {
		c.MemoryLimit = 256 * mib
	}
	if c.AddressSpaceLimit == 0 {
		c.AddressSpaceLimit = 1024 * mib
	}
	if c.MaxProcs == 0 {
		c.MaxProcs = 32
	}
	if c.MaxOpenFiles == 0 {
		c.MaxOpenFiles = 64
	}
	if c.TmpSize == 0 {
		c.TmpSize = 16 * mib
	}
	if c.MaxStdout == 0 {
		c.MaxStdout = mib
	}
	if c.MaxStderr == 0 {
		c.MaxStderr = mib
	}
	if c.MaxResult == 0 {
		c.MaxResult = 4 * mib
	}
	if c.Cgroups == "" {
		c.Cgroups = CgroupsAuto
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "executor"
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
	return c
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
	if c.Timeout < 0 || c.CPUMsPerSec < 0 || c.StartTimeout < 0 || c.MemoryLimit < 0 || c.AddressSpaceLimit < 0 ||
		c.MaxProcs < 0 || c.MaxOpenFiles < 0 || c.TmpSize < 0 || c.MaxStdout < 0 || c.MaxStderr < 0 || c.MaxResult < 0 {
		return errors.New("limits must not be negative")
	}
	if c.MaxLifetime <= c.Timeout {
		return fmt.Errorf("max lifetime %s must exceed the run timeout %s", c.MaxLifetime, c.Timeout)
	}
	return nil
}

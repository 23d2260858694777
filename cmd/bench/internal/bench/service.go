package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one bin/executor started by the bench.
type server struct {
	mode    string
	base    string // http://127.0.0.1:port
	cmd     *exec.Cmd
	done    chan struct{}
	logFile *os.File
	cgDirs  []string
	client  *http.Client
	script  string // loadtest -script (empty: its hello example)
}

// startServer starts bin/executor on a free loopback port, with extra flags
// after the bench's own. EXECUTOR_* and PORT are removed from its
// environment so that only these flags count.
func startServer(o Options, mode string, uidBase int, logPath string, extra ...string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	parent := fmt.Sprintf("%s-%s-%d-%d", o.Prefix, mode, os.Getpid(), uidBase)
	pool, isolation := mode, "jail"
	if strings.HasPrefix(mode, "cell") {
		pool, isolation = "warm", "cell"
	}
	args := []string{
		"--pool-mode", pool,
		"--isolation", isolation,
		"--host", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--log-level", "warn",
		"--uid-base", strconv.Itoa(uidBase),
		"--cgroup-parent", parent,
		"--cgroup-root", o.CgroupRoot,
		"--nsjail-path", o.Nsjail,
		"--python-bin", o.Python,
		"--acquire-timeout", o.AcquireTimeout.String(),
		"--shutdown-grace", "5s",
	}
	if o.WarmWorkers > 0 && pool == "warm" {
		args = append(args, "--warm-workers", strconv.Itoa(o.WarmWorkers))
	}
	if o.MaxWorkers > 0 {
		args = append(args, "--max-workers", strconv.Itoa(o.MaxWorkers))
	}
	args = append(args, extra...)
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.Executor, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EXECUTOR_") && !strings.HasPrefix(kv, "PORT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	fmt.Fprintf(lf, "# %s %s\n", o.Executor, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", o.Executor, err)
	}
	s := &server{mode: mode, base: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd, done: make(chan struct{}), logFile: lf,
		client: &http.Client{Timeout: 5 * time.Second}}
	if _, err := os.Stat(filepath.Join(o.CgroupRoot, "cgroup.controllers")); err == nil {
		s.cgDirs = []string{filepath.Join(o.CgroupRoot, parent)}
	} else {
		s.cgDirs = []string{filepath.Join(o.CgroupRoot, "memory", parent), filepath.Join(o.CgroupRoot, "pids", parent), filepath.Join(o.CgroupRoot, "cpu", parent)}
	}
	go func() { cmd.Wait(); close(s.done) }()
	return s, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls /readyz until it answers 200.
func (s *server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("the %s server exited before it was ready (see %s)", s.mode, s.logFile.Name())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := s.client.Get(s.base + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the %s server was not ready after %v: %s (see %s)", s.mode, timeout, last, s.logFile.Name())
}

// metrics reads the unlabelled samples of /metrics.
func (s *server) metrics(ctx context.Context) (map[string]float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/metrics", nil)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m, sc.Err()
}

const (
	idleMetric   = "executor_pool_idle_workers"
	targetMetric = "executor_pool_warm_target_workers"
)

// warmTarget is the pool's warm target as the server reports it.
func (s *server) warmTarget(ctx context.Context) (int, error) {
	m, err := s.metrics(ctx)
	if err != nil {
		return 0, err
	}
	t, ok := m[targetMetric]
	if !ok {
		return 0, fmt.Errorf("/metrics has no %s", targetMetric)
	}
	return int(t), nil
}

// waitWarm polls /metrics every interval until idle workers reach target,
// and returns how long that took.
func (s *server) waitWarm(ctx context.Context, target int, interval, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		m, err := s.metrics(ctx)
		if err == nil && m[idleMetric] >= float64(target) {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("idle workers did not reach %d within %v (last %v, err %v)", target, timeout, m[idleMetric], err)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(interval):
		}
	}
}

// stop sends SIGTERM, waits for the exit (SIGKILL after 15 s), then removes
// the server's cgroup parents.
func (s *server) stop() error {
	if s == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.logFile.Close()
	return removeCgroupDirs(s.cgDirs)
}

// LoadResult is the part of `loadtest -json` the bench uses (its field names
// are stable, docs/LOADTEST.md).
type LoadResult struct {
	Mode            string            `json:"mode"`
	TargetRate      int               `json:"target_rate"`
	Concurrency     int               `json:"concurrency"`
	DurationS       float64           `json:"duration_s"`
	WaitS           float64           `json:"wait_s"`
	Requests        uint64            `json:"requests"`
	WarmupRequests  uint64            `json:"warmup_requests"`
	Successes       uint64            `json:"successes"`
	Rate            float64           `json:"rate"`
	Throughput      float64           `json:"throughput"`
	Latency         Quantiles         `json:"latency_ms"`
	SuccessLatency  Quantiles         `json:"success_latency_ms"`
	StatusCodes     map[string]uint64 `json:"status_codes"`
	ErrorTypes      map[string]uint64 `json:"error_types"`
	TransportErrors uint64            `json:"transport_errors"`
	TransportEx     []string          `json:"transport_error_examples"`
	RetryAfter429   uint64            `json:"retry_after_429"`
	Interrupted     bool              `json:"interrupted"`
}

// Quantiles in milliseconds.
type Quantiles struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// loadtest runs bin/loadtest -json against the server and keeps its JSON
// output in outPath. rate 0 = closed loop with conc workers.
func (s *server) loadtest(ctx context.Context, o Options, rate, conc int, outPath string) (LoadResult, error) {
	args := []string{"-url", s.base + "/execute", "-rate", strconv.Itoa(rate), "-concurrency", strconv.Itoa(conc),
		"-duration", o.Duration.String(), "-warmup", o.Warmup.String(), "-json"}
	if s.script != "" {
		args = append(args, "-script", s.script)
	}
	cmd := exec.CommandContext(ctx, o.Loadtest, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var r LoadResult
	if werr := os.WriteFile(outPath, stdout.Bytes(), 0o644); werr != nil {
		return r, werr
	}
	if err != nil {
		return r, fmt.Errorf("%s %s: %v: %s", o.Loadtest, strings.Join(args, " "), err, lastLine(stderr.String()))
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return r, fmt.Errorf("loadtest output %s: %w", outPath, err)
	}
	if r.Requests == 0 {
		return r, errors.New("loadtest measured no request")
	}
	return r, nil
}

// idlePSS is the proportional set size of the server's descendants (nsjail,
// the workers, a cell's zygote), in MiB, divided by idle: what one idle
// warm worker costs in memory, its shared pages shared out. The server's
// own memory is not counted.
func (s *server) idlePSS(idle int) (float64, error) {
	parent := map[int]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 1 {
				parent[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	root := s.cmd.Process.Pid
	var kib float64
	for pid := range parent {
		if pid == root || !descends(parent, pid, root) {
			continue
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
		if err != nil {
			continue // gone meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				v, _ := strconv.ParseFloat(f[1], 64)
				kib += v
			}
		}
	}
	if kib == 0 || idle <= 0 {
		return 0, fmt.Errorf("no memory found below the %s server (pid %d)", s.mode, root)
	}
	return kib / 1024 / float64(idle), nil
}

func descends(parent map[int]int, pid, root int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		pid = parent[pid]
		if pid == root {
			return true
		}
	}
	return false
}

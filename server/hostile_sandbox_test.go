package server

// Hostile scripts against the sandbox: limits, host files, the server's
// environment, the network, other tenants, processes and seccomp.

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

func (h *hostile) testLimits(t *testing.T) {
	h.runCases(t, []hcase{
		{name: "cpu_loop", script: "def main():\n    while True:\n        pass\n",
			extra: []string{`"timeout_ms": 1000`}, status: 422, typ: "timeout", msg: "1000 ms"},
		{name: "sleep_forever", script: "import time\ndef main():\n    time.sleep(10**6)\n",
			extra: []string{`"timeout_ms": 1000`}, status: 422, typ: "timeout", msg: "1000 ms"},
		// Under RLIMIT_AS (1 GiB), over the 128 MiB cgroup: the OOM killer.
		{name: "one_huge_allocation", script: "def main():\n    b = b'\\x01' * (600 << 20)\n    return len(b)\n",
			status: 422, typ: "memory_limit"},
		// Over RLIMIT_AS: Python's own MemoryError.
		{name: "allocation_over_address_space", script: "def main():\n    return len(bytearray(8 << 30))\n",
			status: 422, typ: "memory_limit"},
		{name: "slow_growth", script: "import time\ndef main():\n    xs = []\n    while True:\n        xs.append(b'y' * (1 << 20))\n        time.sleep(0.002)\n",
			status: 422, typ: "memory_limit"},
		// Every child forks too: RLIMIT_NPROC and pids.max (32) stop it.
		{name: "fork_bomb", script: "import os\ndef main():\n    while True:\n        os.fork()\n",
			status: 422, typ: "runtime_error", msg: "BlockingIOError",
			check: func(t *testing.T, r response) { waitNoStrayJailProcesses(t) }},
		// Children that outlive main die with the jail (the worker is pid 1
		// of the jail's pid namespace, and the jail is single use).
		{name: "forked_children_outlive_main", script: "import os, time\ndef main():\n    for i in range(20):\n        if os.fork() == 0:\n            os.setsid()\n            while True:\n                time.sleep(1)\n    return 'forked'\n",
			status: 200, check: func(t *testing.T, r response) {
				if r.Body["result"] != "forked" {
					t.Fatalf("%s", r.Raw)
				}
				waitNoStrayJailProcesses(t)
			}},
		{name: "thread_bomb", script: "import threading, time\ndef main():\n    while True:\n        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n",
			status: 422, typ: "runtime_error", msg: "can't start new thread",
			check: func(t *testing.T, r response) { waitNoStrayJailProcesses(t) }},
		// RLIMIT_FSIZE = --tmp-size; Python ignores SIGXFSZ, so the write
		// fails with EFBIG.
		{name: "file_over_tmp_size", script: "def main():\n    with open('/tmp/big', 'wb') as f:\n        for i in range(6):\n            f.write(b'x' * (1 << 20))\n",
			status: 422, typ: "runtime_error", msg: "[Errno 27] File too large"},
		{name: "fill_tmp", script: "def main():\n    for i in range(100):\n        with open('/tmp/f%d' % i, 'wb') as f:\n            f.write(b'x' * (1 << 19))\n",
			status: 422, typ: "runtime_error", msg: "[Errno 28] No space left on device"},
		{name: "open_files_over_rlimit_nofile", script: "import os\ndef main():\n    fds = []\n    while True:\n        fds.append(os.pipe())\n",
			status: 422, typ: "runtime_error", msg: "[Errno 24] Too many open files"},
		{name: "stdout_flood", script: "def main():\n    while True:\n        print('x' * 1000)\n",
			status: 422, typ: "output_limit", msg: "stdout"},
		{name: "stderr_flood", script: "import sys\ndef main():\n    while True:\n        sys.stderr.write('e' * 1000)\n",
			status: 422, typ: "output_limit", msg: "stderr"},
		{name: "raw_write_fd1", script: "import os\ndef main():\n    while True:\n        os.write(1, b'o' * 4096)\n",
			status: 422, typ: "output_limit", msg: "stdout"},
		{name: "raw_write_fd2", script: "import os\ndef main():\n    while True:\n        os.write(2, b'e' * 4096)\n",
			status: 422, typ: "output_limit", msg: "stderr"},
		{name: "giant_result", script: "def main():\n    return ['x' * 1000] * 10000\n",
			status: 422, typ: "output_limit"},
	})

	// 31 processes burning CPU (no cgroup CPU quota: they may use every
	// core until the timeout) must not starve another tenant's request.
	t.Run("cpu_burn_in_every_process", func(t *testing.T) {
		done := make(chan response, 1)
		go func() {
			done <- h.execute(t, "import os\ndef main():\n    for i in range(30):\n        if os.fork() == 0:\n            break\n    while True:\n        pass\n", `"timeout_ms": 1500`)
		}()
		// The burn has begun: the script forked in its jail. (Waiting for
		// all 31 could outlast the burner's 1.5 s on a loaded machine.)
		waitForkedJail(t)
		start := time.Now()
		h.hello(t)
		// Answered while the burner still runs (it is killed at 1.5 s):
		// not starved until the other jail was gone.
		select {
		case r := <-done:
			t.Errorf("hello took %s: answered only after the burner ended (%s)", time.Since(start), r.Raw)
			return
		default:
		}
		t.Logf("hello answered in %s while 31 processes burned CPU", time.Since(start).Round(time.Millisecond))
		h.expect(t, <-done, 422, "timeout")
		waitNoStrayJailProcesses(t)
		h.hello(t)
	})
}

func (h *hostile) testFiles(t *testing.T) {
	exe, _ := os.Executable()
	wd, _ := os.Getwd()
	paths := []string{"/etc/shadow", "/etc/passwd", "/etc/hosts", "/etc/resolv.conf", "/root", "/root/.ssh",
		"/home", "/work", "/work/main", "/var", "/var/log", "/sys", "/dev", "/boot", "/run",
		exe, wd, testenv.Nsjail(t), os.Getenv("TMPDIR"),
		fmt.Sprintf("/proc/%d/environ", os.Getpid()), fmt.Sprintf("/proc/%d/exe", os.Getpid())}
	in, _ := json.Marshal(paths)
	h.runCases(t, []hcase{
		{name: "host_files_are_not_there", script: `import os
def main(paths):
    out = {}
    for p in paths:
        try:
            if os.path.isdir(p):
                out[p] = 'listed %d' % len(os.listdir(p))
            else:
                out[p] = 'read %d' % len(open(p, 'rb').read())
        except OSError as e:
            out[p] = type(e).__name__
    etc = sorted(os.listdir('/etc')) if os.path.isdir('/etc') else []
    alt = '/etc/alternatives'
    files = [n for n in (os.listdir(alt) if os.path.isdir(alt) else []) if not os.path.islink(os.path.join(alt, n))]
    return {'paths': out, 'root': sorted(os.listdir('/')), 'etc': etc, 'alt_files': files, 'exe1': os.readlink('/proc/1/exe')}
`, extra: []string{`"input": ` + string(in)}, status: 200, check: func(t *testing.T, r response) {
			var got struct {
				Paths    map[string]string
				Root     []string
				Etc      []string
				AltFiles []string `json:"alt_files"`
				Exe1     string
			}
			result(t, r, &got)
			for _, p := range paths {
				if v := got.Paths[p]; v != "FileNotFoundError" && v != "PermissionError" {
					t.Errorf("%s inside the jail: %s", p, v)
				}
			}
			// The jail's root holds the interpreter's folders, its /tmp and
			// /proc (and /opt for a worker file, /etc for the symbolic links
			// of /etc/alternatives only), nothing of the host.
			allowed := map[string]bool{"lib": true, "lib64": true, "usr": true, "tmp": true, "proc": true, "opt": true, "etc": true}
			if len(got.Etc) > 1 || len(got.Etc) == 1 && got.Etc[0] != "alternatives" || len(got.AltFiles) > 1 || len(got.AltFiles) == 1 && got.AltFiles[0] != "README" {
				t.Errorf("the jail's /etc holds %v (regular files in alternatives: %v)", got.Etc, got.AltFiles)
			}
			for _, e := range got.Root {
				if !allowed[e] {
					t.Errorf("the jail's / holds %q: %v", e, got.Root)
				}
			}
			// pid 1 of the jail is the worker itself: /proc/1/exe is the
			// interpreter, never the server's binary.
			if !strings.HasPrefix(got.Exe1, "/usr/bin/python3") {
				t.Errorf("/proc/1/exe = %q", got.Exe1)
			}
		}},
		{name: "proc_shows_only_the_jail", script: `import os
def main():
    pids = sorted(p for p in os.listdir('/proc') if p.isdigit())
    env = {}
    for p in pids:
        try:
            env[p] = sorted(k.split('=', 1)[0] for k in open('/proc/%s/environ' % p).read().split('\0') if k)
        except OSError as e:
            env[p] = type(e).__name__
    return {'pids': pids, 'environ': env, 'self': os.getpid(), 'ppid': os.getppid()}
`, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"pids": ["1"], "self": 1, "ppid": 0,
				"environ": {"1": ["HOME", "LANG", "MALLOC_ARENA_MAX", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"]}}`)
		}},
		// The mounts are read-only: nothing a script writes outside its own
		// /tmp can reach the next run (or the host).
		{name: "no_writes_outside_tmp", script: `import os
def main():
    out = {}
    for p in ['/x', '/usr/lib/python3.11/os.py', '/usr/bin/python3', '/proc/sys/kernel/hostname', '/lib/evil.so', '/proc/self/oom_score_adj']:
        try:
            with open(p, 'a') as f:
                f.write('-1000' if 'oom' in p else 'x')
            out[p] = 'written'
        except OSError as e:
            out[p] = type(e).__name__
    return out
`, status: 200, check: func(t *testing.T, r response) {
			var got map[string]string
			result(t, r, &got)
			for p, v := range got {
				// oom_score_adj: lowering it needs CAP_SYS_RESOURCE.
				if v != "OSError" && v != "PermissionError" && v != "FileNotFoundError" {
					t.Errorf("%s: %s", p, v)
				}
			}
		}},
	})
}

func (h *hostile) testEnv(t *testing.T) {
	if os.Getenv(hostileSecretVar) != hostileSecretValue {
		t.Fatal("the secret is not in the server's environment: this test would prove nothing")
	}
	h.runCases(t, []hcase{
		{name: "server_secret_not_visible", script: `import os
def main(secret_name):
    seen = []
    if secret_name in os.environ:
        seen.append('os.environ')
    for p in ['/proc/self/environ', '/proc/1/environ', '/proc/self/cmdline', '/proc/1/cmdline']:
        if secret_name.encode() in open(p, 'rb').read():
            seen.append(p)
    return {'seen': seen, 'keys': sorted(os.environ)}
`, extra: []string{`"input": "` + hostileSecretVar + `"`}, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"seen": [], "keys": ["HOME", "LANG", "MALLOC_ARENA_MAX", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"]}`)
			if strings.Contains(r.Raw, hostileSecretValue) {
				t.Fatalf("the secret leaked: %s", r.Raw)
			}
		}},
		// The value itself, wherever a script could print it from.
		{name: "server_secret_value_not_findable", script: `import os
def main(value):
    v = value.encode()
    hits = []
    for root in ['/proc', '/tmp']:
        for p in os.listdir(root):
            for leaf in ['environ', 'cmdline']:
                path = os.path.join(root, p, leaf)
                try:
                    if v in open(path, 'rb').read():
                        hits.append(path)
                except OSError:
                    pass
    return {'hits': hits, 'env': any(value in x for x in os.environ.values())}
`, extra: []string{`"input": "` + hostileSecretValue + `"`}, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"hits": [], "env": false}`)
		}},
	})
}

func (h *hostile) testNet(t *testing.T) {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(h.url, "http://"))
	tryPy := `import socket, errno
def tr(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return [type(e).__name__, e.errno]
def conn(host, port):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    s.settimeout(1)
    try:
        s.connect((host, port))
    finally:
        s.close()
`
	// seccomp denies socket() of every family (and the jail's network
	// namespace has no interface up: ENETUNREACH behind it).
	unreachable := `["PermissionError", 1]`
	// An abstract unix socket of the host: abstract names belong to the
	// network namespace, so the jail must not reach it.
	abstract := fmt.Sprintf("executor-hostile-%d", os.Getpid())
	ln, err := net.Listen("unix", "@"+abstract)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("host secret\n"))
			c.Close()
		}
	}()
	h.runCases(t, []hcase{
		{name: "server_own_port", script: tryPy + "def main(port):\n    return tr(lambda: conn('127.0.0.1', port))\n",
			extra: []string{`"input": ` + port}, status: 200,
			check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], unreachable) }},
		{name: "other_loopback_ports", script: tryPy + "def main():\n    return {str(p): tr(lambda: conn('127.0.0.1', p)) for p in (22, 53, 80, 443, 2024, 6379, 8080)}\n",
			status: 200, check: func(t *testing.T, r response) {
				var got map[string]any
				result(t, r, &got)
				for p, v := range got {
					if fmt.Sprint(v) != "[PermissionError 1]" {
						t.Errorf("port %s: %v", p, v)
					}
				}
			}},
		{name: "ipv6_loopback_and_external_hosts", script: tryPy + "def main():\n    return [tr(lambda: conn('::1', 80)), tr(lambda: conn('1.1.1.1', 443)), tr(lambda: conn('169.254.169.254', 80))]\n",
			status: 200, check: func(t *testing.T, r response) {
				jsonEq(t, r.Body["result"], `[["PermissionError", 1], ["PermissionError", 1], ["PermissionError", 1]]`)
			}},
		{name: "dns_resolution", script: "import socket\ndef main():\n    out = []\n    for name in ('example.com', 'localhost', 'metadata.google.internal'):\n        try:\n            socket.getaddrinfo(name, 80)\n            out.append('resolved')\n        except socket.gaierror as e:\n            out.append(type(e).__name__)\n    return out\n",
			status: 200, check: func(t *testing.T, r response) {
				jsonEq(t, r.Body["result"], `["gaierror", "gaierror", "gaierror"]`)
			}},
		{name: "udp_out", script: tryPy + "def main():\n    return tr(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53)))\n",
			status: 200, check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], unreachable) }},
		{name: "raw_and_packet_sockets", script: tryPy + "def main():\n    return [tr(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)), tr(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))]\n",
			status: 200, check: func(t *testing.T, r response) {
				jsonEq(t, r.Body["result"], `[["PermissionError", 1], ["PermissionError", 1]]`)
			}},
		{name: "host_abstract_unix_socket", script: tryPy + "def main(name):\n    def c():\n        s = socket.socket(socket.AF_UNIX)\n        s.connect('\\0' + name)\n        return s.recv(100)\n    return tr(c)\n",
			extra: []string{`"input": "` + abstract + `"`}, status: 200,
			check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], `["PermissionError", 1]`) }},
	})
	// A socket the script binds and listens on lives in the jail's own
	// network namespace: nothing on the host can connect to it.
	t.Run("listener_inside_not_reachable_from_host", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		free := l.Addr().(*net.TCPAddr).Port
		l.Close()
		done := make(chan response, 1)
		go func() {
			done <- h.execute(t, tryPy+`import time
def main(port):
    def listen():
        s = socket.socket()
        s.bind(('0.0.0.0', port))
        s.listen()
    r = tr(listen)
    time.sleep(1.0)
    return {'listen': r, 'self_connect': tr(lambda: conn('127.0.0.1', port))}
`, fmt.Sprintf(`"input": %d`, free))
		}()
		waitJailProcesses(t, "the script to listen and sleep", 1, sleeping)
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", free), time.Second); err == nil {
			c.Close()
			t.Errorf("the host reached a port the script listens on inside the jail")
		}
		r := <-done
		h.expect(t, r, 200, "")
		jsonEq(t, r.Body["result"], `{"listen": ["PermissionError", 1], "self_connect": ["PermissionError", 1]}`)
		h.hello(t)
	})
}

// tenantA leaves traces everywhere another tenant might look, then waits.
const tenantA = `import os, time, ctypes, socket
def main():
    open('/tmp/secret', 'w').write('card 4242 4242 4242 4242')
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind('\0tenant-a')
        s.listen()
        sock = 'listening'
    except OSError as e:
        sock = e.errno  # seccomp: no socket() in a jail
    libc = ctypes.CDLL(None, use_errno=True)
    shm = libc.shmget(0x5ec, 4096, 0o1000 | 0o666)  # IPC_CREAT; seccomp: EPERM
    time.sleep(1.5)
    return {'file': open('/tmp/secret').read(), 'socket': sock, 'shm': shm >= 0, 'pid': os.getpid()}
`

// tenantB hunts for A's files, processes, sockets and shared memory.
const tenantB = `import os, ctypes, socket
def main():
    out = {'tmp': sorted(os.listdir('/tmp')), 'pids': sorted(p for p in os.listdir('/proc') if p.isdigit())}
    found = []
    for pid in range(1, 400):
        for path in ('/proc/%d/root/tmp/secret' % pid, '/proc/%d/cwd/secret' % pid, '/proc/%d/environ' % pid):
            try:
                data = open(path, 'rb').read()
                if b'4242' in data or b'tenant' in data:
                    found.append(path)
            except OSError:
                pass
    out['found'] = found
    killed = []
    for pid in range(2, 400):
        try:
            os.kill(pid, 9)
            killed.append(pid)
        except ProcessLookupError:
            pass
    out['killed'] = killed
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect('\0tenant-a')
        out['socket'] = 'connected'
    except OSError as e:
        out['socket'] = e.errno
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.shmget(0x5ec, 0, 0)
    out['shm'] = [r, ctypes.get_errno()]
    return out
`

func (h *hostile) testTenants(t *testing.T) {
	t.Run("b_hunts_for_a", func(t *testing.T) {
		done := make(chan response, 1)
		go func() { done <- h.execute(t, tenantA) }()
		waitJailProcesses(t, "A to write its secret and sleep", 1, sleeping)
		b := h.execute(t, tenantB)
		a := <-done
		h.expect(t, b, 200, "")
		h.expect(t, a, 200, "")
		// B sees its own empty /tmp, only itself in /proc, finds nothing and
		// kills nothing. Neither can create a socket or SysV shared memory
		// (seccomp: EPERM), so there is no name for the other to reach.
		jsonEq(t, b.Body["result"], `{"tmp": [], "pids": ["1"], "found": [], "killed": [], "socket": 1, "shm": [-1, 1]}`)
		// A ran undisturbed to its end.
		jsonEq(t, a.Body["result"], `{"file": "card 4242 4242 4242 4242", "socket": 1, "shm": false, "pid": 1}`)
		h.hello(t)
	})
}

func (h *hostile) testProc(t *testing.T) {
	h.runCases(t, []hcase{
		// The worker is pid 1 of its pid namespace and alone in it:
		// kill(-1) finds nobody to signal.
		{name: "kill_minus_one", script: "import os\ndef main():\n    os.kill(-1, 9)\n    return 'alive'\n",
			status: 422, typ: "runtime_error", msg: "ProcessLookupError"},
		// getppid() is 0 for a namespace's init (its parent is outside), so
		// kill(0, 9) is its own process group; init ignores signals it has no
		// handler for, even SIGKILL, when they come from inside.
		{name: "kill_parent", script: "import os\ndef main():\n    os.kill(os.getppid(), 9)\n    return ['alive', os.getppid()]\n",
			status: 200, check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], `["alive", 0]`) }},
		{name: "kill_init", script: "import os\ndef main():\n    os.kill(1, 9)\n    return 'alive'\n",
			status: 200, check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], `"alive"`) }},
		{name: "child_kills_init", script: "import os\ndef main():\n    pid = os.fork()\n    if pid == 0:\n        os.kill(1, 9)\n        os._exit(0)\n    os.waitpid(pid, 0)\n    return 'alive'\n",
			status: 200, check: func(t *testing.T, r response) { jsonEq(t, r.Body["result"], `"alive"`) }},
		// A crash of the interpreter is the script's own failure.
		{name: "segfault", script: "import ctypes\ndef main():\n    return ctypes.string_at(0)\n",
			status: 422, typ: "runtime_error", msg: "segmentation fault"},
		{name: "setrlimit_above_hard_limit", script: `import resource
def main():
    out = {}
    for name in ('RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_STACK'):
        r = getattr(resource, name)
        soft, hard = resource.getrlimit(r)
        try:
            resource.setrlimit(r, (hard + 1, hard + 1))
            out[name] = 'raised'
        except ValueError:
            out[name] = 'ValueError'
    return out
`, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"RLIMIT_NOFILE": "ValueError", "RLIMIT_NPROC": "ValueError", "RLIMIT_AS": "ValueError",
				"RLIMIT_CPU": "ValueError", "RLIMIT_FSIZE": "ValueError", "RLIMIT_STACK": "ValueError"}`)
		}},
		{name: "setuid_root_and_capabilities", script: `import os
def main():
    out = {}
    for name, f in (('setuid', lambda: os.setuid(0)), ('setgid', lambda: os.setgid(0)),
                    ('setgroups', lambda: os.setgroups([0])), ('chown', lambda: os.chown('/tmp', 0, 0)),
                    ('chroot', lambda: os.chroot('/tmp'))):
        try:
            f()
            out[name] = 'ok'
        except OSError as e:
            out[name] = e.errno
    status = dict(l.split(':\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\t' in l)
    for k in ('Uid', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp'):
        out[k] = status[k]
    return out
`, status: 200, check: func(t *testing.T, r response) {
			// EINVAL (22): uid/gid 0 does not exist in the jail's user
			// namespace. In a cell it is the zygote's: EPERM (1).
			var got map[string]any
			result(t, r, &got)
			no := "22"
			if cellMode() {
				no = "1"
			}
			checkJailUID(t, got["Uid"])
			delete(got, "Uid")
			jsonEq(t, got, `{"setuid": `+no+`, "setgid": `+no+`, "setgroups": 1, "chown": `+no+`, "chroot": 1,
				"CapInh": "0000000000000000", "CapPrm": "0000000000000000",
				"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapAmb": "0000000000000000",
				"NoNewPrivs": "1", "Seccomp": "2"}`)
		}},
	})

	// From the host: every jailed process runs as an unprivileged uid of the
	// range, with no capability, no_new_privs and a seccomp filter.
	t.Run("host_view_of_a_running_jail", func(t *testing.T) {
		done := make(chan response, 1)
		go func() { done <- h.execute(t, "import time\ndef main():\n    time.sleep(1.0)\n    return 'slept'\n") }()
		waitJailProcesses(t, "the script to sleep", 1, sleeping)
		n := 0
		procs := hostProcesses()
		byPID := procsByPID(procs)
		for _, p := range procs {
			if len(p.uids) != 4 || !inJailRange(p.uids[0]) {
				continue
			}
			if inCellSetUp(p, byPID) {
				continue // a replacement child being set up, as nsjail's below
			}
			if p.name == "nsjail" {
				// A replacement jail being set up: nsjail's child has taken
				// the jail's uid and not yet dropped the rest and exec'd the
				// worker. What runs a script is checked once it has.
				continue
			}
			if isZygote(p) {
				// A cell's zygote keeps its capabilities inside the cell's
				// own user namespace (it makes the children's namespaces);
				// it never runs a script. It is still no_new_privs and
				// filtered.
				if p.fields["NoNewPrivs"] != "1" || p.fields["Seccomp"] != "2" {
					t.Errorf("zygote %d: NoNewPrivs %q Seccomp %q", p.pid, p.fields["NoNewPrivs"], p.fields["Seccomp"])
				}
				continue
			}
			n++
			for _, u := range p.uids {
				if u != p.uids[0] {
					t.Errorf("pid %d has mixed uids %v", p.pid, p.uids)
				}
			}
			for k, want := range map[string]string{"CapEff": "0000000000000000", "CapPrm": "0000000000000000",
				"CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
				if p.fields[k] != want {
					t.Errorf("pid %d (%s, uid %d): %s = %q, want %q", p.pid, p.name, p.uids[0], k, p.fields[k], want)
				}
			}
		}
		if n == 0 {
			t.Fatal("no jailed process found on the host: the check proved nothing")
		}
		r := <-done
		h.expect(t, r, 200, "")
		h.hello(t)
	})

	t.Run("no_two_live_jails_share_a_uid", func(t *testing.T) {
		const n = 4
		var wg sync.WaitGroup
		results := make([]response, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i] = h.execute(t, "import time\ndef main(i):\n    time.sleep(1.2)\n    return i\n", fmt.Sprintf(`"input": %d`, i))
			}(i)
		}
		waitJailProcesses(t, "four scripts to sleep", n, sleeping)
		if cellMode() {
			checkCellChildrenUIDs(t, n)
			wg.Wait()
			for i, r := range results {
				h.expect(t, r, 200, "")
				jsonEq(t, r.Body["result"], fmt.Sprint(i))
			}
			h.hello(t)
			return
		}
		procs := hostProcesses()
		jailOf := map[int]int{} // nsjail pid -> mapped host uid
		owner := map[int]int{}  // host uid -> nsjail pid
		for _, p := range procs {
			if p.name != "nsjail" || p.ppid != os.Getpid() {
				continue
			}
			uid, ok := nsjailUID(p.cmdline)
			if !ok || !inJailRange(uid) {
				continue
			}
			if other, dup := owner[uid]; dup {
				t.Errorf("nsjail %d and %d both map their jail to uid %d", other, p.pid, uid)
			}
			owner[uid] = p.pid
			jailOf[p.pid] = uid
		}
		running := 0
		for _, p := range procs {
			if len(p.uids) == 0 || !inJailRange(p.uids[0]) {
				continue
			}
			if strings.HasPrefix(p.fields["State"], "Z") {
				continue // exited, waiting to be reaped: not a live jail
			}
			want, ok := jailOf[p.ppid]
			if !ok {
				// The scan reads /proc in pid order and is not atomic: a
				// replacement jail spawned while it ran can have its
				// nsjail missed and its interpreter seen. Look again.
				for _, q := range hostProcesses() {
					if q.pid == p.ppid && q.name == "nsjail" && q.ppid == os.Getpid() {
						want, ok = nsjailUID(q.cmdline)
					}
				}
			}
			if !ok {
				t.Errorf("pid %d runs as jail uid %d but its parent %d is not one of our nsjails", p.pid, p.uids[0], p.ppid)
			} else if p.uids[0] != want {
				t.Errorf("pid %d runs as uid %d, its jail's uid is %d", p.pid, p.uids[0], want)
			}
			running++
		}
		wg.Wait()
		if len(jailOf) < n || running < n {
			t.Fatalf("saw %d jails and %d jailed processes while %d scripts slept", len(jailOf), running, n)
		}
		for i, r := range results {
			h.expect(t, r, 200, "")
			jsonEq(t, r.Body["result"], fmt.Sprint(i))
		}
		h.hello(t)
	})
}

// seccompProbe calls each denied syscall through ctypes and returns
// [return value, errno] per call.
const seccompProbe = `import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(*a):
    ctypes.set_errno(0)
    r = libc.syscall(*[ctypes.c_long(x) for x in a])
    return [r, ctypes.get_errno()]
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
def main():
    return {
        'unshare': sc(272, CLONE_NEWUSER),
        'mount': sc(165, 0, 0, 0, 0, 0),
        'ptrace': sc(101, 0, 0, 0, 0),
        'bpf': sc(321, 0, 0, 0),
        'keyctl': sc(250, 0, 0, 0),
        'perf_event_open': sc(298, 0, 0, -1, -1, 0),
        'userfaultfd': sc(323, 0),
        'init_module': sc(175, 0, 0, 0),
        'reboot': sc(169, 0xfee1dead, 672274793, 0x4321fedc, 0),
        'clone_newuser': sc(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
        'io_uring_setup': sc(425, 1, 0),
        'setns': sc(308, 0, 0),
        'clone3': sc(435, 0, 0),
    }
`

// int80Probe makes a 32-bit (i386 ABI) syscall with int 0x80 from machine
// code in an executable mapping. i386 clone is 120, which on x86_64 is
// getpgid: a filter that compared numbers without checking the ABI would let
// clone(CLONE_NEWUSER) through.
const int80Probe = `import ctypes, mmap
# push rbx; mov rax,rdi; mov rbx,rsi; mov r8,rcx; mov rcx,rdx; mov rdx,r8; int 0x80; pop rbx; ret
code = bytes.fromhex('534889f84889f34989c84889d14c89c2cd805bc3')
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
f = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
def main():
    return f(120, 0x10000000 | 17, 0, 0)
`

func (h *hostile) testSeccomp(t *testing.T) {
	h.runCases(t, []hcase{
		{name: "denied_syscalls_fail_with_eperm", script: seccompProbe, status: 200, check: func(t *testing.T, r response) {
			var got map[string][2]int
			result(t, r, &got)
			names := make([]string, 0, len(got))
			for k := range got {
				names = append(names, k)
			}
			sort.Strings(names)
			if len(names) != 13 {
				t.Fatalf("probed %v", names)
			}
			for _, name := range names {
				want := [2]int{-1, 1} // EPERM
				if name == "clone3" {
					want = [2]int{-1, 38} // ENOSYS: libc falls back to clone
				}
				if got[name] != want {
					t.Errorf("%s returned %v, want %v", name, got[name], want)
				}
			}
		}},
		// nsjail/kafel's arch check kills any non-x86_64 ABI call.
		{name: "i386_int80_syscall_is_killed", script: int80Probe, status: 422, typ: "runtime_error", msg: "system call"},
		// x32 numbers (bit 30 set) share the x86_64 arch value; the policy
		// kills the whole x32 range (before, they reached the kernel).
		{name: "x32_syscall_is_killed", script: seccompProbe + "def main():\n    return sc(0x40000000 | 272, CLONE_NEWUSER)\n",
			status: 422, typ: "runtime_error", msg: "system call"},
		// Execution of a program written to /tmp is allowed (Python could do
		// the same syscalls through ctypes) but inherits every restriction.
		{name: "exec_from_tmp_keeps_the_sandbox", script: `import os, subprocess, sys
def main():
    with open('/tmp/probe', 'w') as f:
        f.write('#!' + sys.executable + ' -S\nimport os\nprint(os.getuid(), open("/proc/self/status").read().count("CapEff:\\t0000000000000000"), os.path.exists("/etc/passwd"), len([p for p in os.listdir("/proc") if p.isdigit()]))\n')
    os.chmod('/tmp/probe', 0o755)
    out = subprocess.run(['/tmp/probe'], capture_output=True, text=True, timeout=5)
    return out.stdout.split() + [out.stderr[-300:]]
`, status: 200, check: func(t *testing.T, r response) {
			var got []string
			result(t, r, &got)
			if len(got) == 5 {
				checkJailUID(t, strings.Repeat(got[0]+"\t", 3)+got[0])
				got[0] = "uid"
			}
			jsonEq(t, got, `["uid", "1", "False", "2", ""]`)
		}},
	})
}

// cellMode reports whether the suite runs against cell isolation.
func cellMode() bool { return hostileIsolation == "cell" }

// checkJailUID checks a /proc status Uid line (real, effective, saved, fs)
// seen inside the sandbox: 1000 in a jail; in a cell, the child's own uid,
// 1000 or above, never the zygote's 0.
func checkJailUID(t *testing.T, v any) {
	t.Helper()
	s, _ := v.(string)
	f := strings.Split(s, "\t")
	if len(f) != 4 || f[0] != f[1] || f[0] != f[2] || f[0] != f[3] {
		t.Fatalf("Uid %q: want four equal uids", s)
	}
	uid, err := strconv.Atoi(f[0])
	if err != nil || uid < 1000 || (!cellMode() && uid != 1000) {
		t.Errorf("Uid %q: want 1000 (cell: 1000 or above)", s)
	}
}

// isZygote reports whether p is a cell's zygote: the process nsjail started
// with a z1; configuration (its children inherit the command line, not the
// parent).
func isZygote(p procInfo) bool {
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.ppid))
	if strings.TrimSpace(string(comm)) != "nsjail" {
		return false
	}
	for _, a := range p.cmdline {
		if strings.HasPrefix(a, "z1;") {
			return true
		}
	}
	return false
}

// inCellSetUp reports whether p is a cell child its zygote is still setting
// up: forked, still the zygote's uid (uid 0 of the cell, with the cell's
// capabilities), not yet dropped to its own. It runs zygote code only: a
// script reaches a child after its ready line, once the server has checked
// from /proc that it dropped everything (jailproc.checkSandboxed).
func inCellSetUp(p procInfo, byPID map[int]procInfo) bool {
	z, ok := byPID[p.ppid]
	return ok && len(p.uids) > 0 && len(z.uids) > 0 && p.uids[0] == z.uids[0] && isZygote(z)
}

func procsByPID(procs []procInfo) map[int]procInfo {
	m := make(map[int]procInfo, len(procs))
	for _, p := range procs {
		m[p.pid] = p
	}
	return m
}

// checkCellChildrenUIDs checks, from the host, that the live cell children
// (each the pid 1 of its own pid namespace, with whatever its script forked)
// never share a uid: one uid per pid namespace, one pid namespace per uid.
func checkCellChildrenUIDs(t *testing.T, atLeast int) {
	t.Helper()
	uidOf := map[string]int{} // pid namespace -> uid
	nsOf := map[int]string{}  // uid -> pid namespace
	procs := hostProcesses()
	byPID := procsByPID(procs)
	for _, p := range procs {
		if len(p.uids) == 0 || !inJailRange(p.uids[0]) || isZygote(p) || inCellSetUp(p, byPID) || strings.HasPrefix(p.fields["State"], "Z") {
			continue
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.pid))
		if err != nil {
			continue // exited meanwhile
		}
		if u, ok := uidOf[ns]; ok && u != p.uids[0] {
			t.Errorf("pid namespace %s holds uids %d and %d", ns, u, p.uids[0])
		}
		if other, ok := nsOf[p.uids[0]]; ok && other != ns {
			t.Errorf("uid %d runs in two children: pid namespaces %s and %s", p.uids[0], other, ns)
		}
		uidOf[ns], nsOf[p.uids[0]] = p.uids[0], ns
	}
	if len(uidOf) < atLeast {
		t.Fatalf("saw %d cell children while %d scripts slept", len(uidOf), atLeast)
	}
}

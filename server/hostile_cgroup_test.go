package server

// Hostile scripts against how a run's end is classified: the worker's own
// cgroup, never the rusage of nsjail, says whether a SIGKILL was the OOM
// killer.

import (
	"runtime"
	"testing"
)

func (h *hostile) testCgroup(t *testing.T) {
	// The server's (this test process's) peak RSS above the memory limit: a
	// vforked nsjail's rusage reports it as the jail's own, and once made
	// every SIGKILL a memory_limit.
	b := make([]byte, 300<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	defer runtime.KeepAlive(b)
	// Workers spawned after the inflation (the warm set is 4).
	for range 2 * hostileMaxWorkers {
		h.hello(t)
	}
	// nsjail reports exit status 137 exactly like a SIGKILL: without an OOM
	// kill in the worker's group it is the CPU rlimit's timeout. A cell's
	// zygote reaps the child itself and knows it exited: runtime_error.
	exit137 := hcase{name: "exit_137_with_a_large_server_rss", script: "import os\ndef main():\n    os._exit(137)\n",
		status: 422, typ: "timeout"}
	if cellMode() {
		exit137.typ, exit137.msg = "runtime_error", "exit status 137"
	}
	h.runCases(t, []hcase{
		{name: "cpu_rlimit_kill_with_a_large_server_rss",
			script: "import resource\ndef main():\n    resource.setrlimit(resource.RLIMIT_CPU, (1, 1))\n    while True:\n        pass\n",
			status: 422, typ: "timeout"},
		exit137,
		{name: "memory_hog_with_a_large_server_rss", script: "def main():\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 20))\n",
			status: 422, typ: "memory_limit", msg: "128 MiB"},
	})
}

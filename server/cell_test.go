package server

import (
	"fmt"

	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/secure-script-executor/executor/internal/testenv"
)

// zygotesOf lists the host pids of the cell zygotes of the server whose uid
// range starts at uidBase: a process of that range with a z1; configuration
// whose parent is an nsjail started by this process (other servers of the
// package, such as the shared one, run zygotes too).
func zygotesOf(t *testing.T, uidBase int) []int {
	t.Helper()
	var out []int
	procs := hostProcesses()
	byPID := procsByPID(procs)
	for _, p := range procs {
		parent, ok := byPID[p.ppid]
		if !ok || parent.name != "nsjail" || parent.ppid != os.Getpid() {
			continue
		}
		if len(p.uids) == 0 || p.uids[0] < uidBase || p.uids[0] >= uidBase+uidRangeSize(4) {
			continue
		}
		for _, a := range p.cmdline {
			if strings.HasPrefix(a, "z1;") {
				out = append(out, p.pid)
			}
		}
	}
	return out
}

func TestKillingTheZygoteMidRunAnswersATypedErrorAndTheServerGoesOnFromANewCell(t *testing.T) {
	uidBase := testenv.UIDBase(t)
	s := startServer(t, nil, "--isolation", "cell", "--warm-workers", "2", "--max-workers", "4", "--uid-base", strconv.Itoa(uidBase))
	s.waitReady()
	before := zygotesOf(t, uidBase)
	if len(before) != 1 {
		t.Fatalf("zygotes of this server: %v, want one", before)
	}
	done := make(chan response, 1)
	// The script renames itself once it runs, so the test knows when.
	marker := fmt.Sprintf("zkill-%d", os.Getpid()%1000000)
	go func() {
		done <- s.execute(fmt.Sprintf("import ctypes, time\ndef main():\n    ctypes.CDLL(None).prctl(15, b'%s', 0, 0, 0)\n    time.sleep(30)\n", marker))
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !anyProcessNamed(marker) {
		if time.Now().After(deadline) {
			t.Fatal("the script never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := syscall.Kill(before[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.Status != 422 || errType(r) != "runtime_error" || !strings.Contains(errMessage(r), "sandbox cell") {
			t.Fatalf("the run under the killed zygote: %d %s", r.Status, r.Raw)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the run under the killed zygote never answered")
	}
	// The idle workers died with the cell; the next request comes from a new
	// one.
	r := s.execute(hello)
	if r.Status != 200 || r.Body["stdout"] != "hello\n" {
		t.Fatalf("after the zygote died: %d %s", r.Status, r.Raw)
	}
	after := zygotesOf(t, uidBase)
	if len(after) != 1 || after[0] == before[0] {
		t.Fatalf("zygotes after: %v (before %v), want one new one", after, before)
	}
}

func anyProcessNamed(name string) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%s/comm", e.Name()))
		if strings.TrimSpace(string(b)) == name {
			return true
		}
	}
	return false
}

package server

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/secure-script-executor/executor/internal/testenv"
)

func TestASecondServerOnTheSameUIDBaseExitsWithStatus2AndNamesTheFix(t *testing.T) {
	base := strconv.Itoa(testenv.UIDBase(t))
	first := startServer(t, nil, "--uid-base", base, "--warm-workers", "1", "--max-workers", "2")
	var stderr syncBuffer
	args := []string{"--host", "127.0.0.1", "--port", "0", "--nsjail-path", testenv.Nsjail(t), "--uid-base", base,
		"--warm-workers", "1", "--max-workers", "2", "--cgroup-parent", testenv.CgroupParent(t, "uidclaim")}
	code := Main(context.Background(), args, nil, &stderr, nil)
	if code != 2 {
		t.Fatalf("exit code %d, want 2:\n%s", code, stderr.String())
	}
	for _, want := range []string{"host uids " + base + "-", "already in use", "--uid-base"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	// The first server is unaffected.
	first.waitReady()
	if r := first.execute(hello); r.Status != 200 {
		t.Fatalf("the first server: %d %s", r.Status, r.Raw)
	}
}

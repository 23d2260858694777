package server

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

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

func TestTwoServersWithTheDefaultUIDBaseEachClaimARangeOfTheirOwn(t *testing.T) {
	claimed := regexp.MustCompile(`"msg":"host uid range claimed for jails"[^\n]*"uids":"(\d+)-(\d+)"`)
	var ranges [][2]int
	for i := range 2 {
		// No --uid-base: the default, which the second server must move
		// past while the first holds it.
		args := []string{"--host", "127.0.0.1", "--port", "0", "--nsjail-path", testenv.Nsjail(t),
			"--warm-workers", "1", "--max-workers", "2", "--cgroup-parent", testenv.CgroupParent(t, "uiddefault"),
			"--log-format", "json"}
		logs := &syncBuffer{}
		ctx, cancel := context.WithCancel(context.Background())
		code := make(chan int, 1)
		started := make(chan *App, 1)
		go func() { code <- Main(ctx, args, nil, logs, started) }()
		select {
		case <-started:
		case c := <-code:
			cancel()
			t.Fatalf("server %d exited with %d:\n%s", i, c, logs)
		case <-time.After(30 * time.Second):
			cancel()
			t.Fatalf("server %d did not start:\n%s", i, logs)
		}
		t.Cleanup(func() {
			cancel()
			if c := <-code; c != 0 {
				t.Errorf("server %d exited with %d", i, c)
			}
		})
		m := claimed.FindStringSubmatch(logs.String())
		if m == nil {
			t.Fatalf("server %d logged no claimed range:\n%s", i, logs)
		}
		lo, _ := strconv.Atoi(m[1])
		hi, _ := strconv.Atoi(m[2])
		ranges = append(ranges, [2]int{lo, hi})
	}
	if a, b := ranges[0], ranges[1]; a[0] <= b[1] && b[0] <= a[1] {
		t.Fatalf("the two servers claimed overlapping uid ranges %v and %v", a, b)
	}
}

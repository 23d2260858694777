package jailproc_test

import (
	"context"
	"testing"

	"github.com/secure-script-executor/executor"
	"github.com/secure-script-executor/executor/internal/testenv"
	"github.com/secure-script-executor/executor/jailproc"
)

// newCellSupervisor is a supervisor in cell isolation with a uid range of
// size uids (four cell blocks).
func newCellSupervisor(t *testing.T, cfg jailproc.Config, size int) *jailproc.Supervisor {
	t.Helper()
	cfg.Isolation = jailproc.IsolationCell
	if cfg.NsjailPath == "" {
		cfg.NsjailPath = testenv.Nsjail(t)
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = testenv.CgroupParent(t, "jailproc-cell")
	}
	s, err := jailproc.New(cfg, jailproc.UIDRange{Base: testenv.UIDBase(t), Size: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func runCell(t *testing.T, s *jailproc.Supervisor, script string) executor.Result {
	t.Helper()
	p, err := s.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	res, err := p.Run(context.Background(), executor.Request{Mode: executor.ModeSingle, Script: []byte(script)})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestACellChildRunsTheHelloScript(t *testing.T) {
	s := newCellSupervisor(t, jailproc.Config{}, 64)
	res := runCell(t, s, "import os\ndef main():\n    print('hello')\n    return [os.getpid(), os.getuid()]\n")
	if res.Status != executor.StatusOK || string(res.Stdout) != "hello\n" {
		t.Fatalf("%+v stdout %q stderr %q", res, res.Stdout, res.Stderr)
	}
	t.Logf("result %s", res.Value)
}

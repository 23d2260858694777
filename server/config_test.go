package server

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secure-script-executor/executor/internal/testenv"
)

// runMain runs Main with a context that is already cancelled (should it
// start after all, it stops at once) and returns its exit code and stderr.
func runMain(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code := Main(ctx, args, environ(env), &stderr, nil)
	return code, stderr.String()
}

// Settings that can never work are found at start: exit 2 with a message
// naming the setting and the fix, instead of a server that retries forever
// and reports the sandbox unavailable.
func TestSettingsThatCanNeverWorkExitTwoAtStartNamingTheSettingAndTheFix(t *testing.T) {
	nsjail := testenv.Nsjail(t)
	notExec := filepath.Join(t.TempDir(), "nsjail")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"seccomp policy that does not exist", nil, []string{"--seccomp-policy", "/nonexistent"},
			[]string{"--seccomp-policy", "EXECUTOR_SECCOMP_POLICY", "/nonexistent", "cannot read it", "built-in policy"}},
		{"relative nsjail path", nil, []string{"--nsjail-path", "bin/nsjail"},
			[]string{"--nsjail-path", "EXECUTOR_NSJAIL_PATH", "bin/nsjail", "absolute path"}},
		{"nsjail path that is a folder", nil, []string{"--nsjail-path", "/tmp"},
			[]string{"--nsjail-path", "folder", "nsjail binary"}},
		{"nsjail path that is not executable", nil, []string{"--nsjail-path", notExec},
			[]string{"--nsjail-path", notExec, "not executable"}},
		{"python that does not exist", nil, []string{"--nsjail-path", nsjail, "--python-bin", "/nonexistent/python3"},
			[]string{"--python-bin", "EXECUTOR_PYTHON_BIN", "no such file", "interpreter"}},
		{"python path entry that is no folder", map[string]string{"EXECUTOR_PYTHON_PATH": "/nonexistent/site"}, []string{"--nsjail-path", nsjail},
			[]string{"--python-path", "EXECUTOR_PYTHON_PATH", "/nonexistent/site is not a folder"}},
		{"preload typo", map[string]string{"EXECUTOR_PRELOAD": "json,numpyy"}, []string{"--nsjail-path", nsjail},
			[]string{"--preload", "EXECUTOR_PRELOAD", "cannot import numpyy", "No module named 'numpyy'", "--python-path"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stderr := runMain(t, c.env, c.args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "SANDBOX UNAVAILABLE") || strings.Count(stderr, "\n") > 3 {
				t.Errorf("want one clear configuration message:\n%s", stderr)
			}
		})
	}
}

func TestAnInvalidPortNamesTheVariableItWasReadFrom(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PORT": "99999"}, "invalid --port (PORT) 99999"},
		{map[string]string{"EXECUTOR_PORT": "99999"}, "invalid --port (EXECUTOR_PORT) 99999"},
	} {
		code, stderr := runMain(t, c.env)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("env %v: exit %d, stderr %q; want 2 and %q", c.env, code, stderr, c.want)
		}
	}
}

func TestVersionPrintsTheVersionAndExitsZero(t *testing.T) {
	code, out := runMain(t, nil, "--version")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	bi := buildInfo()
	if want := "executor " + bi.Version + " ("; !strings.HasPrefix(out, want) || !strings.Contains(out, bi.GoVersion) {
		t.Fatalf("--version printed %q, want it to start with %q and name %s", out, want, bi.GoVersion)
	}
}

// One server start checks two things an operator sees at start: a warning
// for a mistyped variable, and the same version in executor_build_info as
// executor --version prints.
func TestAMistypedVariableIsWarnedAboutAndBuildInfoShowsTheVersionOfVersion(t *testing.T) {
	s := startServer(t, map[string]string{"EXECUTOR_TIMOUT": "1s", "EXECUTOR_TIMEOUT": "3s"})
	want := "unknown environment variable EXECUTOR_TIMOUT is ignored; did you mean EXECUTOR_TIMEOUT?"
	if logs := s.logs.String(); !strings.Contains(logs, want) {
		t.Errorf("log lacks %q:\n%s", want, logs)
	}
	if strings.Contains(s.logs.String(), "unknown environment variable EXECUTOR_TIMEOUT ") {
		t.Errorf("a known variable was reported as unknown:\n%s", s.logs)
	}
	_, version := runMain(t, nil, "--version")
	v := strings.Fields(version)[1]
	if series := `version="` + v + `"`; !strings.Contains(scrape(t, s), series) {
		t.Errorf("executor_build_info lacks %s (executor --version: %q)", series, version)
	}
}

package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const setupScript = "../scripts/setup.sh"

// blocker is what scripts/setup.sh puts at policy-rc.d while apt installs.
const blocker = "#!/bin/sh\nexit 101\n"

// withServicesBlocked sources scripts/setup.sh (which then only defines its
// functions) and runs `with_services_blocked sh -c cmd` with the policy-rc.d
// path pointed at policyPath, so the machine's real /usr/sbin/policy-rc.d is
// never touched. It returns the exit status and combined output.
func withServicesBlocked(t *testing.T, policyPath, cmd string) (int, string) {
	t.Helper()
	script, err := filepath.Abs(setupScript)
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command("bash", "-c", `set -euo pipefail; source "$1"; with_services_blocked sh -c "$2"`, "bash", script, cmd)
	c.Env = append(os.Environ(), "SETUP_POLICY_RC_D="+policyPath, "POLICY="+policyPath)
	out, err := c.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}

// The command must see the refusing policy-rc.d; afterwards the file the
// image shipped (Debian container images have one) is back, byte for byte
// and with its mode, and no saved copy is left beside it.
func TestSetupRestoresAnExistingPolicyRcDAfterInstalling(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy-rc.d")
	original := "#!/bin/sh\n# the image's own policy\nexit 0\n"
	if err := os.WriteFile(policy, []byte(original), 0o700); err != nil {
		t.Fatal(err)
	}
	code, out := withServicesBlocked(t, policy, `cat "$POLICY"; test -x "$POLICY"`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if out != blocker {
		t.Errorf("during the install policy-rc.d was %q, want %q", out, blocker)
	}
	assertPolicy(t, policy, original, 0o700)
	assertOnlyEntries(t, dir, "policy-rc.d")
}

func TestSetupLeavesNoPolicyRcDWhereThereWasNone(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy-rc.d")
	code, out := withServicesBlocked(t, policy, `cat "$POLICY"`)
	if code != 0 || out != blocker {
		t.Fatalf("exit %d, policy-rc.d during the install %q", code, out)
	}
	assertOnlyEntries(t, dir)
}

// apt-get failing (no network, a broken package) must not cost the image
// its policy-rc.d either, and the failure must reach the caller.
func TestSetupRestoresPolicyRcDWhenTheInstallFails(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy-rc.d")
	if err := os.WriteFile(policy, []byte("keep me\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if code, out := withServicesBlocked(t, policy, "exit 7"); code != 7 {
		t.Errorf("exit %d, want the command's 7: %s", code, out)
	}
	assertPolicy(t, policy, "keep me\n", 0o755)
	assertOnlyEntries(t, dir, "policy-rc.d")

	// Killed mid-install (Ctrl-C reaches the script too): still restored.
	if code, out := withServicesBlocked(t, policy, `kill -TERM $PPID; exit 0`); code == 0 {
		t.Errorf("a terminated setup exited 0: %s", out)
	}
	assertPolicy(t, policy, "keep me\n", 0o755)
	assertOnlyEntries(t, dir, "policy-rc.d")
}

func TestSetupRestoresAPolicyRcDSymlinkAsASymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real-policy")
	if err := os.WriteFile(target, []byte("target\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "policy-rc.d")
	if err := os.Symlink(target, policy); err != nil {
		t.Fatal(err)
	}
	if code, out := withServicesBlocked(t, policy, `cat "$POLICY"`); code != 0 || out != blocker {
		t.Fatalf("exit %d, policy-rc.d during the install %q", code, out)
	}
	if got, err := os.Readlink(policy); err != nil || got != target {
		t.Errorf("policy-rc.d is no longer the symlink to %s: %q, %v", target, got, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "target\n" {
		t.Errorf("the symlink's target was overwritten: %q", b)
	}
	assertOnlyEntries(t, dir, "policy-rc.d", "real-policy")
}

func TestSetupUsesTheRealPolicyRcDPathByDefault(t *testing.T) {
	b, err := os.ReadFile(setupScript)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "${SETUP_POLICY_RC_D:-/usr/sbin/policy-rc.d}") {
		t.Error("scripts/setup.sh no longer defaults to /usr/sbin/policy-rc.d (the path invoke-rc.d reads)")
	}
}

func assertPolicy(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("policy-rc.d gone after setup: %v", err)
	}
	if fi.Mode() != mode {
		t.Errorf("policy-rc.d mode %v after setup, was %v", fi.Mode(), mode)
	}
	if b, _ := os.ReadFile(path); string(b) != content {
		t.Errorf("policy-rc.d after setup is %q, was %q", b, content)
	}
}

func assertOnlyEntries(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("folder holds %v after setup, want %v", got, want)
	}
}

package jailproc

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
)

// seccompData lays out struct seccomp_data so that x/net/bpf's VM, which
// loads 32-bit words big-endian, reads the values the kernel would read
// natively (little-endian) at the same offsets.
func seccompData(arch, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	return b
}

func runFilter(t *testing.T, prog []bpf.Instruction, arch, nr uint32, args ...uint64) uint32 {
	t.Helper()
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	r, err := vm.Run(seccompData(arch, nr, args...))
	if err != nil {
		t.Fatal(err)
	}
	return uint32(r)
}

func defaultRules(t *testing.T) []seccompRule {
	t.Helper()
	rules, err := parsePolicy(DefaultSeccompPolicy)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

func TestChildFilterDeniesEveryCallTheJailPolicyDeniesAndSocket(t *testing.T) {
	rules := defaultRules(t)
	prog, err := childFilter(rules)
	if err != nil {
		t.Fatal(err)
	}
	names := 0
	for _, r := range rules {
		if r.name == "" || r.cond != nil {
			continue
		}
		names++
		want := uint32(seccompRetErrno | r.errno)
		if got := runFilter(t, prog, auditArchX86_64, r.nr); got != want {
			t.Errorf("%s (%d): filter returns %#x, want %#x", r.name, r.nr, got, want)
		}
	}
	if names < 50 {
		t.Fatalf("parsed only %d unconditional rules from seccomp.kafel", names)
	}
	for name, want := range map[string]uint32{
		"mount": seccompRetErrno | 1, "unshare": seccompRetErrno | 1, "ptrace": seccompRetErrno | 1,
		"socket": seccompRetErrno | 1, "clone3": seccompRetErrno | 38,
		"read": seccompRetAllow, "execve": seccompRetAllow, "setresuid": seccompRetAllow,
	} {
		if got := runFilter(t, prog, auditArchX86_64, sysnums[name]); got != want {
			t.Errorf("%s: filter returns %#x, want %#x", name, got, want)
		}
	}
	if got := runFilter(t, prog, auditArchX86_64, sysnums["socketpair"], 1 /* AF_UNIX */, 1, 0); got != seccompRetAllow {
		t.Errorf("socketpair(AF_UNIX): filter returns %#x, want allow", got)
	}
}

func TestChildFilterDeniesCloneOnlyWithANewNamespaceFlag(t *testing.T) {
	prog, err := childFilter(defaultRules(t))
	if err != nil {
		t.Fatal(err)
	}
	const cloneThread = 0x3d0f00 // what pthread_create passes
	for _, c := range []struct {
		flags uint64
		want  uint32
	}{
		{cloneThread, seccompRetAllow},
		{0x11 /* SIGCHLD: fork */, seccompRetAllow},
		{0x10000000 /* CLONE_NEWUSER */, seccompRetErrno | 1},
		{0x20000 | 0x11 /* CLONE_NEWNS */, seccompRetErrno | 1},
		{0x40000000 /* CLONE_NEWNET */, seccompRetErrno | 1},
		{1<<40 | 0x11 /* high bits only: the kernel ignores them */, seccompRetAllow},
	} {
		if got := runFilter(t, prog, auditArchX86_64, sysnums["clone"], c.flags); got != c.want {
			t.Errorf("clone(%#x): filter returns %#x, want %#x", c.flags, got, c.want)
		}
	}
}

func TestChildFilterKillsForeignArchitecturesAndX32Numbers(t *testing.T) {
	prog, err := childFilter(defaultRules(t))
	if err != nil {
		t.Fatal(err)
	}
	const auditArchI386 = 0x40000003
	if got := runFilter(t, prog, auditArchI386, 1); got != seccompRetKillProcess {
		t.Errorf("an i386 call: filter returns %#x, want kill", got)
	}
	for _, nr := range []uint32{0x40000000, 0x40000000 + 272 /* x32 unshare */, 0x40000223, 0x7fffffff} {
		if got := runFilter(t, prog, auditArchX86_64, nr); got != seccompRetKillProcess {
			t.Errorf("syscall %#x: filter returns %#x, want kill", nr, got)
		}
	}
}

func TestCellPolicyAllowsOnlyTheZygotesNeedsBeyondTheJailPolicy(t *testing.T) {
	rules := defaultRules(t)
	cell := cellPolicy(rules)
	back, err := parsePolicy(cell)
	if err != nil {
		t.Fatalf("the generated cell policy does not parse: %v\n%s", err, cell)
	}
	kept := map[string]bool{}
	for _, r := range back {
		kept[r.name+"/"+r.action] = true
	}
	for _, r := range rules {
		if r.name == "" {
			continue
		}
		if cellRelaxed[r.name] == kept[r.name+"/"+r.action] {
			t.Errorf("%s: relaxed=%v but kept in the cell policy=%v", r.name, cellRelaxed[r.name], kept[r.name+"/"+r.action])
		}
	}
	if len(back) != len(rules)-len(cellRelaxed) {
		t.Errorf("cell policy has %d rules, want %d", len(back), len(rules)-len(cellRelaxed))
	}
	if !strings.Contains(cell, "clone { (clone_flags & 0x7e020000) != 0 }") {
		t.Errorf("cell policy lost clone's namespace-flag rule:\n%s", cell)
	}
}

func TestParsePolicyRejectsWhatItDoesNotUnderstand(t *testing.T) {
	for _, src := range []string{
		"POLICY p { ERRNO(1) { nosuchcall } } USE p DEFAULT ALLOW",
		"POLICY p { TRAP { ptrace } } USE p DEFAULT ALLOW",
		"POLICY p { ERRNO(1) { clone { clone_flags > 3 } } } USE p DEFAULT ALLOW",
		"POLICY p { ERRNO(1) { ptrace } } USE p DEFAULT KILL",
		"POLICY p { ERRNO(1) { clone { (clone_flags & 1) != 0 && 1 == 1 } } } USE p DEFAULT ALLOW",
	} {
		if _, err := parsePolicy(src); err == nil {
			t.Errorf("parsePolicy(%q) accepted it", src)
		}
	}
}

func TestAReadyChildThatKeptAPrivilegeIsRefused(t *testing.T) {
	// This test process is no sandboxed child: root, capabilities, no filter.
	err := checkSandboxed(os.Getpid(), os.Getuid())
	if err == nil || !strings.Contains(err.Error(), "not sandboxed") {
		t.Fatalf("checkSandboxed of the test process: %v", err)
	}
	if err := checkSandboxed(os.Getpid(), os.Getuid()+1); err == nil || !strings.Contains(err.Error(), "Uid") {
		t.Fatalf("a uid that is not the child's: %v", err)
	}
}

func TestChildFilterComparesTheLowHalfOfA32BitArgumentAsTheKernelDoes(t *testing.T) {
	rules, err := parsePolicy("POLICY p { ERRNO(1) { fcntl { cmd == 1026 }, socketpair { family != 1 } } } USE p DEFAULT ALLOW")
	if err != nil {
		t.Fatal(err)
	}
	prog, err := childFilter(rules)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		nr   uint32
		args []uint64
		want uint32
	}{
		{"fcntl F_NOTIFY", sysnums["fcntl"], []uint64{3, 1026}, seccompRetErrno | 1},
		{"fcntl F_NOTIFY with bit 32 set", sysnums["fcntl"], []uint64{3, 1<<32 | 1026}, seccompRetErrno | 1},
		{"fcntl F_GETFL", sysnums["fcntl"], []uint64{3, 3}, seccompRetAllow},
		{"socketpair(AF_UNIX)", sysnums["socketpair"], []uint64{1, 1, 0}, seccompRetAllow},
		{"socketpair(AF_UNIX) with bit 32 set", sysnums["socketpair"], []uint64{1<<32 | 1, 1, 0}, seccompRetAllow},
		{"socketpair(AF_INET)", sysnums["socketpair"], []uint64{2, 1, 0}, seccompRetErrno | 1},
	} {
		if got := runFilter(t, prog, auditArchX86_64, c.nr, c.args...); got != c.want {
			t.Errorf("%s: filter returns %#x, want %#x", c.name, got, c.want)
		}
	}
}

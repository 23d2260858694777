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

// cellAndChild compiles what a cell child runs under: the cell's policy as
// nsjail gets it (parsed back from its kafel text) and the child's own filter.
func cellAndChild(t *testing.T, rules []seccompRule) (cell, child []bpf.Instruction) {
	t.Helper()
	var back []seccompRule // no policy: the cell has no filter of its own
	if len(rules) > 0 {
		var err error
		if back, err = parsePolicy(cellPolicy(rules)); err != nil {
			t.Fatal(err)
		}
	}
	cell, err := childFilter(back)
	if err != nil {
		t.Fatal(err)
	}
	if child, err = childFilter(childRules(rules)); err != nil {
		t.Fatal(err)
	}
	return cell, child
}

// stacked is the kernel's verdict for a process under two filters: the most
// restrictive action wins (actions compare as signed 32-bit numbers, KILL
// lowest, ALLOW highest) and, between equal actions, the data of the filter
// installed last (the child's).
func stacked(t *testing.T, cell, child []bpf.Instruction, arch, nr uint32, args ...uint64) uint32 {
	t.Helper()
	c, k := runFilter(t, cell, arch, nr, args...), runFilter(t, child, arch, nr, args...)
	if int32(c&0xffff0000) < int32(k&0xffff0000) {
		return c
	}
	return k
}

func TestACellsFilterAndAChildsOwnFilterTogetherAreTheJailPolicyPlusSocket(t *testing.T) {
	rules := defaultRules(t)
	cell, child := cellAndChild(t, rules)
	jail, err := childFilter(append(append([]seccompRule(nil), rules...), childExtra...))
	if err != nil {
		t.Fatal(err)
	}
	// Every syscall number, with no arguments and with each value a rule's
	// condition looks at in each argument position.
	values := []uint64{0, 1, 2, 0x11, 0x3d0f00, 1<<40 | 0x11}
	for _, r := range rules {
		if r.cond != nil {
			values = append(values, r.cond.val, r.cond.val|r.cond.mask, r.cond.val^1)
		}
	}
	for nr := uint32(0); nr < 600; nr++ {
		for pos := 0; pos < 4; pos++ {
			for _, v := range values {
				args := make([]uint64, 6)
				args[pos] = v
				want := runFilter(t, jail, auditArchX86_64, nr, args...)
				if got := stacked(t, cell, child, auditArchX86_64, nr, args...); got != want {
					t.Fatalf("syscall %d with args %x: cell + child filters return %#x, the jail policy plus socket %#x", nr, args, got, want)
				}
			}
		}
	}
	for name, want := range map[string]uint32{
		"mount": seccompRetErrno | 1, "unshare": seccompRetErrno | 1, "setns": seccompRetErrno | 1, "ptrace": seccompRetErrno | 1,
		"socket": seccompRetErrno | 1, "clone3": seccompRetErrno | 38,
		"read": seccompRetAllow, "execve": seccompRetAllow, "setresuid": seccompRetAllow,
	} {
		if got := stacked(t, cell, child, auditArchX86_64, sysnums[name]); got != want {
			t.Errorf("%s: filters return %#x, want %#x", name, got, want)
		}
	}
	if got := stacked(t, cell, child, auditArchX86_64, sysnums["socketpair"], 1 /* AF_UNIX */, 1, 0); got != seccompRetAllow {
		t.Errorf("socketpair(AF_UNIX): filters return %#x, want allow", got)
	}
}

func TestAChildsOwnFilterHoldsOnlyWhatTheCellsFilterLacks(t *testing.T) {
	rules := defaultRules(t)
	_, child := cellAndChild(t, rules)
	for name, want := range map[string]uint32{
		"mount": seccompRetErrno | 1, "unshare": seccompRetErrno | 1, "setns": seccompRetErrno | 1, "socket": seccompRetErrno | 1,
		// Denied by the cell's filter, which every child inherits.
		"ptrace": seccompRetAllow, "bpf": seccompRetAllow, "flock": seccompRetAllow,
	} {
		if got := runFilter(t, child, auditArchX86_64, sysnums[name]); got != want {
			t.Errorf("%s: the child's own filter returns %#x, want %#x", name, got, want)
		}
	}
	if len(child) > 32 {
		t.Errorf("the child's own filter has %d instructions; every child installs it, so it holds only the relaxed calls and socket", len(child))
	}
	// Without a policy (--seccomp-policy none) the relaxed calls and socket
	// are still denied to children: the zygote's needs are never theirs.
	_, bare := cellAndChild(t, nil)
	for _, name := range []string{"mount", "unshare", "setns", "socket"} {
		if got := runFilter(t, bare, auditArchX86_64, sysnums[name]); got != seccompRetErrno|1 {
			t.Errorf("no policy: %s returns %#x, want EPERM", name, got)
		}
	}
}

func TestChildFilterDeniesCloneOnlyWithANewNamespaceFlag(t *testing.T) {
	cell, child := cellAndChild(t, defaultRules(t))
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
		if got := stacked(t, cell, child, auditArchX86_64, sysnums["clone"], c.flags); got != c.want {
			t.Errorf("clone(%#x): filters return %#x, want %#x", c.flags, got, c.want)
		}
	}
}

func TestChildFilterKillsForeignArchitecturesAndX32Numbers(t *testing.T) {
	_, child := cellAndChild(t, defaultRules(t))
	const auditArchI386 = 0x40000003
	if got := runFilter(t, child, auditArchI386, 1); got != seccompRetKillProcess {
		t.Errorf("an i386 call: filter returns %#x, want kill", got)
	}
	for _, nr := range []uint32{0x40000000, 0x40000000 + 272 /* x32 unshare */, 0x40000223, 0x7fffffff} {
		if got := runFilter(t, child, auditArchX86_64, nr); got != seccompRetKillProcess {
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

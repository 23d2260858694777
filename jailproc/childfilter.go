package jailproc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/net/bpf"
)

// A cell's children must end up under exactly the jail's seccomp policy, but
// the zygote that makes them needs a few of the calls that policy denies
// (unshare and mount, to give each child its own namespaces, /tmp and /proc).
// Both come from one source, seccomp.kafel, so they cannot drift:
//
//   - parsePolicy reads the kafel text into rules;
//   - cellPolicy writes it back as kafel for the cell's nsjail, without the
//     rules of cellRelaxed (the zygote's needs);
//   - childRules are the rules on the relaxed calls plus childExtra (no
//     socket(2): children share the cell's empty network namespace; see
//     docs/SECURITY.md), and childFilter compiles them into the classic-BPF
//     program each child installs before it says it is ready. A child
//     inherits the cell's filter, filters stack and the most restrictive
//     answer wins, so a child's effective policy is the jail's policy plus
//     childExtra. The child's own filter holds only what the cell's lacks:
//     installing a filter costs the kernel time in proportion to its length
//     (it is checked, translated, JIT-compiled, and run once per syscall
//     number to fill its action cache), and every child installs one.
//
// Only the subset of kafel that seccomp.kafel uses is understood; anything
// else is an error at start (and in the tests), never a silently weaker
// filter.

// seccompRule denies one syscall, always or when its condition holds.
type seccompRule struct {
	action string // "ERRNO(n)" or "KILL"
	errno  uint32 // for ERRNO
	name   string // kafel name, or "" for a numbered SYSCALL[n]
	nr     uint32
	cond   *argCond // nil: always
}

// argCond is `(arg & mask) != 0`, `(arg & mask) == 0`, `arg == val` or
// `arg != val` on one syscall argument.
type argCond struct {
	text string // as written, for writing the kafel back
	arg  int
	mask uint64 // 0: compare the whole argument
	op   string // "==" or "!="
	val  uint64
}

// cellRelaxed are the calls the zygote needs to set up a child (unshare and
// mount for its namespaces, /tmp and /proc; setns back into the zygote's own
// pid namespace after each fork): the cell's nsjail policy allows them; every
// child's own filter denies them again.
var cellRelaxed = map[string]bool{"unshare": true, "mount": true, "setns": true}

// childExtra is denied to children beyond the jail policy: no socket of any
// family (socketpair(AF_UNIX) stays allowed). It closes the one channel a
// shared network namespace would open between siblings: abstract unix
// sockets, which live per network namespace.
var childExtra = []seccompRule{{action: "ERRNO(1)", errno: 1, name: "socket", nr: 41}}

// argIndex maps, per syscall, the kafel argument names the policy uses to
// their position (kafel's own names, from its syscall table).
var argIndex = map[string]map[string]int{
	"clone":      {"clone_flags": 0},
	"socket":     {"family": 0, "type": 1, "protocol": 2},
	"socketpair": {"family": 0, "type": 1, "protocol": 2},
	"fcntl":      {"cmd": 1},
	"futex":      {"op": 1},
	"fadvise64":  {"advice": 3},
}

const (
	seccompRetKillProcess = 0x80000000
	seccompRetErrno       = 0x00050000
	seccompRetAllow       = 0x7fff0000
	auditArchX86_64       = 0xc000003e
	x32SyscallBit         = 0x40000000
)

// parsePolicy reads seccomp.kafel's subset of kafel: one POLICY holding
// ERRNO(n) and KILL blocks of names, name { condition } and SYSCALL[n],
// used with DEFAULT ALLOW.
func parsePolicy(src string) ([]seccompRule, error) {
	t := &kafelTokens{toks: tokenizeKafel(src)}
	if !t.accept("POLICY") || t.next() == "" || !t.accept("{") {
		return nil, errors.New("seccomp policy: want POLICY <name> {")
	}
	var rules []seccompRule
	for {
		action := t.next()
		var errno uint32
		switch {
		case action == "KILL":
		case action == "ERRNO":
			if !t.accept("(") {
				return nil, errors.New("seccomp policy: want ERRNO(n)")
			}
			n, err := strconv.ParseUint(t.next(), 0, 16)
			if err != nil || !t.accept(")") {
				return nil, errors.New("seccomp policy: want ERRNO(n)")
			}
			errno, action = uint32(n), fmt.Sprintf("ERRNO(%d)", n)
		default:
			return nil, fmt.Errorf("seccomp policy: action %q is not ERRNO(n) or KILL", action)
		}
		block, err := t.parseBlock(action, errno)
		if err != nil {
			return nil, err
		}
		rules = append(rules, block...)
		if t.accept("}") {
			break
		}
		if !t.accept(",") {
			return nil, errors.New("seccomp policy: want , or } after an action block")
		}
	}
	if !t.accept("USE") || t.next() == "" || !t.accept("DEFAULT") || !t.accept("ALLOW") || t.peek() != "" {
		return nil, errors.New("seccomp policy: want USE <name> DEFAULT ALLOW at the end")
	}
	return rules, nil
}

func (t *kafelTokens) parseBlock(action string, errno uint32) ([]seccompRule, error) {
	if !t.accept("{") {
		return nil, fmt.Errorf("seccomp policy: want { after %s", action)
	}
	var rules []seccompRule
	for {
		r := seccompRule{action: action, errno: errno}
		name := t.next()
		if name == "SYSCALL" {
			if !t.accept("[") {
				return nil, errors.New("seccomp policy: want SYSCALL[n]")
			}
			n, err := strconv.ParseUint(t.next(), 0, 32)
			if err != nil || !t.accept("]") {
				return nil, errors.New("seccomp policy: want SYSCALL[n]")
			}
			r.nr = uint32(n)
		} else {
			nr, ok := sysnums[name]
			if !ok {
				return nil, fmt.Errorf("seccomp policy: unknown syscall %q", name)
			}
			r.name, r.nr = name, nr
		}
		if t.accept("{") {
			c, err := t.parseCond(name)
			if err != nil {
				return nil, fmt.Errorf("seccomp policy: %s: %w", name, err)
			}
			r.cond = c
		}
		rules = append(rules, r)
		if t.accept("}") {
			return rules, nil
		}
		if !t.accept(",") {
			return nil, fmt.Errorf("seccomp policy: want , or } after %s", name)
		}
	}
}

// parseCond reads `(arg & mask) op val` or `arg op val`, then the closing }.
func (t *kafelTokens) parseCond(syscall string) (*argCond, error) {
	c := &argCond{}
	var words []string
	paren := t.accept("(")
	arg := t.next()
	words = append(words, arg)
	if paren {
		if !t.accept("&") {
			return nil, errors.New("condition: want (arg & mask)")
		}
		m, err := strconv.ParseUint(t.next(), 0, 64)
		if err != nil || m == 0 || !t.accept(")") {
			return nil, errors.New("condition: want (arg & mask)")
		}
		c.mask = m
		words = []string{"(" + arg, "&", fmt.Sprintf("%#x)", m)}
	}
	i, ok := argIndex[syscall][arg]
	if !ok {
		return nil, fmt.Errorf("condition: unknown argument %q of %s", arg, syscall)
	}
	c.arg = i
	c.op = t.next()
	if c.op != "==" && c.op != "!=" {
		return nil, fmt.Errorf("condition: operator %q is not == or !=", c.op)
	}
	v, err := strconv.ParseUint(t.next(), 0, 64)
	if err != nil || !t.accept("}") {
		return nil, errors.New("condition: want a number and }")
	}
	c.val = v
	c.text = strings.Join(append(words, c.op, t.toks[t.i-2]), " ")
	return c, nil
}

type kafelTokens struct {
	toks []string
	i    int
}

func (t *kafelTokens) peek() string {
	if t.i < len(t.toks) {
		return t.toks[t.i]
	}
	return ""
}

func (t *kafelTokens) next() string { s := t.peek(); t.i++; return s }

func (t *kafelTokens) accept(s string) bool {
	if t.peek() == s {
		t.i++
		return true
	}
	return false
}

// tokenizeKafel splits kafel text into words, numbers and punctuation,
// dropping // and /* */ comments.
func tokenizeKafel(src string) []string {
	var toks []string
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return append(toks, "/*")
			}
			i += end + 4
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.HasPrefix(src[i:], "==") || strings.HasPrefix(src[i:], "!="):
			toks = append(toks, src[i:i+2])
			i += 2
		case c == '_' || unicode.IsLetter(rune(c)) || unicode.IsDigit(rune(c)):
			j := i
			for j < len(src) && (src[j] == '_' || unicode.IsLetter(rune(src[j])) || unicode.IsDigit(rune(src[j]))) {
				j++
			}
			toks = append(toks, src[i:j])
			i = j
		default:
			toks = append(toks, string(c))
			i++
		}
	}
	return toks
}

// cellPolicy is the kafel policy of a cell's nsjail: every rule but those
// on the relaxed calls (clone with CLONE_NEW* flags stays denied: the zygote
// uses unshare).
func cellPolicy(rules []seccompRule) string {
	var b strings.Builder
	b.WriteString("// Generated from seccomp.kafel for a cell's zygote: see jailproc/childfilter.go.\nPOLICY executor_cell {\n")
	first := true
	for i := 0; i < len(rules); {
		j := i
		for j < len(rules) && rules[j].action == rules[i].action {
			j++
		}
		var items []string
		for _, r := range rules[i:j] {
			if cellRelaxed[r.name] {
				continue
			}
			item := r.name
			if r.name == "" {
				item = fmt.Sprintf("SYSCALL[%#x]", r.nr)
			}
			if r.cond != nil {
				item += " { " + r.cond.text + " }"
			}
			items = append(items, item)
		}
		if len(items) > 0 {
			if !first {
				b.WriteString(",\n")
			}
			first = false
			fmt.Fprintf(&b, "  %s {\n    %s\n  }", rules[i].action, strings.Join(items, ",\n    "))
		}
		i = j
	}
	b.WriteString("\n}\nUSE executor_cell DEFAULT ALLOW\n")
	return b.String()
}

// childRules are what a child's own filter denies on top of the cell's
// filter: the policy's rules on the relaxed calls (first, so that the
// policy's own action wins), the relaxed calls with EPERM in any case (also
// when the policy says nothing of them, or there is no policy), and
// childExtra.
func childRules(policy []seccompRule) []seccompRule {
	var out []seccompRule
	for _, r := range policy {
		if cellRelaxed[r.name] {
			out = append(out, r)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cellRelaxed)) {
		out = append(out, seccompRule{action: "ERRNO(1)", errno: 1, name: name, nr: sysnums[name]})
	}
	return append(out, childExtra...)
}

// childFilter compiles rules into a seccomp classic-BPF program: wrong
// architecture or an x32 syscall number kills the process; then each rule in
// order; anything else is allowed.
func childFilter(rules []seccompRule) ([]bpf.Instruction, error) {
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("cell isolation needs amd64 (this is %s)", runtime.GOARCH)
	}
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArchX86_64, SkipTrue: 1},
		bpf.RetConstant{Val: seccompRetKillProcess},
		bpf.LoadAbsolute{Off: 0, Size: 4}, // seccomp_data.nr
		// Every number with the x32 bit set (the whole x32 table and
		// beyond): kill, as seccomp.kafel does for 0x40000000..+547.
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit, SkipFalse: 1},
		bpf.RetConstant{Val: seccompRetKillProcess},
	}
	for _, r := range rules {
		if r.nr >= x32SyscallBit {
			continue // killed above
		}
		ret := uint32(seccompRetKillProcess)
		if r.action != "KILL" {
			ret = seccompRetErrno | r.errno&0xffff
		}
		if r.cond == nil {
			prog = append(prog,
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: r.nr, SkipFalse: 1},
				bpf.RetConstant{Val: ret})
			continue
		}
		prog = append(prog, condBlock(r.nr, r.cond, ret)...)
	}
	prog = append(prog, bpf.RetConstant{Val: seccompRetAllow})
	if len(prog) > 4096 {
		return nil, fmt.Errorf("child seccomp filter has %d instructions, over the kernel's 4096", len(prog))
	}
	return prog, nil
}

// condBlock tests syscall nr and a condition on one argument, returns ret
// when both hold, and reloads the syscall number for the rules after it.
// E is "both 32-bit halves of (arg & mask) equal those of val"; the condition
// is E for ==, not E for !=. When mask and val fit in 32 bits (every rule of
// seccomp.kafel: fcntl's cmd, futex's op, fadvise64's advice and socketpair's
// family are ints, and clone uses only the low half of its flags), only the
// low half counts, as kafel compares such arguments: the kernel drops the
// upper half, so a caller setting bit 32 must not slip past the rule.
//
//	0 jeq nr        else -> 8
//	1 ld args[i].lo
//	2 and mask.lo
//	3 jeq val.lo    else -> not E
//	4 ld args[i].hi
//	5 and mask.hi
//	6 jeq val.hi    E / not E
//	7 ret           (== : E; != : not E)
//	8 ld nr
func condBlock(nr uint32, c *argCond, ret uint32) []bpf.Instruction {
	lo := uint32(16 + 8*c.arg) // seccomp_data.args[i], little endian
	mask := c.mask
	if mask == 0 {
		mask = ^uint64(0)
		if c.val>>32 == 0 {
			mask = 0xffffffff
		}
	}
	val := c.val & mask
	// Offsets below are counted from the instruction after the jump.
	notE3, e6, notE6 := uint8(4), uint8(0), uint8(1) // ==: not E -> 8, E -> 7
	if c.op == "!=" {
		notE3, e6, notE6 = 3, 1, 0 // not E -> 7, E -> 8
	}
	return []bpf.Instruction{
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipFalse: 7},
		bpf.LoadAbsolute{Off: lo, Size: 4},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: uint32(mask)},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(val), SkipFalse: notE3},
		bpf.LoadAbsolute{Off: lo + 4, Size: 4},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: uint32(mask >> 32)},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(val >> 32), SkipTrue: e6, SkipFalse: notE6},
		bpf.RetConstant{Val: ret},
		bpf.LoadAbsolute{Off: 0, Size: 4},
	}
}

// assembleFilter encodes prog as the bytes of a struct sock_filter array in
// the machine's byte order, as prctl(PR_SET_SECCOMP) reads it.
func assembleFilter(prog []bpf.Instruction) ([]byte, error) {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 8*len(raw))
	for _, r := range raw {
		b = binary.LittleEndian.AppendUint16(b, r.Op)
		b = append(b, r.Jt, r.Jf)
		b = binary.LittleEndian.AppendUint32(b, r.K)
	}
	return b, nil
}

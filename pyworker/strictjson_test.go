package pyworker_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/secure-script-executor/executor/pyworker"
)

// A frame forged by the script must not hand clients JSON that the worker
// itself would refuse to write: duplicate member names, numbers that are not
// finite doubles, integers longer than Python reads, nesting over 200.
func TestDecodeResultRefusesForgedValuesThatAreNotStrictJSON(t *testing.T) {
	bigInt := strings.Repeat("9", pyworker.MaxIntDigits+1)
	deep := strings.Repeat("[", 201) + strings.Repeat("]", 201)
	for name, value := range map[string]string{
		"duplicate member":                   `{"a":1,"a":2}`,
		"duplicate member through an escape": `{"a":1,"\u0061":2}`,
		"duplicate member in a nested list":  `[1,{"x":{"k":1,"k":[]}}]`,
		"duplicate escaped surrogate pair":   `{"\ud83d\ude00":1,"\uD83D\uDE00":2}`,
		"float overflowing to infinity":      `{"inf":1e999}`,
		"negative overflow":                  `[-1.5e400]`,
		"huge integer literal":               bigInt,
		"huge negative integer in an object": `{"n":-` + bigInt + `}`,
		"nesting over 200 levels":            deep,
	} {
		t.Run(name, func(t *testing.T) {
			for _, payload := range []string{
				`{"ok":true,"result":` + value + `}`,
				`{"ok":true,"results":[{"result":1,"stdout":""},{"result":` + value + `,"stdout":""}]}`,
			} {
				_, err := pyworker.DecodeResult([]byte(payload))
				if !errors.Is(err, pyworker.ErrProtocol) {
					t.Errorf("%.120s: err = %v, want a protocol violation", payload, err)
				}
			}
		})
	}
}

// The strictness must not refuse what an honest worker writes.
func TestDecodeResultAcceptsStrictValuesAtTheLimits(t *testing.T) {
	for name, value := range map[string]string{
		"same name in sibling objects":        `[{"a":1},{"a":2}]`,
		"same name at two levels":             `{"a":{"a":1}}`,
		"names that differ only in escapes":   `{"\ud800":1,"\udc00":2,"\ufffd":3}`,
		"a name like an escaped name":         `{"\\u0061":1,"a":2}`,
		"keys as values":                      `{"a":"a","b":["a","a"]}`,
		"integer of the longest length":       strings.Repeat("9", pyworker.MaxIntDigits),
		"largest double":                      `1.7976931348623157e308`,
		"underflow to zero":                   `1e-400`,
		"200 levels":                          strings.Repeat("[", 200) + strings.Repeat("]", 200),
		"string holding brackets and numbers": `["[[[{1e999", "\"a\":1,\"a\":2"]`,
	} {
		t.Run(name, func(t *testing.T) {
			res, err := pyworker.DecodeResult([]byte(`{"ok":true,"result":` + value + `}`))
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if string(res.Value) != value {
				t.Fatalf("value %.80s, want %.80s", res.Value, value)
			}
		})
	}
}

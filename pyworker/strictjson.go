package pyworker

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// MaxIntDigits is the longest integer literal a result may hold: CPython's
// default sys.get_int_max_str_digits(). The worker refuses to write a longer
// int whatever the script did to that setting, and Python clients could not
// read one back (json.loads raises ValueError).
const MaxIntDigits = 4300

// checkValue checks that v, a JSON value that encoding/json has already
// accepted as syntactically valid, is also strict JSON as the worker writes it
// (docs/PROTOCOL.md section 4), so that a frame forged by the script cannot
// hand clients something the worker would never send:
//
//   - containers nest at most maxDepth levels;
//   - no object has two members whose names are the same JSON string
//     (RFC 8259 section 8.3: compared as UTF-16 code units after unescaping,
//     so "a" and "\u0061" are the same name, and a lone "\ud800" is not
//     "\udc00");
//   - every number is finite as an IEEE double (1e999 would overflow to
//     infinity in most readers);
//   - integer literals have at most MaxIntDigits digits.
//
// It scans v once, iteratively: v may be megabytes long.
func checkValue(v []byte) error {
	var stack []jsonContainer
	expectKey := false // the next string in the current object is a name
	for i := 0; i < len(v); {
		switch c := v[i]; c {
		case '{', '[':
			if len(stack) >= maxDepth {
				return fmt.Errorf("result nests deeper than %d levels", maxDepth)
			}
			stack = append(stack, jsonContainer{object: c == '{'})
			expectKey = c == '{'
			i++
		case '}', ']':
			if len(stack) == 0 {
				return errors.New("unbalanced result value")
			}
			stack = stack[:len(stack)-1]
			expectKey = false
			i++
		case ',':
			expectKey = len(stack) > 0 && stack[len(stack)-1].object
			i++
		case ':', ' ', '\t', '\n', '\r':
			i++
		case '"':
			end, err := stringEnd(v, i)
			if err != nil {
				return err
			}
			if expectKey {
				if err := stack[len(stack)-1].addName(v[i:end]); err != nil {
					return err
				}
				expectKey = false
			}
			i = end
		case 't', 'f', 'n':
			for i < len(v) && v[i] >= 'a' && v[i] <= 'z' {
				i++
			}
		default:
			end := numberEnd(v, i)
			if end == i {
				return fmt.Errorf("unexpected byte %q in a result value", c)
			}
			if err := checkNumber(v[i:end]); err != nil {
				return err
			}
			i = end
		}
	}
	return nil
}

// jsonContainer is an array or object checkValue is inside.
type jsonContainer struct {
	object bool
	keys   map[string]struct{} // object member names seen so far
}

// addName records the member name quoted (with its quotes) and refuses one
// the object already has.
func (o *jsonContainer) addName(quoted []byte) error {
	if o.keys == nil {
		o.keys = make(map[string]struct{}, 8)
	}
	name, err := jsonStringUnits(quoted[1 : len(quoted)-1])
	if err != nil {
		return err
	}
	if _, dup := o.keys[name]; dup {
		return fmt.Errorf("an object has the member name %.60s twice", quoted)
	}
	o.keys[name] = struct{}{}
	return nil
}

// stringEnd returns the index just past the closing quote of the string that
// starts at v[start].
func stringEnd(v []byte, start int) (int, error) {
	for i := start + 1; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, errors.New("unterminated string in a result value")
}

// numberEnd returns the index just past the number token starting at v[i].
func numberEnd(v []byte, i int) int {
	for i < len(v) {
		switch c := v[i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			i++
		default:
			return i
		}
	}
	return i
}

// checkNumber applies the worker's bounds to one number literal.
func checkNumber(tok []byte) error {
	isInt := true
	digits := 0
	for _, c := range tok {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' || c == 'e' || c == 'E':
			isInt = false
		}
	}
	if isInt {
		if digits > MaxIntDigits {
			return fmt.Errorf("an integer in the result has %d digits, more than %d", digits, MaxIntDigits)
		}
		return nil
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	if math.IsInf(f, 0) {
		return fmt.Errorf("the number %.40s in the result is not a finite double", tok)
	}
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("the number %.40s in the result: %w", tok, err)
	}
	return nil
}

// jsonStringUnits returns a canonical form of the JSON string whose body
// (between the quotes) is raw: equal forms are equal strings in the sense of
// RFC 8259 section 8.3. Code units below 0x80 are kept as bytes; others are
// written as 0xFF followed by the unit's two bytes (0xFF never appears in the
// ASCII-only payload, so the form is unambiguous). A name without escapes is
// its own canonical form.
func jsonStringUnits(raw []byte) (string, error) {
	plain := true
	for _, c := range raw {
		if c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return string(raw), nil
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(raw) {
			return "", errors.New("bad escape in a result string")
		}
		i++
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(raw) {
				return "", errors.New("bad \\u escape in a result string")
			}
			u, err := strconv.ParseUint(string(raw[i+1:i+5]), 16, 16)
			if err != nil {
				return "", errors.New("bad \\u escape in a result string")
			}
			i += 4
			if u < 0x80 {
				out = append(out, byte(u))
			} else {
				out = append(out, 0xFF, byte(u>>8), byte(u))
			}
		default:
			return "", errors.New("bad escape in a result string")
		}
	}
	return string(out), nil
}

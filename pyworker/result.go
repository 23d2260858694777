package pyworker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/secure-script-executor/executor"
)

// MaxTextBytes caps ErrorInfo.Message and ErrorInfo.Traceback after decoding:
// they end up in logs and API answers, and a hostile worker must not be able
// to make them megabytes long. The worker itself keeps well under it.
const MaxTextBytes = 8 << 10

// maxDepth is the worker's nesting limit for results (docs/PROTOCOL.md
// section 4); a deeper value can only come from a forged frame.
const maxDepth = 200

// maxHeaderLine bounds "SSE-RES <len>\n".
const maxHeaderLine = 32

// ErrorInfo describes a failure inside the script.
type ErrorInfo struct {
	// Type is one of syntax_error, missing_main, runtime_error,
	// result_not_json, memory_limit, output_limit.
	Type string
	// Message is at most MaxTextBytes long; for exceptions it is the last
	// traceback line, "ExcType: message".
	Message string
	// Line is the script line the error points at; 0 when unknown.
	Line int
	// Traceback holds <script> frames only, at most MaxTextBytes long; empty
	// when not applicable.
	Traceback string
}

// Item is the outcome of one record of a batch run: exactly one of Result and
// Error is set.
type Item struct {
	Result json.RawMessage
	// Stdout is what print/sys.stdout produced during that record.
	Stdout string
	Error  *ErrorInfo
}

// Result is a decoded result payload. When OK, exactly one of Value (single
// mode; the JSON text "null" when main returned None) and Batch (batch mode,
// non-nil even when empty) is set; otherwise Error is.
type Result struct {
	OK    bool
	Value json.RawMessage
	Batch []Item
	Error *ErrorInfo
}

// CheckMode reports, as an error wrapping ErrProtocol, a successful result
// whose shape does not match the request's mode. DecodeResult cannot know the
// mode, and a script can forge a frame of the other shape.
func (r Result) CheckMode(batch bool) error {
	if r.OK && (r.Batch != nil) != batch {
		return fmt.Errorf("%w: result shape does not match the request mode (batch=%t)", ErrProtocol, batch)
	}
	return nil
}

// errorTypes is the closed set of error types of docs/PROTOCOL.md section 5;
// the value says whether the type may appear on a batch item.
var errorTypes = map[string]bool{
	string(executor.TypeSyntaxError):   false,
	string(executor.TypeMissingMain):   false,
	string(executor.TypeRuntimeError):  true,
	string(executor.TypeResultNotJSON): true,
	string(executor.TypeMemoryLimit):   false,
	string(executor.TypeOutputLimit):   true,
}

// ReadResult reads one result frame, "SSE-RES <len>\n<payload>", and decodes
// its payload with DecodeResult.
//
// A payload announced over maxBytes is refused without being read: the error
// wraps ErrResultTooLarge (and ErrProtocol). Pass the request's
// MaxResultBytes: the worker keeps every success payload within it. (Its own
// output_limit error payload is about 100 bytes, so a limit smaller than that
// can turn an output_limit into ErrResultTooLarge, which means the same.)
//
// If the worker closes the socket before writing anything the error wraps
// io.EOF: the process ended without a result, and the caller classifies that
// from its exit status. A frame cut short, a header that does not parse and a
// payload DecodeResult rejects all wrap ErrProtocol. Other read errors, such
// as a deadline set on the connection, are returned wrapped.
//
// ReadResult does not wait for EOF after the frame: a script may have handed
// fd 3 to a child that keeps it open. So a complete frame forged by the
// script and written before the worker's own is what gets decoded; that
// frame can only describe the script's own run.
func ReadResult(r *bufio.Reader, maxBytes int) (Result, error) {
	line, err := readLine(r, maxHeaderLine)
	if err != nil {
		return Result{}, fmt.Errorf("pyworker: result header: %w", err)
	}
	digits, ok := bytes.CutPrefix([]byte(line), []byte("SSE-RES "))
	if !ok || !canonicalDecimal(digits) {
		return Result{}, fmt.Errorf("%w: malformed result header %.40q", ErrProtocol, line)
	}
	n, err := strconv.Atoi(string(digits))
	if err != nil {
		return Result{}, fmt.Errorf("%w: result length %.40q: %w", ErrProtocol, digits, err)
	}
	if n > maxBytes {
		return Result{}, fmt.Errorf("%w (%w): %d bytes announced, limit %d", ErrResultTooLarge, ErrProtocol, n, maxBytes)
	}
	// Grow with what actually arrives rather than allocating the announced
	// size up front: a worker that announces the maximum and then stalls
	// should not cost the full buffer.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			return Result{}, fmt.Errorf("%w: result payload: %w after %d of %d bytes", ErrProtocol, io.ErrUnexpectedEOF, buf.Len(), n)
		}
		return Result{}, fmt.Errorf("pyworker: result payload: %w", err)
	}
	return DecodeResult(buf.Bytes())
}

// canonicalDecimal accepts 0 or a decimal without leading zeros or sign, short
// enough not to overflow an int on any platform Go supports.
func canonicalDecimal(b []byte) bool {
	if len(b) == 0 || len(b) > 9 || (len(b) > 1 && b[0] == '0') {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// DecodeResult strictly decodes a result payload (docs/PROTOCOL.md section
// 5): the payload must be ASCII (the worker escapes every string), every
// object has exactly the documented members with the documented JSON types
// (unknown or duplicate members are rejected), exactly one of
// result/results/error is present as ok demands, error types come from the
// closed set (and only runtime_error, result_not_json and output_limit on
// batch items), and result values nest at most 200 levels. Message and
// Traceback are truncated to MaxTextBytes. Every rejection wraps ErrProtocol.
func DecodeResult(payload []byte) (Result, error) {
	res, err := decodeResult(payload)
	if err != nil {
		return Result{}, fmt.Errorf("%w: result payload: %w", ErrProtocol, err)
	}
	return res, nil
}

func decodeResult(payload []byte) (Result, error) {
	for i, c := range payload {
		if c >= utf8.RuneSelf {
			return Result{}, fmt.Errorf("non-ASCII byte at offset %d", i)
		}
	}
	var (
		res                  Result
		okSeen               bool
		result, results, err json.RawMessage
	)
	if e := decodeObject(payload, func(key string, v json.RawMessage) error {
		switch key {
		case "ok":
			okSeen = true
			return decodeBool(v, &res.OK)
		case "result":
			result = v
		case "results":
			results = v
		case "error":
			err = v
		default:
			return fmt.Errorf("unknown member %.40q", key)
		}
		return nil
	}); e != nil {
		return Result{}, e
	}
	if !okSeen {
		return Result{}, errors.New(`missing "ok"`)
	}
	if !res.OK {
		if result != nil || results != nil || err == nil {
			return Result{}, errors.New(`a failed run has "error" and nothing else`)
		}
		info, e := decodeError(err, false)
		if e != nil {
			return Result{}, e
		}
		res.Error = info
		return res, nil
	}
	switch {
	case err != nil:
		return Result{}, errors.New(`a successful run has no "error"`)
	case (result == nil) == (results == nil):
		return Result{}, errors.New(`a successful run has exactly one of "result" and "results"`)
	case result != nil:
		if e := checkDepth(result); e != nil {
			return Result{}, e
		}
		res.Value = result
		return res, nil
	}
	var raw []json.RawMessage
	if e := json.Unmarshal(results, &raw); e != nil || raw == nil {
		return Result{}, errors.New(`"results" is not an array`)
	}
	res.Batch = make([]Item, len(raw))
	for i, v := range raw {
		item, e := decodeItem(v)
		if e != nil {
			return Result{}, fmt.Errorf("results[%d]: %w", i, e)
		}
		res.Batch[i] = item
	}
	return res, nil
}

func decodeItem(data json.RawMessage) (Item, error) {
	var (
		item           Item
		stdoutSeen     bool
		result, errRaw json.RawMessage
	)
	if e := decodeObject(data, func(key string, v json.RawMessage) error {
		switch key {
		case "result":
			result = v
		case "error":
			errRaw = v
		case "stdout":
			stdoutSeen = true
			return decodeString(v, &item.Stdout, -1)
		default:
			return fmt.Errorf("unknown member %.40q", key)
		}
		return nil
	}); e != nil {
		return Item{}, e
	}
	if !stdoutSeen {
		return Item{}, errors.New(`missing "stdout"`)
	}
	if (result == nil) == (errRaw == nil) {
		return Item{}, errors.New(`an item has exactly one of "result" and "error"`)
	}
	if result != nil {
		if e := checkDepth(result); e != nil {
			return Item{}, e
		}
		item.Result = result
		return item, nil
	}
	info, e := decodeError(errRaw, true)
	if e != nil {
		return Item{}, e
	}
	item.Error = info
	return item, nil
}

func decodeError(data json.RawMessage, item bool) (*ErrorInfo, error) {
	var (
		info              ErrorInfo
		typeSeen, msgSeen bool
	)
	if e := decodeObject(data, func(key string, v json.RawMessage) error {
		switch key {
		case "type":
			typeSeen = true
			return decodeString(v, &info.Type, 64)
		case "message":
			msgSeen = true
			return decodeString(v, &info.Message, MaxTextBytes)
		case "line":
			return decodeLine(v, &info.Line)
		case "traceback":
			return decodeString(v, &info.Traceback, MaxTextBytes)
		default:
			return fmt.Errorf("unknown error member %.40q", key)
		}
	}); e != nil {
		return nil, e
	}
	if !typeSeen || !msgSeen {
		return nil, errors.New(`an error has "type" and "message"`)
	}
	onItem, known := errorTypes[info.Type]
	if !known || (item && !onItem) {
		return nil, fmt.Errorf("error type %.64q not allowed here", info.Type)
	}
	return &info, nil
}

// decodeObject walks one JSON object member by member, so that keys are
// matched exactly (encoding/json matches struct fields case-insensitively)
// and duplicates are caught (it would keep the last one silently).
func decodeObject(data []byte, member func(key string, value json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not an object")
	}
	seen := make(map[string]bool, 4)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("object key is not a string")
		}
		if seen[key] {
			return fmt.Errorf("duplicate member %.40q", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if err := member(key, v); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the object")
	}
	return nil
}

func decodeBool(v json.RawMessage, dst *bool) error {
	switch string(v) {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		return errors.New(`"ok" is not a boolean`)
	}
	return nil
}

// decodeString decodes a JSON string (null is not a string), truncating it to
// capBytes on a rune boundary when capBytes >= 0.
func decodeString(v json.RawMessage, dst *string, capBytes int) error {
	if len(v) == 0 || v[0] != '"' {
		return errors.New("expected a string")
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return err
	}
	if s := *dst; capBytes >= 0 && len(s) > capBytes {
		// Cut before the rune that straddles the cap; the decoded string
		// is valid UTF-8, so the result stays valid.
		for capBytes > 0 && !utf8.RuneStart(s[capBytes]) {
			capBytes--
		}
		*dst = s[:capBytes]
	}
	return nil
}

// decodeLine accepts a non-negative integer written as plain digits.
func decodeLine(v json.RawMessage, dst *int) error {
	if !canonicalDecimal(v) {
		return fmt.Errorf(`"line" %.20q is not a small non-negative integer`, v)
	}
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return err
	}
	*dst = n
	return nil
}

// checkDepth rejects a JSON value nesting deeper than the worker allows. v is
// known to be valid JSON, so brackets outside strings are the whole story.
func checkDepth(v json.RawMessage) error {
	depth := 0
	inString, escaped := false, false
	for _, c := range v {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > maxDepth {
				return fmt.Errorf("result nests deeper than %d levels", maxDepth)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}

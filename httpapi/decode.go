package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"strings"
	"unicode/utf8"

	"github.com/secure-script-executor/executor"
)

// MaxInputDepth is how deeply `input` (or one batch record) may nest arrays and
// objects. Python's json module recurses once per level, and the worker's
// result check allows 200 levels; 64 leaves room for the script's own nesting
// while refusing inputs built to exhaust the worker's stack.
const MaxInputDepth = 64

// runRequest is a decoded /execute or /execute/batch body. It owns all its
// memory: nothing aliases fiber's request buffer, which fasthttp reuses once
// the handler returns.
type runRequest struct {
	Script string
	// Input is the raw JSON of `input` (single) or `inputs` (batch); nil when
	// `input` is absent. A JSON null is the 4 bytes "null", not nil.
	Input json.RawMessage
	// TimeoutMS is the requested timeout in milliseconds; 0 when not given.
	TimeoutMS int64
	// MemoryLimitMB is the requested memory limit in MiB; 0 when not given.
	MemoryLimitMB int64
	// Records is the number of batch records (batch only).
	Records int
}

// decodeRunRequest decodes body strictly: one JSON object, known fields only,
// each at most once, nothing after it. maxRecords bounds batch inputs.
//
// It walks the object with Decoder.Token instead of Unmarshal into a struct
// because Unmarshal matches field names case-insensitively, lets duplicate
// keys silently win, and reports unknown fields and wrong types in Go terms
// the client cannot act on.
func decodeRunRequest(body []byte, mode executor.Mode, maxRecords int) (runRequest, *apiError) {
	var rr runRequest
	if aerr := checkBody(body); aerr != nil {
		return rr, aerr
	}
	f := requestFields(mode)
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return rr, syntaxError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return rr, invalidRequest("the request body must be a JSON object with the fields %s", f.list)
	}
	seen := make(map[string]bool, 4)
	for dec.More() {
		key, raw, aerr := nextField(dec, f, seen)
		if aerr != nil {
			return rr, aerr
		}
		if aerr := rr.setField(key, raw, maxRecords); aerr != nil {
			return rr, aerr
		}
	}
	if aerr := checkEnd(dec); aerr != nil {
		return rr, aerr
	}
	if !seen["script"] {
		return rr, invalidRequest("script is required: send Python source that defines main")
	}
	if mode == executor.ModeBatch && !seen["inputs"] {
		return rr, invalidRequest("inputs is required: send a JSON array of records")
	}
	return rr, nil
}

// checkBody refuses an empty body and one that is not UTF-8: the worker
// protocol and Python both require UTF-8, and encoding/json would otherwise
// quietly turn bad bytes in the script into U+FFFD.
func checkBody(body []byte) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return invalidRequest(`the request body is empty; send a JSON object such as {"script": "def main():\n    return 1"}`)
	}
	if !utf8.Valid(body) {
		return invalidRequest("the request body is not valid UTF-8; encode the JSON as UTF-8")
	}
	return nil
}

// fieldSet names the fields of one endpoint's body.
type fieldSet struct {
	input string // "input" or "inputs"
	list  string // for messages
}

func requestFields(mode executor.Mode) fieldSet {
	if mode == executor.ModeBatch {
		return fieldSet{"inputs", `"script", "inputs", "timeout_ms" and "memory_limit_mb"`}
	}
	return fieldSet{"input", `"script", "input", "timeout_ms" and "memory_limit_mb"`}
}

// nextField reads one key and its value, refusing unknown and repeated keys.
// Decoding into RawMessage validates the value and copies it out of the
// decoder's buffer.
func nextField(dec *json.Decoder, f fieldSet, seen map[string]bool) (string, json.RawMessage, *apiError) {
	tok, err := dec.Token()
	if err != nil {
		return "", nil, syntaxError(err)
	}
	key, _ := tok.(string) // inside an object, Token only yields string keys
	if key != "script" && key != f.input && key != "timeout_ms" && key != "memory_limit_mb" {
		msg := fmt.Sprintf("unknown field %q; the fields are %s", clip(key, 100), f.list)
		if key == "input" || key == "inputs" {
			msg += fmt.Sprintf(" (did you mean %q?)", f.input)
		}
		return "", nil, invalidRequest("%s", msg)
	}
	if seen[key] {
		return "", nil, invalidRequest("field %q appears more than once; send it once", key)
	}
	seen[key] = true
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return "", nil, syntaxError(err)
	}
	return key, raw, nil
}

// setField checks one field's value and stores it.
func (rr *runRequest) setField(key string, raw json.RawMessage, maxRecords int) *apiError {
	switch key {
	case "script":
		return rr.setScript(raw)
	case "input":
		if d := jsonDepth(raw); d > MaxInputDepth {
			return invalidRequest("input nests %d levels deep; the limit is %d", d, MaxInputDepth)
		}
		rr.Input = raw
	case "inputs":
		return rr.setInputs(raw, maxRecords)
	case "timeout_ms":
		ms, ok := positiveInteger(raw)
		if !ok {
			return invalidRequest("timeout_ms must be a positive integer (milliseconds)")
		}
		rr.TimeoutMS = ms
	case "memory_limit_mb":
		mb, aerr := memoryLimitMB(raw)
		if aerr != nil {
			return aerr
		}
		rr.MemoryLimitMB = mb
	}
	return nil
}

func (rr *runRequest) setScript(raw json.RawMessage) *apiError {
	if raw[0] != '"' {
		return invalidRequest("script must be a string holding Python source")
	}
	if err := json.Unmarshal(raw, &rr.Script); err != nil {
		return syntaxError(err)
	}
	if rr.Script == "" {
		return invalidRequest("script must not be empty; send Python source that defines main")
	}
	return nil
}

func (rr *runRequest) setInputs(raw json.RawMessage, maxRecords int) *apiError {
	if raw[0] != '[' {
		return invalidRequest("inputs must be a JSON array of records, one per call of main(record)")
	}
	var records []json.RawMessage
	if err := json.Unmarshal(raw, &records); err != nil {
		return syntaxError(err)
	}
	if len(records) == 0 {
		return invalidRequest("inputs must hold at least one record")
	}
	if len(records) > maxRecords {
		return invalidRequest("inputs holds %d records; the limit is %d per request, so split the batch",
			len(records), maxRecords)
	}
	for i, rec := range records {
		if d := jsonDepth(rec); d > MaxInputDepth {
			return invalidRequest("inputs[%d] nests %d levels deep; the limit is %d", i, d, MaxInputDepth)
		}
	}
	rr.Input, rr.Records = raw, len(records)
	return nil
}

// checkEnd reads the closing '}' and refuses anything after it.
func checkEnd(dec *json.Decoder) *apiError {
	if _, err := dec.Token(); err != nil {
		return syntaxError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalidRequest("the request body has data after the JSON object; send exactly one object")
	}
	return nil
}

// positiveInteger accepts a JSON number with an integral value of at least 1
// (so 1500, 1500.0 and 1.5e3 all mean 1500 ms), and null as "not given".
// Values too large for int64 saturate: they are clamped to the server's
// limit anyway.
func positiveInteger(raw json.RawMessage) (int64, bool) {
	if string(raw) == "null" {
		return 0, true
	}
	var f float64
	if raw[0] == '"' || json.Unmarshal(raw, &f) != nil {
		return 0, false
	}
	if f < 1 || f != math.Trunc(f) {
		return 0, false
	}
	if f >= math.MaxInt64 {
		return math.MaxInt64, true
	}
	return int64(f), true
}

// syntaxError turns encoding/json's errors into a message that says where.
func syntaxError(err error) *apiError {
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return invalidRequest("the request body ends before the JSON object is complete")
	case errors.As(err, &se):
		return invalidRequest("the request body is not valid JSON: %s (at byte %d)", se.Error(), se.Offset)
	default:
		return invalidRequest("the request body is not valid JSON: %s", err.Error())
	}
}

// jsonDepth returns the deepest nesting of arrays and objects in valid JSON
// text: 0 for a scalar, 1 for [] or {"a": 1}.
func jsonDepth(raw []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, b := range raw {
		switch {
		case escaped:
			escaped = false
		case inString:
			switch b {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '[' || b == '{':
			depth++
			deepest = max(deepest, depth)
		case b == ']' || b == '}':
			depth--
		}
	}
	return deepest
}

// checkContentType accepts application/json with an optional UTF-8 charset.
func checkContentType(header string) *apiError {
	const want = "send Content-Type: application/json"
	if header == "" {
		return &apiError{Type: TypeUnsupportedMediaType, Message: "the request has no Content-Type; " + want}
	}
	mt, params, err := mime.ParseMediaType(header)
	if err != nil || mt != "application/json" {
		return &apiError{Type: TypeUnsupportedMediaType, Message: fmt.Sprintf(
			"Content-Type %q is not supported; %s", clip(header, 100), want)}
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return &apiError{Type: TypeUnsupportedMediaType, Message: fmt.Sprintf(
				"Content-Type parameter %s=%q is not supported; the body must be UTF-8 JSON", clip(k, 50), clip(v, 50))}
		}
	}
	return nil
}

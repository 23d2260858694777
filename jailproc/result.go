package jailproc

import (
	"encoding/json"
	"time"
)

// Status is how a run ended. Every value except StatusOK is also the stable
// error type the HTTP API answers with, so the strings never change.
type Status string

const (
	StatusOK            Status = "ok"
	StatusSyntaxError   Status = "syntax_error"
	StatusMissingMain   Status = "missing_main"
	StatusRuntimeError  Status = "runtime_error"
	StatusResultNotJSON Status = "result_not_json"
	StatusTimeout       Status = "timeout"
	StatusMemoryLimit   Status = "memory_limit"
	StatusOutputLimit   Status = "output_limit"
)

// Mode selects how main is called.
type Mode string

const (
	// ModeSingle calls main() once, or main(input) when Input is set.
	ModeSingle Mode = "single"
	// ModeBatch calls main(record) for each element of the JSON array Input.
	ModeBatch Mode = "batch"
)

// Request is one run of one script in one worker.
type Request struct {
	Mode   Mode
	Script []byte
	// Input is strict JSON text, or nil for "no input" (main is called with
	// no argument). In ModeBatch it must be a JSON array.
	Input []byte
	// Timeout is the wall-clock limit of the run, from the moment the request
	// is handed to the worker. Zero means the supervisor's configured maximum.
	Timeout time.Duration
}

// BatchItem is the outcome of one record of a batch run.
type BatchItem struct {
	// Result is the record's JSON result; nil when Error is set.
	Result json.RawMessage
	Stdout string
	// Error is set when main raised or returned non-JSON for this record.
	Error *ScriptError
}

// ScriptError describes a failure inside the script.
type ScriptError struct {
	Type      Status
	Message   string
	Line      int    // 0 when unknown
	Traceback string // user frames only; empty when not applicable
}

// Result is what a run produced. A run that ends in any Status is not a Go
// error: errors are reserved for failures of the supervisor itself.
type Result struct {
	Status Status
	// Value is main's JSON result (StatusOK, ModeSingle).
	Value json.RawMessage
	// Batch holds one item per input record (StatusOK, ModeBatch).
	Batch []BatchItem
	// Error describes the failure when Status != StatusOK.
	Error *ScriptError

	Stdout, Stderr []byte
	// Duration is the time from sending the request to having the result.
	Duration time.Duration
}

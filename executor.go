// Package executor holds the vocabulary every layer of the Secure Script
// Executor shares: what a run is asked to do (Request), how it ended
// (Result, Status) and the one list of the API's error types. It imports
// nothing of the project, so the supervisor (jailproc), the pool, the HTTP
// API and the metrics all depend on it and not on each other for types
// (the root-package pattern of benbjohnson/wtf).
package executor

import (
	"encoding/json"
	"fmt"
	"time"
)

// ErrorType is a stable, machine-readable error type of the API. Clients
// switch on these strings, so they never change; each is defined here once
// and every table (HTTP status, metric outcome, the worker's own list) is
// derived from or checked against ErrorTypes.
type ErrorType string

// Error types of the API, in the order docs/API.md lists them.
const (
	TypeInvalidRequest       ErrorType = "invalid_request"
	TypeUnauthorized         ErrorType = "unauthorized"
	TypeNotFound             ErrorType = "not_found"
	TypeMethodNotAllowed     ErrorType = "method_not_allowed"
	TypeRequestTimeout       ErrorType = "request_timeout"
	TypeRequestTooLarge      ErrorType = "request_too_large"
	TypeUnsupportedMediaType ErrorType = "unsupported_media_type"
	TypeHeadersTooLarge      ErrorType = "headers_too_large"

	// Script-level types: the run happened and the script (or a limit)
	// ended it. They are also the non-OK values of Status.
	TypeSyntaxError   ErrorType = "syntax_error"
	TypeMissingMain   ErrorType = "missing_main"
	TypeRuntimeError  ErrorType = "runtime_error"
	TypeResultNotJSON ErrorType = "result_not_json"
	TypeTimeout       ErrorType = "timeout"
	TypeMemoryLimit   ErrorType = "memory_limit"
	TypeOutputLimit   ErrorType = "output_limit"

	TypeOverloaded         ErrorType = "overloaded"
	TypeSandboxUnavailable ErrorType = "sandbox_unavailable"
	TypeInternal           ErrorType = "internal"
)

// ErrorTypes is every error type, in documentation order.
var ErrorTypes = []ErrorType{
	TypeInvalidRequest, TypeUnauthorized, TypeNotFound, TypeMethodNotAllowed,
	TypeRequestTimeout, TypeRequestTooLarge, TypeUnsupportedMediaType, TypeHeadersTooLarge,
	TypeSyntaxError, TypeMissingMain, TypeRuntimeError, TypeResultNotJSON,
	TypeTimeout, TypeMemoryLimit, TypeOutputLimit,
	TypeOverloaded, TypeSandboxUnavailable, TypeInternal,
}

// Script reports whether t is a script-level type (answered 422, with the
// run's stdout and stderr).
func (t ErrorType) Script() bool {
	switch t {
	case TypeSyntaxError, TypeMissingMain, TypeRuntimeError, TypeResultNotJSON,
		TypeTimeout, TypeMemoryLimit, TypeOutputLimit:
		return true
	}
	return false
}

// Execution reports whether t can be the outcome of an execution request
// (POST /execute or /execute/batch): every type except the refusals of the
// HTTP request itself (no such route, wrong method, a request not received in
// time, oversized headers), which happen before any route is chosen.
func (t ErrorType) Execution() bool {
	switch t {
	case TypeNotFound, TypeMethodNotAllowed, TypeRequestTimeout, TypeHeadersTooLarge:
		return false
	}
	return true
}

// MethodOther is the method label of every request method outside
// MethodLabels.
const MethodOther = "other"

// MethodLabels is the closed set of HTTP method names used as labels in logs
// and metrics; any other method is labelled MethodOther, since requests
// refused before routing can carry any token.
var MethodLabels = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"}

// MethodLabel returns the label of method m: m itself when it is one of
// MethodLabels (as a constant string, never aliasing m), else MethodOther.
func MethodLabel(m string) string {
	for _, std := range MethodLabels {
		if m == std {
			return std
		}
	}
	return MethodOther
}

// Status is how a run ended: StatusOK, or one of the script-level error
// types.
type Status string

// Run statuses. Every value except StatusOK is the ErrorType of the same
// name.
const (
	StatusOK            Status = "ok"
	StatusSyntaxError          = Status(TypeSyntaxError)
	StatusMissingMain          = Status(TypeMissingMain)
	StatusRuntimeError         = Status(TypeRuntimeError)
	StatusResultNotJSON        = Status(TypeResultNotJSON)
	StatusTimeout              = Status(TypeTimeout)
	StatusMemoryLimit          = Status(TypeMemoryLimit)
	StatusOutputLimit          = Status(TypeOutputLimit)
)

// Mode selects how main is called.
type Mode string

const (
	// ModeSingle calls main() once, or main(input) when Input is set.
	ModeSingle Mode = "single"
	// ModeBatch calls main(record) for each element of the JSON array Input.
	ModeBatch Mode = "batch"
)

// DefaultTimeout is the default of the server's run limit (--timeout), and
// the limit of a jailproc or httpapi Config that leaves it zero.
const DefaultTimeout = 5 * time.Second

// Request is one run of one script in one worker.
type Request struct {
	Mode   Mode
	Script []byte
	// Input is strict JSON text, or nil for "no input" (main is called with
	// no argument). In ModeBatch it must be a JSON array.
	Input []byte
	// Records is the number of elements of Input in ModeBatch (the decoder
	// counted them): a result with any other number of items cannot be the
	// answer to this request.
	Records int
	// Timeout is the run's effective wall-clock limit, from the moment the
	// request is handed to the worker. It is decided once, when the request
	// is decoded (the client's timeout_ms, never above the server's limit),
	// and every layer uses it as given. Zero means the supervisor's own
	// limit, for callers with no limit of their own.
	Timeout time.Duration
	// MemoryLimit is the run's effective memory limit in bytes (the client's
	// memory_limit_mb, never above the server's). Zero means the server's.
	MemoryLimit int64
}

// TimeoutMessage is the message of a run stopped at its wall-clock limit
// (the request's effective Timeout) when the server's limit is max: what
// happened and what the client can do about it. The supervisor, which alone
// knows whether the wall clock or the CPU-time limit ended a run, uses it for
// the former; nothing above it rewrites the message.
func TimeoutMessage(limit, max time.Duration) string {
	if limit < max {
		return fmt.Sprintf("the script ran longer than its %d ms limit; make it faster or raise timeout_ms up to %d",
			limit.Milliseconds(), max.Milliseconds())
	}
	return fmt.Sprintf("the script ran longer than its %d ms limit, the server's maximum; make it faster",
		limit.Milliseconds())
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

// Usage is what one run consumed, read from its own cgroup. A field the
// server cannot measure truthfully (no cgroups) is marked as not measured and
// must not be reported.
type Usage struct {
	// Wall is the time from handing the request to the worker to having
	// its result.
	Wall time.Duration
	// CPU is the CPU time of every process of the run (user + system).
	CPU         time.Duration
	CPUMeasured bool
	// MemoryPeak is the run's peak memory in bytes.
	MemoryPeak         int64
	MemoryPeakMeasured bool
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
	// Usage is what the run consumed.
	Usage Usage
}

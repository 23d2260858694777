package httpapi

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/secure-script-executor/executor"

	"github.com/gofiber/fiber/v2"

	"github.com/secure-script-executor/executor/pool"
)

// Error types of the API, as strings: the names of executor's ErrorType
// constants, where each is defined once (executor.ErrorTypes lists them all).
const (
	TypeInvalidRequest       = string(executor.TypeInvalidRequest)
	TypeUnauthorized         = string(executor.TypeUnauthorized)
	TypeNotFound             = string(executor.TypeNotFound)
	TypeMethodNotAllowed     = string(executor.TypeMethodNotAllowed)
	TypeRequestTimeout       = string(executor.TypeRequestTimeout)
	TypeRequestTooLarge      = string(executor.TypeRequestTooLarge)
	TypeUnsupportedMediaType = string(executor.TypeUnsupportedMediaType)
	TypeHeadersTooLarge      = string(executor.TypeHeadersTooLarge)
	TypeSyntaxError          = string(executor.TypeSyntaxError)
	TypeMissingMain          = string(executor.TypeMissingMain)
	TypeRuntimeError         = string(executor.TypeRuntimeError)
	TypeResultNotJSON        = string(executor.TypeResultNotJSON)
	TypeTimeout              = string(executor.TypeTimeout)
	TypeMemoryLimit          = string(executor.TypeMemoryLimit)
	TypeOutputLimit          = string(executor.TypeOutputLimit)
	TypeOverloaded           = string(executor.TypeOverloaded)
	TypeSandboxUnavailable   = string(executor.TypeSandboxUnavailable)
	TypeInternal             = string(executor.TypeInternal)
)

// statusOf is the one table from error type to HTTP status, built from
// executor.ErrorTypes so that every type has a status. handleError is the
// only place that writes an error response, and it looks the status up here.
var statusOf = statusTable()

func statusTable() map[string]int {
	t := make(map[string]int, len(executor.ErrorTypes))
	for _, typ := range executor.ErrorTypes {
		t[string(typ)] = httpStatus(typ)
	}
	return t
}

// httpStatus is the HTTP status of an error type; every script-level type is
// 422.
func httpStatus(t executor.ErrorType) int {
	if t.Script() {
		return fiber.StatusUnprocessableEntity
	}
	switch t {
	case executor.TypeInvalidRequest:
		return fiber.StatusBadRequest
	case executor.TypeUnauthorized:
		return fiber.StatusUnauthorized
	case executor.TypeNotFound:
		return fiber.StatusNotFound
	case executor.TypeMethodNotAllowed:
		return fiber.StatusMethodNotAllowed
	case executor.TypeRequestTimeout:
		return fiber.StatusRequestTimeout
	case executor.TypeRequestTooLarge:
		return fiber.StatusRequestEntityTooLarge
	case executor.TypeUnsupportedMediaType:
		return fiber.StatusUnsupportedMediaType
	case executor.TypeHeadersTooLarge:
		return fiber.StatusRequestHeaderFieldsTooLarge
	case executor.TypeOverloaded:
		return fiber.StatusTooManyRequests
	case executor.TypeSandboxUnavailable:
		return fiber.StatusServiceUnavailable
	}
	return fiber.StatusInternalServerError
}

// apiError is an error the client is meant to see. Anything else that reaches
// handleError is reported as internal, with its text only in the log.
type apiError struct {
	Type      string
	Message   string
	Line      int    // 0: unknown
	Traceback string // runtime_error only

	// script is set for script-level errors, whose answer carries the
	// stdout and stderr captured before the failure.
	script         bool
	stdout, stderr []byte
	usage          *usageJSON

	// cause is logged, never sent.
	cause error
}

func (e *apiError) Error() string { return e.Type + ": " + e.Message }
func (e *apiError) Unwrap() error { return e.cause }

func invalidRequest(format string, args ...any) *apiError {
	return &apiError{Type: TypeInvalidRequest, Message: fmt.Sprintf(format, args...)}
}

// internalError hides err from the client; handleError adds the request id
// to the message so the operator can find err in the log.
func internalError(err error) *apiError {
	return &apiError{Type: TypeInternal, cause: err}
}

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Error  errorDetail `json:"error"`
	Stdout *string     `json:"stdout,omitempty"`
	Stderr *string     `json:"stderr,omitempty"`
	Usage  *usageJSON  `json:"usage,omitempty"`
}

type errorDetail struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	Line      int    `json:"line,omitempty"`
	Traceback string `json:"traceback,omitempty"`
}

// detailOf converts a per-record script error of a batch.
func detailOf(e *executor.ScriptError) errorDetail {
	d := errorDetail{Type: string(e.Type), Message: e.Message}
	if e.Line > 0 {
		d.Line = e.Line
	}
	if e.Type == executor.StatusRuntimeError {
		d.Traceback = e.Traceback
	}
	if d.Message == "" {
		d.Message = defaultScriptMessage(d.Type)
	}
	return d
}

// handleError is the app's ErrorHandler and the only writer of error answers.
// It is reached two ways: from the request middleware, for errors returned by
// handlers, and from fiber's server error handler for requests that failed
// before routing (body over BodyLimit, read timeout, unparsable request).
// In the second case no middleware ran, so it also does the request's
// bookkeeping (request id, log line, metrics) itself.
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	info, routed := c.Locals(infoKey).(*requestInfo)
	if !routed {
		info = s.beginRequest(c)
		defer s.finishRequest(c, info)
	}

	ae := s.toAPIError(c, err)
	if !routed {
		if rej := s.connRejection(c); rej != nil {
			ae = rej // the request framer cut the connection here, and says why
		}
		// fasthttp closes the connection after this answer, with the rest
		// of the refused request (a header block over the buffer, a body
		// over the limit) possibly still unread.
		if cc, ok := c.Context().Conn().(*checkedConn); ok {
			cc.lingerOnClose.Store(true)
		}
	}
	status, ok := statusOf[ae.Type]
	if !ok {
		ae = internalError(fmt.Errorf("httpapi: error type %q has no status: %w", ae.Type, err))
		status = fiber.StatusInternalServerError
	}
	info.outcome = ae.Type
	if ae.cause != nil {
		info.cause = ae.cause
	}

	switch ae.Type {
	case TypeInternal:
		ae.Message = "the server failed to handle this request; report request id " + info.id + " to the operator"
	case TypeUnauthorized:
		c.Set(fiber.HeaderWWWAuthenticate, "Bearer")
	case TypeOverloaded:
		c.Set(fiber.HeaderRetryAfter, retryAfterSeconds(s.cfg.RetryAfter))
	case TypeMethodNotAllowed:
		if allow := s.allowedMethods(c.Path()); len(allow) > 0 {
			c.Set(fiber.HeaderAllow, strings.Join(allow, ", "))
		}
	}

	body := errorBody{Error: errorDetail{
		Type:      ae.Type,
		Message:   ae.Message,
		Line:      ae.Line,
		Traceback: ae.Traceback,
	}}
	if ae.script {
		// string() of invalid UTF-8 is fine: encoding/json writes U+FFFD.
		stdout, stderr := string(ae.stdout), string(ae.stderr)
		body.Stdout, body.Stderr = &stdout, &stderr
		body.Usage = ae.usage
		if body.Usage == nil {
			// Every script error comes from a run, and every run answer
			// carries its usage, whichever check built the error.
			body.Usage = info.usage
		}
	}
	return c.Status(status).JSON(body)
}

// toAPIError maps any error to the API's vocabulary.
func (s *Server) toAPIError(c *fiber.Ctx, err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var fe *fiber.Error
	if !errors.As(err, &fe) {
		return internalError(err)
	}
	switch fe.Code {
	case fiber.StatusNotFound:
		return &apiError{Type: TypeNotFound, Message: fmt.Sprintf(
			"there is no %s %s; the endpoints are POST /execute, POST /execute/batch, GET /runtime, GET /openapi.json, GET /healthz and GET /readyz",
			methodLabel(c.Method()), clip(c.Path(), 200))}
	case fiber.StatusMethodNotAllowed:
		return &apiError{Type: TypeMethodNotAllowed, Message: fmt.Sprintf(
			"%s does not accept %s; use %s", clip(c.Path(), 200), methodLabel(c.Method()),
			strings.Join(s.allowedMethods(c.Path()), " or "))}
	case fiber.StatusRequestEntityTooLarge:
		return &apiError{Type: TypeRequestTooLarge, Message: fmt.Sprintf(
			"the request body is larger than this server's limit of %d bytes; send a smaller script or input, or split a batch",
			s.cfg.MaxBodyBytes)}
	case fiber.StatusRequestTimeout:
		return &apiError{Type: TypeRequestTimeout, Message: fmt.Sprintf(
			"the request was not received within %s; send it without pauses", s.cfg.ReadTimeout)}
	case fiber.StatusRequestHeaderFieldsTooLarge:
		return &apiError{Type: TypeHeadersTooLarge, Message: "the request headers are too large; send fewer or shorter headers"}
	case fiber.StatusBadRequest:
		// fasthttp's parse errors quote the raw request; do not echo it.
		return &apiError{Type: TypeInvalidRequest, Message: "the HTTP request could not be parsed", cause: err}
	default:
		return internalError(err)
	}
}

// runErrorFor maps a Runner.Run error. shuttingDown is true once Shutdown's
// grace has passed and in-flight runs were cancelled: whatever the runner then
// returns (often a bare context error) is a consequence of the shutdown.
func (s *Server) runErrorFor(err error, shuttingDown bool) *apiError {
	switch {
	case errors.Is(err, pool.ErrOverloaded):
		return &apiError{Type: TypeOverloaded, cause: err, Message: fmt.Sprintf(
			"every worker is busy; retry after %s seconds", retryAfterSeconds(s.cfg.RetryAfter))}
	case errors.Is(err, pool.ErrSandboxUnavailable):
		return &apiError{Type: TypeSandboxUnavailable, cause: err,
			Message: "the sandbox cannot start workers right now; retry later, and tell the operator if it persists"}
	case errors.Is(err, pool.ErrClosed) || shuttingDown:
		return &apiError{Type: TypeSandboxUnavailable, cause: err,
			Message: "the server is shutting down; retry the request (another instance will take it)"}
	default:
		return internalError(fmt.Errorf("httpapi: run: %w", err))
	}
}

// scriptError builds the 422 answer for a run that ended in a non-OK status.
// memLimit is the run's lowered memory limit (0: the server's), for the
// message. Otherwise the message is the supervisor's, which alone knows which
// limit ended the run (the wall clock or the CPU-time rlimit); see
// executor.TimeoutMessage.
func (s *Server) scriptError(res executor.Result, memLimit int64) *apiError {
	// Any other non-OK status from the runner is a supervisor bug.
	if !executor.ErrorType(res.Status).Script() {
		return internalError(fmt.Errorf("httpapi: runner returned unknown status %q", res.Status))
	}
	ae := &apiError{Type: string(res.Status), script: true, stdout: res.Stdout, stderr: res.Stderr, usage: usageOf(res)}
	if res.Error != nil {
		ae.Message = res.Error.Message
		ae.Line = max(0, res.Error.Line)
		if res.Status == executor.StatusRuntimeError {
			ae.Traceback = res.Error.Traceback
		}
	}
	if res.Status == executor.StatusMemoryLimit && memLimit > 0 && s.cfg.MemoryLimit > 0 {
		// The client lowered the limit and may raise it.
		ae.Message = fmt.Sprintf("the script used more memory than its %d MiB limit (memory_limit_mb); use less memory or raise memory_limit_mb up to %d",
			memLimit/mib, s.cfg.MemoryLimit/mib)
	}
	if ae.Message == "" {
		ae.Message = defaultScriptMessage(ae.Type)
	}
	return ae
}

// defaultScriptMessage is used when the supervisor gave no message.
func defaultScriptMessage(typ string) string {
	switch typ {
	case TypeSyntaxError:
		return "the script is not valid Python; fix the syntax error"
	case TypeMissingMain:
		return "the script defines no main function; define main() or main(input)"
	case TypeRuntimeError:
		return "the script raised an exception; see the traceback"
	case TypeResultNotJSON:
		return "main returned a value that is not JSON (dict with str keys, list, str, int, finite float, bool or None); convert it before returning"
	case TypeMemoryLimit:
		return "the script used more memory than its limit; use less memory"
	case TypeOutputLimit:
		return "the script's output or result is larger than its limit; print and return less"
	case TypeTimeout:
		return "the script ran longer than its time limit; make it faster"
	default:
		return "the script failed"
	}
}

func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// clip bounds client-controlled text echoed in messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

"""One exception class per error type of the API.

The server answers every failure with a stable ``error.type`` (docs/API.md,
and the ``ErrorType`` enum of ``GET /openapi.json``). Each type has its own
class here, so callers can write ``except errors.Timeout``; every class
derives from :class:`ExecutorError`, and the seven script-level types (the
run happened and the script, or a limit, ended it: HTTP 422) also derive
from :class:`ScriptError`, which carries what the script printed.

Two names differ from the type to stay clear of Python's built-ins:
``syntax_error`` is :class:`ScriptSyntaxError` and ``runtime_error`` is
:class:`ScriptRuntimeError`. ``timeout`` is :class:`Timeout`, not
``TimeoutError``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "ExecutorError", "ScriptError", "TransportError", "ERROR_TYPES", "error_class",
    "InvalidRequest", "Unauthorized", "NotFound", "MethodNotAllowed", "RequestTimeout",
    "RequestTooLarge", "UnsupportedMediaType", "HeadersTooLarge",
    "ScriptSyntaxError", "MissingMain", "ScriptRuntimeError", "ResultNotJSON",
    "Timeout", "MemoryLimit", "OutputLimit",
    "Overloaded", "SandboxUnavailable", "Internal",
]


class ExecutorError(Exception):
    """An error answer of the server.

    ``type`` is the stable error type (switch on it, or on the class);
    ``message`` is for people; ``status`` is the HTTP status; ``request_id``
    is the ``X-Request-Id`` to quote to the operator.
    """

    type: str = ""

    def __init__(self, message: str, *, status: int = 0, request_id: Optional[str] = None,
                 line: Optional[int] = None, traceback: Optional[str] = None,
                 type: Optional[str] = None) -> None:
        super().__init__(message)
        if type is not None:
            self.type = type
        self.message = message
        self.status = status
        self.request_id = request_id
        self.line = line
        self.traceback = traceback

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.type}: {self.message}{where}"


class TransportError(ExecutorError):
    """No usable answer: the connection failed or the answer was not the API's JSON."""

    type = "transport"


class ScriptError(ExecutorError):
    """The run happened and failed (HTTP 422): ``stdout``, ``stderr`` and
    ``usage`` are what the script produced and consumed before it ended."""

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "",
                 usage: Optional[Any] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.stdout = stdout
        self.stderr = stderr
        self.usage = usage


class InvalidRequest(ExecutorError):
    type = "invalid_request"


class Unauthorized(ExecutorError):
    type = "unauthorized"


class NotFound(ExecutorError):
    type = "not_found"


class MethodNotAllowed(ExecutorError):
    type = "method_not_allowed"


class RequestTimeout(ExecutorError):
    type = "request_timeout"


class RequestTooLarge(ExecutorError):
    type = "request_too_large"


class UnsupportedMediaType(ExecutorError):
    type = "unsupported_media_type"


class HeadersTooLarge(ExecutorError):
    type = "headers_too_large"


class ScriptSyntaxError(ScriptError):
    type = "syntax_error"


class MissingMain(ScriptError):
    type = "missing_main"


class ScriptRuntimeError(ScriptError):
    type = "runtime_error"


class ResultNotJSON(ScriptError):
    type = "result_not_json"


class Timeout(ScriptError):
    type = "timeout"


class MemoryLimit(ScriptError):
    type = "memory_limit"


class OutputLimit(ScriptError):
    type = "output_limit"


class Overloaded(ExecutorError):
    """Every worker was busy. ``retry_after`` is the server's Retry-After in
    seconds. The client already retried up to its ``max_retries``."""

    type = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class SandboxUnavailable(ExecutorError):
    type = "sandbox_unavailable"


class Internal(ExecutorError):
    type = "internal"


_CLASSES = (
    InvalidRequest, Unauthorized, NotFound, MethodNotAllowed, RequestTimeout, RequestTooLarge,
    UnsupportedMediaType, HeadersTooLarge, ScriptSyntaxError, MissingMain, ScriptRuntimeError,
    ResultNotJSON, Timeout, MemoryLimit, OutputLimit, Overloaded, SandboxUnavailable, Internal,
)

#: Every error type of the API, in the order of docs/API.md. The tests check
#: it against the ErrorType enum of the server's GET /openapi.json.
ERROR_TYPES = tuple(c.type for c in _CLASSES)

_BY_TYPE: Dict[str, Type[ExecutorError]] = {c.type: c for c in _CLASSES}


def error_class(type_: str) -> Type[ExecutorError]:
    """The class of an error type; :class:`ExecutorError` for a type this
    version of the client does not know (a newer server)."""
    return _BY_TYPE.get(type_, ExecutorError)

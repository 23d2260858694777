"""The HTTP client. Standard library only (urllib)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import errors

__all__ = ["Client", "ExecuteResult", "BatchResult", "BatchItem", "Usage"]


class _NoInput:
    def __repr__(self) -> str:
        return "NO_INPUT"


#: The default of ``input``: main() is called with no argument. Pass
#: ``input=None`` to call main(None).
NO_INPUT: Any = _NoInput()


@dataclass(frozen=True)
class Usage:
    """What a run consumed. ``cpu_ms`` and ``memory_peak_bytes`` are None
    when the server cannot measure them (no cgroups); a batch's usage covers
    the whole run."""

    wall_ms: float
    cpu_ms: Optional[float] = None
    memory_peak_bytes: Optional[int] = None

    @classmethod
    def from_json(cls, u: Optional[Mapping[str, Any]]) -> Optional["Usage"]:
        if u is None:
            return None
        return cls(wall_ms=u["wall_ms"], cpu_ms=u.get("cpu_ms"), memory_peak_bytes=u.get("memory_peak_bytes"))


@dataclass(frozen=True)
class ExecuteResult:
    """The answer of POST /execute: main's return value and the output."""

    result: Any
    stdout: str
    stderr: str
    duration_ms: float
    usage: Usage
    request_id: Optional[str]


@dataclass(frozen=True)
class BatchItem:
    """One record's outcome: ``result``, or ``error`` (not raised: one bad
    record does not fail the batch)."""

    result: Any
    stdout: str
    error: Optional[errors.ScriptError]

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The result, or raise the record's error."""
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(frozen=True)
class BatchResult:
    """The answer of POST /execute/batch: one item per record, in order."""

    results: List[BatchItem]
    stderr: str
    duration_ms: float
    usage: Usage
    request_id: Optional[str]


class Client:
    """A client of one executor.

    ``api_key`` is sent as ``Authorization: Bearer`` when given. ``timeout``
    bounds each HTTP request in seconds. A ``429 overloaded`` answer is
    retried after its ``Retry-After`` (at most ``max_retry_wait`` seconds
    each), up to ``max_retries`` times; then :class:`errors.Overloaded` is
    raised. Nothing else is retried: a 422 is the script's failure, and
    running it again gives the same answer.
    """

    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout: float = 30.0,
                 max_retries: int = 3, max_retry_wait: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep

    def execute(self, script: str, input: Any = NO_INPUT, *, timeout_ms: Optional[int] = None,
                memory_limit_mb: Optional[int] = None) -> ExecuteResult:
        """Run ``script`` once: ``main()``, or ``main(input)`` when input is given."""
        body: Dict[str, Any] = {"script": script}
        if input is not NO_INPUT:
            body["input"] = input
        _limits(body, timeout_ms, memory_limit_mb)
        doc, rid = self._run("/execute", body)
        return ExecuteResult(result=doc["result"], stdout=doc["stdout"], stderr=doc["stderr"],
                             duration_ms=doc["duration_ms"], usage=Usage.from_json(doc["usage"]), request_id=rid)

    def execute_batch(self, script: str, inputs: Sequence[Any], *, timeout_ms: Optional[int] = None,
                      memory_limit_mb: Optional[int] = None) -> BatchResult:
        """Run ``script`` once and call ``main(record)`` for every record."""
        body: Dict[str, Any] = {"script": script, "inputs": list(inputs)}
        _limits(body, timeout_ms, memory_limit_mb)
        doc, rid = self._run("/execute/batch", body)
        items = [BatchItem(result=it.get("result"), stdout=it["stdout"],
                           error=_script_error(it["error"], 422, rid) if "error" in it else None)
                 for it in doc["results"]]
        return BatchResult(results=items, stderr=doc["stderr"], duration_ms=doc["duration_ms"],
                           usage=Usage.from_json(doc["usage"]), request_id=rid)

    def runtime(self) -> Dict[str, Any]:
        """GET /runtime: Python version, preloaded modules, limits, isolation, version."""
        return self._send("GET", "/runtime", None)[2]

    def openapi(self) -> Dict[str, Any]:
        """GET /openapi.json: the server's OpenAPI 3.1 document."""
        return self._send("GET", "/openapi.json", None)[2]

    def _run(self, path: str, body: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[str]]:
        data = json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            status, headers, doc = self._send("POST", path, data)
            rid = headers.get("X-Request-Id")
            if status == 200:
                return doc, rid
            err = _error_of(status, headers, doc)
            if isinstance(err, errors.Overloaded) and attempt < self.max_retries:
                attempt += 1
                self._sleep(min(err.retry_after, self.max_retry_wait))
                continue
            raise err

    def _send(self, method: str, path: str, data: Optional[bytes]) -> Tuple[int, Mapping[str, str], Any]:
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", "Bearer " + self.api_key)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, headers, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers, raw = e.code, e.headers, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise errors.TransportError(f"{method} {path}: {e}") from e
        try:
            return status, headers, json.loads(raw)
        except ValueError as e:
            raise errors.TransportError(f"{method} {path}: answer {status} is not JSON: {raw[:200]!r}",
                                        status=status) from e


def _limits(body: Dict[str, Any], timeout_ms: Optional[int], memory_limit_mb: Optional[int]) -> None:
    if timeout_ms is not None:
        body["timeout_ms"] = timeout_ms
    if memory_limit_mb is not None:
        body["memory_limit_mb"] = memory_limit_mb


def _script_error(detail: Mapping[str, Any], status: int, rid: Optional[str],
                  doc: Optional[Mapping[str, Any]] = None) -> Any:
    cls = errors.error_class(detail.get("type", ""))
    kw: Dict[str, Any] = dict(status=status, request_id=rid, line=detail.get("line"),
                              traceback=detail.get("traceback"))
    if cls is errors.ExecutorError:
        kw["type"] = detail.get("type", "")
    if issubclass(cls, errors.ScriptError):
        doc = doc or {}
        kw.update(stdout=doc.get("stdout", ""), stderr=doc.get("stderr", ""), usage=Usage.from_json(doc.get("usage")))
    return cls(detail.get("message", ""), **kw)


def _error_of(status: int, headers: Mapping[str, str], doc: Any) -> errors.ExecutorError:
    rid = headers.get("X-Request-Id")
    detail = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(detail, dict):
        return errors.TransportError(f"answer {status} is not an API error: {str(doc)[:200]}", status=status, request_id=rid)
    if detail.get("type") == errors.Overloaded.type:
        try:
            retry_after = float(headers.get("Retry-After", "1"))
        except ValueError:
            retry_after = 1.0
        return errors.Overloaded(detail.get("message", ""), retry_after=retry_after, status=status, request_id=rid)
    return _script_error(detail, status, rid, doc)

"""The client against the real server (bin/executor with real nsjail)."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

from executor_client import Client, errors

CRM_TRANSFORM = '''
def main(contact):
    email = contact["email"].strip().lower()
    first, _, last = contact["name"].strip().partition(" ")
    return {
        "email": email,
        "first_name": first.title(),
        "last_name": last.title() or None,
        "domain": email.split("@", 1)[1],
        "lifetime_value": round(sum(o["amount"] for o in contact.get("orders", [])), 2),
    }
'''


def test_execute_returns_main_s_result_its_output_and_usage(server):
    run = Client(server.url).execute("def main():\n    print('hello')\n    return {'msg': 'done'}")
    assert run.result == {"msg": "done"}
    assert run.stdout == "hello\n" and run.stderr == ""
    assert run.usage.wall_ms > 0 and run.duration_ms > 0
    assert run.request_id


def test_input_is_passed_to_main_and_none_is_not_the_same_as_no_input(server):
    c = Client(server.url)
    assert c.execute("def main(x='absent'):\n    return x").result == "absent"
    assert c.execute("def main(x='absent'):\n    return x", input=None).result is None
    row = c.execute(CRM_TRANSFORM, input={"email": " Ada@Example.COM ", "name": "ada lovelace",
                                          "orders": [{"amount": 10.5}]}).result
    assert row == {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace",
                   "domain": "example.com", "lifetime_value": 10.5}


def test_a_batch_answers_one_item_per_record_and_a_bad_record_fails_alone(server):
    res = Client(server.url).execute_batch(CRM_TRANSFORM, [
        {"email": "a@b.io", "name": "ann lee"}, {"name": "no email"}])
    assert [it.ok for it in res.results] == [True, False]
    assert res.results[0].unwrap()["domain"] == "b.io"
    assert isinstance(res.results[1].error, errors.ScriptRuntimeError)
    assert "KeyError" in res.results[1].error.message
    with pytest.raises(errors.ScriptRuntimeError):
        res.results[1].unwrap()
    assert res.usage.wall_ms > 0


@pytest.mark.parametrize("script,kwargs,cls", [
    ("def main(:\n", {}, errors.ScriptSyntaxError),
    ("x = 1\n", {}, errors.MissingMain),
    ("def main():\n    print('before')\n    return 1 / 0\n", {}, errors.ScriptRuntimeError),
    ("def main():\n    return {1, 2}\n", {}, errors.ResultNotJSON),
    ("def main():\n    while True:\n        pass\n", {"timeout_ms": 200}, errors.Timeout),
    ("def main():\n    return len(bytearray(4 << 30))\n", {}, errors.MemoryLimit),
    ("def main():\n    print('x' * (2 << 20))\n", {}, errors.OutputLimit),
    ("def main():\n    return 1\n", {"memory_limit_mb": 1}, errors.InvalidRequest),
    ("", {}, errors.InvalidRequest),
])
def test_each_error_type_raises_its_own_class(server, script, kwargs, cls):
    with pytest.raises(cls) as info:
        Client(server.url).execute(script, **kwargs)
    e = info.value
    assert e.type == cls.type and e.message and e.request_id
    if issubclass(cls, errors.ScriptError):
        assert e.status == 422 and e.usage is not None
    if cls is errors.ScriptRuntimeError:
        assert e.stdout == "before\n" and e.line == 3 and "ZeroDivisionError" in e.traceback


def test_a_wrong_api_key_raises_unauthorized_and_the_right_one_runs(keyed_server):
    with pytest.raises(errors.Unauthorized):
        Client(keyed_server.url, api_key="wrong").execute("def main():\n    return 1")
    assert Client(keyed_server.url, api_key="right-key").execute("def main():\n    return 1").result == 1


def test_the_client_knows_exactly_the_servers_error_types(server):
    doc = Client(server.url).openapi()
    assert tuple(doc["components"]["schemas"]["ErrorType"]["enum"]) == errors.ERROR_TYPES
    for t in errors.ERROR_TYPES:
        assert errors.error_class(t).type == t


def test_runtime_names_the_python_version_and_the_limits(server):
    rt = Client(server.url).runtime()
    assert rt["isolation"] in ("cell", "jail") and rt["python"]["version"].startswith("3.")
    assert rt["limits"]["max_timeout_ms"] == 3000 and rt["limits"]["max_memory_mb"] == 128


def _wait_metric(srv, series: str, want: float) -> None:
    deadline = time.monotonic() + 20
    while srv.metric(series) != want:
        assert time.monotonic() < deadline, f"{series} never became {want}"
        time.sleep(0.01)


def _hold_the_only_worker(srv, seconds: float) -> threading.Thread:
    """Starts a run that holds the server's one worker for a while, and
    returns once it has the worker."""
    _wait_metric(srv, "executor_pool_idle_workers", 1)
    t = threading.Thread(target=lambda: Client(srv.url, max_retries=10).execute(
        f"import time\ndef main():\n    time.sleep({seconds})\n    return 1"))
    t.start()
    _wait_metric(srv, "executor_pool_acquired_workers", 1)
    return t


def test_overloaded_is_retried_per_retry_after_up_to_the_bound_then_raised(one_worker_server):
    holder = _hold_the_only_worker(one_worker_server, 1.0)
    slept: List[float] = []
    with pytest.raises(errors.Overloaded) as info:
        Client(one_worker_server.url, max_retries=2, sleep=slept.append).execute("def main():\n    return 1")
    holder.join()
    assert slept == [1.0, 1.0]
    assert info.value.retry_after == 1.0 and info.value.status == 429


def test_a_retried_request_succeeds_once_a_worker_is_free(one_worker_server):
    holder = _hold_the_only_worker(one_worker_server, 0.3)
    run = Client(one_worker_server.url, max_retries=10).execute("def main():\n    return 'after'")
    holder.join()
    assert run.result == "after"

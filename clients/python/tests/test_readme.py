"""The README's example runs as written against a real server."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs_as_written_and_prints_what_it_says(server, monkeypatch):
    text = README.read_text()
    example = re.search(r"## Example.*?```python\n(.*?)```", text, re.S).group(1)
    printed = re.search(r"Printed \(timings vary\):\n\n```\n(.*?)```", text, re.S).group(1)
    monkeypatch.setenv("EXECUTOR_URL", server.url)
    monkeypatch.delenv("EXECUTOR_API_KEY", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, str(README), "exec"), {"__name__": "readme"})
    got, want = out.getvalue().splitlines(), printed.splitlines()
    assert len(got) == len(want)
    timing = re.compile(r"\d+(\.\d+)? ms")
    for g, w in zip(got, want):
        # The server under test has --timeout 3s; the README's has the default 5 s.
        w = w.replace("up to 5000", "up to 3000")
        assert timing.sub("N ms", g) == timing.sub("N ms", w)


REPO_README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_repository_readme_python_example_runs_as_written(server, monkeypatch):
    text = REPO_README.read_text()
    example = re.search(r"```python\n(# pip install ./clients/python\n.*?)```", text, re.S).group(1)
    monkeypatch.setenv("EXECUTOR_URL", server.url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, str(REPO_README), "exec"), {"__name__": "readme"})
    shown = [line.split("# ", 1)[1] for line in example.splitlines() if line.startswith("    print(") or line.startswith("print(")]
    assert out.getvalue().splitlines() == [s.strip() for s in shown]

#!/usr/bin/env bash
# The Python client's tests (clients/python/tests) against the real
# bin/executor; called by `make test` after `make build`. Idempotent: the
# venv in .tools/pyclient-venv and pytest in it are made once; the client is
# reinstalled from clients/python each time (`pip install ./clients/python`,
# as a user would). pytest's exit status 5 (no test collected) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.tools/pyclient-venv
PY=/usr/bin/python3

if [ ! -x "$VENV/bin/python" ]; then
	if ! "$PY" -m venv "$VENV"; then
		rm -rf "$VENV"
		apt-get install -y python3-venv || { apt-get update && apt-get install -y python3-venv; }
		"$PY" -m venv "$VENV"
	fi
fi
if ! "$VENV/bin/python" -c 'import pytest' 2>/dev/null; then
	"$VENV/bin/pip" install --quiet 'pytest>=8,<9'
fi
"$VENV/bin/pip" install --quiet --no-deps --force-reinstall ./clients/python

set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider clients/python/tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
	echo "test-python-client: pytest collected no tests; that is a failure" >&2
	exit 1
fi
exit "$rc"

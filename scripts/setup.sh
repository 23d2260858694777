#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine, and nothing
# when it is already there (a second run takes well under a second).
#   scripts/setup.sh run    what `make run` needs: nsjail, Python, Go modules
#   scripts/setup.sh test   also what the tests need: promtool and a real
#                           Prometheus server, numpy for the transform tests
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}

need_apt=()
[ -x /usr/bin/python3 ] || need_apt+=(python3)
if [ "$what" = test ]; then
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  /usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || need_apt+=(python3-numpy)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The prometheus package starts a server on :9090 through its service
  # scripts; policy-rc.d stops that: tests start their own on loopback.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

scripts/install-nsjail.sh
go mod download

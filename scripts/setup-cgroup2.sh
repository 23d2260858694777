#!/usr/bin/env bash
# Installs what `make test-cgroup2` needs to boot a cgroup v2 guest under
# QEMU, and nothing when it is already there (a second run takes well under
# a second):
#   - Debian's qemu-system-x86 and busybox-static (virtme-ng builds its
#     initramfs from busybox);
#   - a Debian kernel: the newest /boot/vmlinuz-* that has its modules in
#     /lib/modules is reused, else linux-image-amd64 is installed (Debian's
#     kernels are cgroup v2 by default);
#   - virtme-ng (vng) from PyPI, pinned, in a venv under .tools/virtme-ng/.
# It prints the kernel image to use on its last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

VIRTME_NG_VERSION=1.42
venv=.tools/virtme-ng

# newest_kernel prints the newest /boot/vmlinuz-<v> whose /lib/modules/<v>
# exists (vng loads the guest's virtio and 9p/virtiofs modules from there).
newest_kernel() {
  local k
  for k in /boot/vmlinuz-*; do
    if [ -e "$k" ] && [ -d "/lib/modules/${k#/boot/vmlinuz-}/kernel" ]; then echo "$k"; fi
  done | sort -V | tail -1
}

need_apt=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
# virtme-ng copies busybox into the guest's initramfs: it must be the static one.
[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] || need_apt+=(busybox-static)
[ -n "$(newest_kernel)" ] || need_apt+=(linux-image-amd64)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup-cgroup2: installing Debian packages: ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # INITRD=No: the kernel's hook skips building a host initramfs (40 s
  # here); vng boots it with an initramfs of its own made from busybox.
  INITRD=No apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

kernel=$(newest_kernel)
if [ -z "$kernel" ]; then
  echo "setup-cgroup2: no kernel: no /boot/vmlinuz-<version> with /lib/modules/<version> after installing linux-image-amd64" >&2
  exit 1
fi
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  echo "setup-cgroup2: qemu-system-x86_64 is still missing after installing qemu-system-x86" >&2
  exit 1
fi
# The image is 0600 on Debian; QEMU reads it as root anyway, but vng checks
# readability itself in some versions.
[ -r "$kernel" ] || chmod a+r "$kernel"

if [ "$("$venv/bin/vng" --version 2>/dev/null | awk '{print $NF}')" != "$VIRTME_NG_VERSION" ]; then
  echo "setup-cgroup2: installing virtme-ng $VIRTME_NG_VERSION into $venv" >&2
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION"
fi
echo "$kernel"

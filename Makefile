# ocpp-gateway — the two commands a newcomer needs are `make run` and `make test`.
# Both install what is missing (Debian packages, the Python venv for the interop peers) first.

SHELL      := /bin/bash
.SHELLFLAGS := -eo pipefail -c
SWIFT      ?= swift
BUILD_DIR  ?= .build
CONFIG     ?= gateway.yaml
VENV       := .venv
PYTHON     ?= python3
BIN        := $(BUILD_DIR)/debug
APT_STAMP  := $(BUILD_DIR)/.apt-packages
VENV_STAMP := $(VENV)/.installed

# Debian packages the build, the tests and `make run` need (libmosquitto for the health channel,
# the mosquitto broker for its tests, headless Chromium and its driver for the status page's browser test).
APT_PACKAGES := curl ca-certificates python3-venv pkg-config libmosquitto-dev mosquitto libsqlite3-dev chromium chromium-driver

# Fuzzing: `make fuzz SECONDS=600`. LeakSanitizer is off: Swift keeps its lazily built global
# tables behind tagged pointers that LSan cannot follow, so every static reads as a leak.
SECONDS    ?= 600
FUZZ_DIR   := .build-fuzz
# Crash inputs go to $(FUZZ_DIR), never to the working directory (libFuzzer's default): every
# invocation takes FUZZ_FLAGS, which carries the prefix.
FUZZ_FLAGS := -detect_leaks=0 -max_len=16384 -artifact_prefix=$(CURDIR)/$(FUZZ_DIR)/

.PHONY: all build test test-swift test-tsan test-interop test-fuzz fuzz fuzz-build schemas bench bench-full bench-deps bench-profile run validate stages clean deps venv help

all: build

help:
	@echo "make run       build, create a development PKI, start CSMS + gateway + a legacy charger"
	@echo "make test      build and run every test (Swift unit/end-to-end, Python interop)"
	@echo "make validate  check $(CONFIG) and its pipeline"
	@echo "make fuzz      fuzz the frame parser and validator for SECONDS (default 600)"
	@echo "make bench     latency, throughput, memory, scale vs nginx (writes docs/benchmarks.md)"
	@echo "make clean     remove build output and state/"

## Install missing Debian packages (runs apt-get update once).
deps: $(APT_STAMP)
$(APT_STAMP): Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi
	@mkdir -p $(BUILD_DIR) && touch $@

## The Python venv with the independent OCPP implementation used by the interop tests.
venv: $(VENV_STAMP)
$(VENV_STAMP): Tests/Interop/requirements.txt | $(APT_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r Tests/Interop/requirements.txt
	@touch $@

build: $(APT_STAMP)
	$(SWIFT) build --build-tests

test: test-swift test-tsan test-fuzz test-interop

test-swift: build
	$(SWIFT) test --skip-build

## ThreadSanitizer over the router, gateway (real sockets) and stage tests: any report fails the build.
TSAN_DIR := .build-tsan
test-tsan: $(APT_STAMP)
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path $(TSAN_DIR)
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/Tests/tsan-suppressions.txt" \
		$(SWIFT) test --skip-build --sanitize=thread --scratch-path $(TSAN_DIR) \
		--filter 'RouterTests|TransportTests|StageTests'

test-interop: build venv
	OCPP_GATEWAY_BIN=$(CURDIR)/$(BIN)/ocpp-gateway $(VENV)/bin/pytest -q Tests/Interop

## The libFuzzer harness over frame parsing, the envelope and payload validation (Tests/Fuzz).
fuzz-build: $(APT_STAMP)
	$(SWIFT) build --package-path Tests/Fuzz --scratch-path $(FUZZ_DIR) -c debug -Xswiftc -sanitize=fuzzer,address

fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/corpus
	SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 $(FUZZ_DIR)/debug/ocpp-fuzz $(FUZZ_FLAGS) -max_total_time=$(SECONDS) \
		$(FUZZ_DIR)/corpus Tests/Fuzz/corpus

## A short fuzz run as part of `make test`: any crash fails the build.
test-fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/corpus
	SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 $(FUZZ_DIR)/debug/ocpp-fuzz $(FUZZ_FLAGS) -max_total_time=15 \
		$(FUZZ_DIR)/corpus Tests/Fuzz/corpus 2>&1 | tail -n 3

## Benchmarks (release build): the gateway side by side with no proxy and with nginx.
## Writes bench/results/latest.json and docs/benchmarks.md.
## On two or more CPUs the proxy under test (nginx, the gateway) gets CPU 0 and ocpp-bench (load generator and
## development CSMS) the others, so saturation measures the proxy, not the load generator.
BENCH_PIN := $(shell n=$$(nproc); [ "$$n" -ge 2 ] && echo "taskset -c 1-$$((n - 1))")
BENCH_PROXY_CPU := $(if $(BENCH_PIN),--proxy-cpu 0)

bench-deps: $(APT_STAMP)
	@[ -x /usr/sbin/nginx ] && [ -x /usr/sbin/mosquitto ] && [ -x /usr/bin/valgrind ] && [ -x /usr/bin/taskset ] || { \
		if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q nginx mosquitto valgrind util-linux; }

## Instructions per relayed frame (callgrind; independent of the machine's load): bench/results/profile-*.json,
## quoted in docs/benchmarks.md by the next run.
bench-profile: bench-deps
	$(SWIFT) build -c release --product ocpp-gateway
	$(SWIFT) build -c release --product ocpp-bench
	for pipeline in default full; do \
		$(BUILD_DIR)/release/ocpp-bench --profile 2000 --callgrind --pipeline $$pipeline --gateway $(BUILD_DIR)/release/ocpp-gateway \
			--work .build-bench/profile-$$pipeline || exit 1; done

bench: bench-deps venv bench-profile
	$(SWIFT) build -c release --product ocpp-gateway
	$(SWIFT) build -c release --product ocpp-bench
	$(SWIFT) build -c release --product ocpp-sim
	ulimit -n 65536 2>/dev/null || true; $(BENCH_PIN) $(BUILD_DIR)/release/ocpp-bench $(BENCH_PROXY_CPU) --gateway $(BUILD_DIR)/release/ocpp-gateway
	## The abuse scenario against the shipped default pipeline, release build, gateway and attackers on separate cores:
	## writes bench/results/abuse.json (p99 under abuse vs 2 × idle + 1 ms, RSS growth, descriptors).
	ABUSE_BENCH=1 OCPP_GATEWAY_BIN=$(CURDIR)/$(BUILD_DIR)/release/ocpp-gateway $(VENV)/bin/pytest -q -s Tests/Interop/test_abuse.py

bench-full: bench-deps
	$(SWIFT) build -c release --product ocpp-gateway
	$(SWIFT) build -c release --product ocpp-bench
	ulimit -n 65536 2>/dev/null || true; $(BENCH_PIN) $(BUILD_DIR)/release/ocpp-bench $(BENCH_PROXY_CPU) --full --gateway $(BUILD_DIR)/release/ocpp-gateway

## Regenerates Sources/OCPP/Validation/Schemas16.generated.swift and Schemas201.generated.swift from the OCA schemas.
schemas: venv
	$(VENV)/bin/python scripts/generate-schemas.py
	$(VENV)/bin/python scripts/generate-schemas-201.py

validate: build
	$(BIN)/ocpp-sim pki --state state --charger CP001 >/dev/null
	$(BIN)/ocpp-gateway validate --config $(CONFIG)

stages: build
	@$(BIN)/ocpp-gateway stages

run: build
	@scripts/run-dev.sh $(BIN) $(CONFIG)

clean:
	rm -rf $(BUILD_DIR) state

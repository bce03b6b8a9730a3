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
# The Prometheus server that checks the Grafana dashboard's queries; systemd-analyze and systemd-sysusers for the install test.
APT_PACKAGES += prometheus systemd

# Fuzzing: `make fuzz SECONDS=600`. LeakSanitizer is off: Swift keeps its lazily built global
# tables behind tagged pointers that LSan cannot follow, so every static reads as a leak.
SECONDS    ?= 600
FUZZ_DIR   := .build-fuzz
# Crash inputs go to $(FUZZ_DIR), never to the working directory (libFuzzer's default): every
# invocation takes FUZZ_FLAGS, which carries the prefix.
FUZZ_FLAGS := -detect_leaks=0 -max_len=16384 -artifact_prefix=$(CURDIR)/$(FUZZ_DIR)/

.PHONY: all build test test-swift test-tsan test-interop test-fuzz fuzz fuzz-build schemas bench bench-full bench-deps bench-profile run run-201 validate stages clean deps venv help \
	test-shipped release man install install-files deb deb-package

all: build

help:
	@echo "make run       build, create a development PKI, start CSMS + gateway + a legacy charger"
	@echo "make run-201   the same against a development CSMS that speaks OCPP 2.0.1"
	@echo "make test      build and run every test (Swift unit/end-to-end, Python interop)"
	@echo "make validate  check $(CONFIG) and its pipeline"
	@echo "make run PIPELINE=site   the same with pipelines/site.yaml (every stage) and a local mosquitto"
	@echo "make install   release binary, systemd unit, /etc/ocpp-gateway, man page (PREFIX=$(PREFIX), DESTDIR)"
	@echo "make deb       ocpp-gateway_<version>_<arch>.deb in $(BUILD_DIR)/ (docs/install.md)"
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

test: test-swift test-tsan test-fuzz test-shipped test-interop

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

## Every release build (bench, bench-profile, bench-full, release, install, deb) links the same way: the Swift
## runtime, Foundation and ICU statically (the box needs no Swift; no symbol lookup and relocation across 15
## shared libraries at start) and without exporting the executable's symbols to the dynamic linker (nothing
## dlopens the gateway; backtraces read .symtab, which stays). Idle RSS figures: docs/scaling.md, "Idle".
RELEASE_FLAGS ?= -c release --static-swift-stdlib -Xlinker --no-export-dynamic

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
	$(SWIFT) build $(RELEASE_FLAGS) --product ocpp-gateway
	$(SWIFT) build $(RELEASE_FLAGS) --product ocpp-bench
	for pipeline in minimal default full; do \
		$(BUILD_DIR)/release/ocpp-bench --profile 2000 --callgrind --pipeline $$pipeline --gateway $(BUILD_DIR)/release/ocpp-gateway \
			--work .build-bench/profile-$$pipeline || exit 1; done
	## Scenario G's charger mix (MeterValues, transactions, status) over 100 chargers: profile-*-mix.json.
	for pipeline in default full; do \
		$(BUILD_DIR)/release/ocpp-bench --profile 4000 --callgrind --load mix --chargers 100 --pipeline $$pipeline \
			--gateway $(BUILD_DIR)/release/ocpp-gateway --work .build-bench/profile-$$pipeline-mix || exit 1; done

bench: bench-deps venv bench-profile
	$(SWIFT) build $(RELEASE_FLAGS) --product ocpp-gateway
	$(SWIFT) build $(RELEASE_FLAGS) --product ocpp-bench
	$(SWIFT) build $(RELEASE_FLAGS) --product ocpp-sim
	ulimit -n 65536 2>/dev/null || true; $(BENCH_PIN) $(BUILD_DIR)/release/ocpp-bench $(BENCH_PROXY_CPU) --gateway $(BUILD_DIR)/release/ocpp-gateway
	## The abuse scenario against the shipped default pipeline, release build, gateway and attackers on separate cores:
	## writes bench/results/abuse.json (p99 under abuse vs 2 × idle + 1 ms, RSS growth, descriptors).
	ABUSE_BENCH=1 OCPP_GATEWAY_BIN=$(CURDIR)/$(BUILD_DIR)/release/ocpp-gateway $(VENV)/bin/pytest -q -s Tests/Interop/test_abuse.py
	## The same with the per-connection message budget off: the flood gets in at full rate (bench/results/abuse-no-budget.json).
	ABUSE_BENCH=1 ABUSE_BUDGET=0 OCPP_GATEWAY_BIN=$(CURDIR)/$(BUILD_DIR)/release/ocpp-gateway $(VENV)/bin/pytest -q -s Tests/Interop/test_abuse.py

bench-full: bench-deps
	$(SWIFT) build $(RELEASE_FLAGS) --product ocpp-gateway
	$(SWIFT) build $(RELEASE_FLAGS) --product ocpp-bench
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

## `make run PIPELINE=site` (a name under pipelines/ or a path): the same development setup with that
## pipeline. state/gateway-<pipeline>.yaml is $(CONFIG) with the pipeline swapped in; a pipeline with an
## mqtt_tap stage also gets an `mqtt:` section and a mosquitto on 127.0.0.1:$(MQTT_PORT) (unless one listens).
PIPELINE  ?=
MQTT_PORT ?= 1883
RUN_PIPELINE = $(if $(wildcard $(PIPELINE)),$(PIPELINE),pipelines/$(PIPELINE).yaml)
SHIPPED_PIPELINES := $(wildcard pipelines/*.yaml)

run: build
ifeq ($(PIPELINE),)
	@scripts/run-dev.sh $(BIN) $(CONFIG)
else
	@pipeline="$(RUN_PIPELINE)"; \
	[ -f "$$pipeline" ] || { echo "no pipeline $$pipeline; shipped: $(SHIPPED_PIPELINES)" >&2; exit 2; }; \
	mkdir -p state; config="state/gateway-$$(basename "$$pipeline")"; \
	sed -e 's|"state/|"$(CURDIR)/state/|' -e 's|^state_dir:.*|state_dir: "$(CURDIR)/state"|' \
		-e "s|^pipeline:.*|pipeline: \"$$(realpath "$$pipeline")\"|" $(CONFIG) > "$$config"; \
	if grep -qE '^[^#]*type:[[:space:]]*mqtt_tap' "$$pipeline"; then \
		printf 'mqtt:\n  url: "mqtt://127.0.0.1:%s"\n  client_id: "dev-gateway"\n  topic_prefix: "ocpp"\n' $(MQTT_PORT) >> "$$config"; \
		if ! (exec 3<>/dev/tcp/127.0.0.1/$(MQTT_PORT)) 2>/dev/null; then \
			printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' $(MQTT_PORT) > state/mosquitto.conf; \
			mosquitto -c state/mosquitto.conf > state/mosquitto.log 2>&1 & broker=$$!; \
			trap 'kill $$broker 2>/dev/null || true' EXIT; \
			echo "mosquitto on 127.0.0.1:$(MQTT_PORT) (log: state/mosquitto.log)"; \
		fi; \
		echo "health channel: mosquitto_sub -h 127.0.0.1 -p $(MQTT_PORT) -t 'ocpp/#' -v"; \
	fi; \
	echo "pipeline $$pipeline, configuration $$config"; \
	scripts/run-dev.sh $(BIN) "$$config"
endif

## Every shipped configuration passes `ocpp-gateway validate`: gateway.yaml, the example production
## configuration (docs/deploy/gateway.yaml, as installed next to pipelines/), and each pipelines/*.yaml
## under that configuration (with a temporary state_dir: stages such as mqtt_tap make files in it).
test-shipped: build
	@$(BIN)/ocpp-sim pki --state state --charger CP001 >/dev/null
	$(BIN)/ocpp-gateway validate --config $(CONFIG)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/etc/pipelines"; cp $(SHIPPED_PIPELINES) "$$tmp/etc/pipelines/"; cp docs/deploy/gateway.yaml "$$tmp/etc/"; \
	echo "docs/deploy/gateway.yaml, installed:"; $(BIN)/ocpp-gateway validate --config "$$tmp/etc/gateway.yaml"; \
	for p in $(SHIPPED_PIPELINES); do \
		config="$$tmp/gateway-$$(basename $$p)"; \
		sed -e "s|^pipeline:.*|pipeline: \"$(CURDIR)/$$p\"|" -e "s|^state_dir:.*|state_dir: \"$$tmp/state\"|" \
			docs/deploy/gateway.yaml > "$$config"; \
		echo "$$p under docs/deploy/gateway.yaml:"; $(BIN)/ocpp-gateway validate --config "$$config"; \
	done

## Install (docs/install.md). `make install` builds the release binary (Swift runtime linked statically,
## so the box needs no Swift) and the man page, then installs; `install-files` only copies (the install
## test uses it with INSTALL_BIN=the debug build). Configuration files already present are kept.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(SYSCONFDIR)/sysusers.d
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/ocpp-gateway
INSTALL_BIN ?= $(BUILD_DIR)/release/ocpp-gateway
MANPAGE     ?= $(BUILD_DIR)/plugins/GenerateManual/outputs/ocpp-gateway/ocpp-gateway.1
VERSION     ?= 0.1.0$(shell n=$$(git rev-list --count HEAD 2>/dev/null) && echo "+git$$n")
# Debug sections only: symbols stay for Swift's backtraces (the release binary drops from ~160 MB to ~104 MB).
STRIP       ?= strip --strip-debug
DEB_OUT     ?= $(BUILD_DIR)
DEB_ROOT    ?= $(BUILD_DIR)/deb-root
ETC         := $(DESTDIR)$(SYSCONFDIR)/ocpp-gateway

release: $(APT_STAMP)
	$(SWIFT) build $(RELEASE_FLAGS) --product ocpp-gateway

## The man page from the argument parser: swift-argument-parser's generate-manual plugin (in the
## checked-out package; it builds the products in debug first, which `make build` or `make run` already did).
man: $(APT_STAMP)
	$(SWIFT) package plugin generate-manual --configuration debug >/dev/null
	@test -s $(MANPAGE)

install: release man install-files
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers $(SYSUSERSDIR)/ocpp-gateway.conf; \
		chgrp -R ocpp-gateway $(ETC); \
		systemctl daemon-reload; \
		echo "installed; edit $(ETC)/gateway.yaml, then: systemctl enable --now ocpp-gateway"; \
	fi

install-files:
	@test -x $(INSTALL_BIN) || { echo "$(INSTALL_BIN) is missing (make release)" >&2; exit 1; }
	@test -s $(MANPAGE) || { echo "$(MANPAGE) is missing (make man)" >&2; exit 1; }
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR)
	install -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/ocpp-gateway
	$(STRIP) $(DESTDIR)$(BINDIR)/ocpp-gateway
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' docs/deploy/ocpp-gateway.service > $(DESTDIR)$(UNITDIR)/ocpp-gateway.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ocpp-gateway.service
	install -m 0644 docs/deploy/ocpp-gateway.sysusers $(DESTDIR)$(SYSUSERSDIR)/ocpp-gateway.conf
	gzip -9n < $(MANPAGE) > $(DESTDIR)$(MANDIR)/man1/ocpp-gateway.1.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/ocpp-gateway.1.gz
	install -m 0644 README.md docs/install.md docs/configuration.md docs/operations.md docs/firewall.md docs/health-channel.md \
		docs/certificates.md docs/offline.md $(DESTDIR)$(DOCDIR)/
	install -d -m 0750 $(ETC) $(ETC)/pipelines
	@for f in docs/deploy/gateway.yaml $(SHIPPED_PIPELINES); do \
		case $$f in pipelines/*) dest=$(ETC)/$$f ;; *) dest=$(ETC)/$$(basename $$f) ;; esac; \
		if [ -e "$$dest" ]; then echo "keeping $$dest (present)"; else install -m 0640 "$$f" "$$dest" && echo "installed $$dest"; fi; \
	done

## A Debian package: ocpp-gateway_<version>_<arch>.deb in $(DEB_OUT) (dpkg-deb --root-owner-group).
deb: release man deb-package

deb-package:
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install-files DESTDIR=$(abspath $(DEB_ROOT)) PREFIX=/usr SYSCONFDIR=/etc \
		UNITDIR=/lib/systemd/system SYSUSERSDIR=/usr/lib/sysusers.d INSTALL_BIN=$(abspath $(INSTALL_BIN)) MANPAGE=$(abspath $(MANPAGE)) >/dev/null
	docs/deploy/debian/build.sh $(DEB_ROOT) $(VERSION) $(DEB_OUT)

# The same session against a development CSMS that speaks OCPP 2.0.1 (north.ocpp_version: "2.0.1", docs/ocpp201.md).
run-201: build
	@mkdir -p state
	@sed -e 's|^north:|north:\n  ocpp_version: "2.0.1"|' -e 's|"\./state"|"$(CURDIR)/state"|' -e 's|"state/|"$(CURDIR)/state/|' \
		-e 's|"pipelines/|"$(CURDIR)/pipelines/|' $(CONFIG) > state/gateway-201.yaml
	@NORTH=2.0.1 scripts/run-dev.sh $(BIN) state/gateway-201.yaml

clean:
	rm -rf $(BUILD_DIR) state

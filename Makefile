# Entry points for building, testing and demonstrating schedsync.
#
# The tests start real PostgreSQL clusters (internal/testkit/pgtest), so `test`,
# `bench` and `demo` first make sure the PostgreSQL server is installed
# (`deps`), and `test` sets CI so that a missing server fails the run instead
# of silently skipping every test that touches SQL.

SHELL := /bin/bash
# Go lives in /usr/local/go/bin on the CI machine and is not always in PATH.
export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
BIN     := bin/schedsync
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  := $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Same discovery as internal/testkit/pgtest: the server in PATH, or Debian's
# versioned directories, which are not in PATH.
PG_LIBDIR ?= /usr/lib/postgresql
HAVE_PG = { { command -v initdb && command -v pg_ctl && command -v postgres; } >/dev/null 2>&1 || \
	ls $(PG_LIBDIR)/*/bin/initdb >/dev/null 2>&1; }

.PHONY: all build test deps browser soak fuzz vet fmt demo clean bench gobench package

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/schedsync

# Installs the PostgreSQL server when it is missing, and only then: a
# repeated `make test` must not wait for apt. `browser` does the same for
# Chromium, with which `test` checks the status page in a real headless
# browser.
deps:
	@$(call apt_install,postgresql,$(HAVE_PG))
browser:
	@$(call apt_install,chromium,$(HAVE_CHROMIUM))

HAVE_CHROMIUM = { command -v chromium || command -v chromium-browser; } >/dev/null 2>&1
# apt_install,package,check: install package as root unless check passes.
define apt_install
if $(2); then exit 0; fi; \
if [ "$$(id -u)" != 0 ]; then \
	echo "deps: $(1) is not installed and the tests need it." >&2; \
	echo "deps: install it as root: apt-get install -y $(1) (or run make deps browser as root)" >&2; \
	exit 1; \
fi; \
echo "deps: installing $(1) (apt-get install -y $(1))"; \
export DEBIAN_FRONTEND=noninteractive; \
apt-get update && apt-get install -y $(1); \
if ! $(2); then echo "deps: $(1) is installed but still not found" >&2; exit 1; fi
endef

test: deps browser
	CI=$${CI:-true} $(GO) test -count=1 -timeout 30m ./...

# schedsync in both capture modes against native logical replication, side
# by side on throwaway clusters (bench/compare): rewrites the figures in
# BENCHMARKS.md and README.md and docs/bench-lag.png. About 25 minutes.
# Flags go in BENCHFLAGS, e.g. make bench BENCHFLAGS='-rounds 3'.
# `make gobench` runs the Go micro-benchmarks instead.
BENCHFLAGS ?=
bench: deps
	$(GO) run ./bench/compare $(BENCHFLAGS)

# The fault-injection soak (internal/e2e TestSoak): kill -9 of either
# service and of verify, database crashes, cut connections and bad clients
# against a live pair, SOAK long per capture mode, then an exact row-by-row
# comparison. make test runs a 45-second soak per mode.
# make soak SOAK=30m SOAKFLAGS='SCHEDSYNC_SOAK_MODES=logical SCHEDSYNC_SOAK_SEED=…'
# (SCHEDSYNC_SOAK_FAULTS='master disk full,connection cut' limits the faults)
SOAKLOG ?= /tmp/schedsync-soak.log
SOAK ?= 10m
SOAKFLAGS ?=
soak: deps
	set -o pipefail; CI=$${CI:-true} SCHEDSYNC_SOAK=$(SOAK) $(SOAKFLAGS) $(GO) test -count=1 -timeout 0 -run '^TestSoak$$' -v ./internal/e2e | \
		tee $(SOAKLOG) | grep -E '^(=== RUN|--- |    ---|ok|FAIL|PASS)|soak_test.go:[0-9]+: soak|rows_test' || \
		{ echo "soak failed; the whole log, failure included, is in $(SOAKLOG)"; exit 1; }

# Every fuzz target (or those whose name matches FUZZ) for FUZZTIME
# executions each, FUZZPARALLEL workers (one by default), one target after
# the other; each log and a summary line per target (exit code, seconds,
# executions) go to FUZZLOG.
# RELIABILITY.md's counts come from make fuzz FUZZTIME=10000000x.
# FUZZMINTIME bounds the minimizing of each new input: with Go's default
# (60 s) a target whose inputs keep reaching new code (the config loader's
# YAML and TOML parsers) spends most of its time minimizing, and a worker
# that overruns is killed and restarted, its executions lost.
FUZZTIME ?= 10000000x
FUZZMINTIME ?= 5s
FUZZ ?= .
FUZZPARALLEL ?= 1
FUZZLOG ?= /tmp/schedsync-fuzz
fuzz:
	@mkdir -p $(FUZZLOG)
	@CI=$${CI:-true} $(GO) test -list '^Fuzz' ./... | \
		awk '/^Fuzz/ { n[++c] = $$1; next } /^ok/ { for (i = 1; i <= c; i++) print $$2, n[i]; c = 0 }' | \
		grep -E ' ($(FUZZ))' | while read pkg name; do \
			start=$$(date +%s); \
			$(GO) test $$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) -parallel $(FUZZPARALLEL) > $(FUZZLOG)/$$name.log 2>&1; rc=$$?; \
			echo "$$pkg $$name rc=$$rc secs=$$(( $$(date +%s) - start )) $$(grep -o 'execs: [0-9]*' $(FUZZLOG)/$$name.log | tail -1)" | tee -a $(FUZZLOG)/summary.txt; \
		done

gobench: deps
	CI=$${CI:-true} $(GO) test -run '^$$' -bench . ./...

vet:
	$(GO) vet ./...

fmt:
	$(GO) fmt ./...

# The demo (cmd/schedsync-demo) starts its own master and slave clusters with
# internal/testkit/pgtest and runs bin/schedsync through install, start, a Quartz
# workload, status, verify and stop, printing every command. Flags go in
# DEMOFLAGS, e.g. make demo DEMOFLAGS='-duration 30s -keep' or DEMOFLAGS=-mode=logical.
DEMOFLAGS ?=
DEMO      := bin/schedsync-demo
demo: deps build
	$(GO) build -o $(DEMO) ./cmd/schedsync-demo
	$(DEMO) -bin $(BIN) $(DEMOFLAGS)

# Debian package $(DIST)/schedsync_<version>_amd64.deb: a static binary
# (CGO_ENABLED=0) with this VERSION, the unit, example configs and maintainer
# scripts (packaging/). nfpm is pinned in packaging/nfpm/go.mod, a module of
# its own, so its dependencies stay out of go.mod. The version is VERSION
# made Debian-valid by packaging/deb-version.
DIST ?= dist
DEB_VERSION = $(shell sh packaging/deb-version '$(VERSION)')
package:
	@set -e; v='$(DEB_VERSION)'; dist='$(abspath $(DIST))'; test -n "$$v"; \
	rm -rf "$$dist/.build" "$$dist"/schedsync_*.deb; mkdir -p "$$dist/.build"; \
	echo "package: building schedsync $(VERSION) (Debian version $$v)"; \
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
		-o "$$dist/.build/schedsync" ./cmd/schedsync; \
	SCHEDSYNC_BIN="$$dist/.build/schedsync" DEB_VERSION="$$v" $(GO) -C packaging/nfpm tool nfpm \
		package --config nfpm.yaml --packager deb --target "$$dist/schedsync_$${v}_amd64.deb"; \
	rm -rf "$$dist/.build"

clean:
	rm -rf bin .demo

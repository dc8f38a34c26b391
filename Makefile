# hyper2kvm build. `make demo` and `make test` are the two commands a newcomer needs.
PREFIX    ?= /usr/local
DESTDIR   ?=
SYSCONFDIR ?= /etc
GO        ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin
E2E_TIMEOUT ?= 75m
# staticcheck for `make lint`, pinned: 2026.2.2 knows Go 1.26.
STATICCHECK_VERSION := v0.8.2

SHELL     := /bin/bash
export PATH := $(dir $(GO)):$(PATH)

.PHONY: all build deps deps-demo lint test test-unit test-e2e test-fidelity fuzz bench demo install deb clean

all: build

build:
	$(GO) build -trimpath -buildmode=pie -ldflags '$(LDFLAGS)' -o $(BIN)/hyper2kvmd ./cmd/hyper2kvmd
	$(GO) build -trimpath -buildmode=pie -ldflags '$(LDFLAGS)' -o $(BIN)/hyperctl ./cmd/hyperctl

# Debian packages by tier (packaging/deps.txt): the demo needs only what the
# product runs with plus the sample's tools; the tests need everything.
deps:
	./packaging/install-deps.sh run demo test
	$(GO) mod download

deps-demo:
	./packaging/install-deps.sh run demo
	$(GO) mod download

# Everything CI runs: lint, unit tests, a short fuzz run, then the end-to-end tests.
test: deps build lint test-unit fuzz test-e2e

# go vet and staticcheck (installed into bin/tools at the pinned version).
lint:
	$(GO) vet ./...
	GOBIN=$(CURDIR)/$(BIN)/tools $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(BIN)/tools/staticcheck ./...

# Fast tests, no root needed.
test-unit:
	$(GO) vet ./...
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e '/test$$' -e '/test/')
	$(GO) test -count=1 -run '^(TestLayout|TestClientsDoNotLinkTheDaemon|TestAgentDoesNotCallUpIntoItsAPIFace)$$' ./test/

# A short run of every fuzz target, seeds from testdata/fuzz.
fuzz:
	./test/fuzz.sh 10s

# Slow tests against real qemu, a real systemd box, real polkit and Chromium.
test-e2e: build
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) -v ./test/

# Every guest family (issue 19) with both backends, each original booted on
# its own controller first: slow (about 20 boots under TCG), not part of test.
test-fidelity: build
	HYPER2KVM_FIDELITY=1 $(GO) test -count=1 -timeout $(E2E_TIMEOUT) -v -run 'TestBootFamilies' ./test/

bench: deps build
	./test/bench.sh

demo: deps-demo build
	./test/demo.sh

install: build
	./packaging/install.sh "$(DESTDIR)" "$(PREFIX)" "$(SYSCONFDIR)" "$(BIN)"

deb: build
	./packaging/deb.sh "$(BIN)" "$(VERSION)"

clean:
	rm -rf $(BIN) bench/results/*.tmp

# The README's test command is `make test`: it needs only Go (and, for the
# steps that use them, installs what it needs itself).
GO ?= go

.PHONY: test check fmt vet unit debs peers conformance soak build clean fleet fleet-status fleet-down

test: check unit conformance

check: fmt vet

fmt:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The shard again with one P, as each worker runs by default: it then reads
# on the poller goroutine instead of the pool (shard.Shard.inlineReads).
unit: peers debs
	$(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 -cpu 1 ./shard

# Debian packages the tests use, as command:package: Chromium, for the chat
# page's tests in a real headless browser; HAProxy and systemd-analyze, to
# check deploy/'s balancer config and units. Installed when missing, with
# sudo only when not already root.
DEBS = chromium:chromium haproxy:haproxy systemd-analyze:systemd
debs:
	@missing=; for d in $(DEBS); do command -v $${d%%:*} >/dev/null 2>&1 || missing="$$missing $${d#*:}"; done; \
	if [ -n "$$missing" ]; then \
		command -v apt-get >/dev/null 2>&1 || { echo "missing:$$missing, and there is no apt-get: install them for the tests"; exit 1; }; \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "installing$$missing for the tests"; \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The bench peers are a module of their own, which ./... from here skips;
# Centrifugo is required by a module of its own below it. Building it here
# fills the go build cache for the bench tests that run it (the first build
# on a machine takes a few minutes).
peers:
	cd bench/peers && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd bench/peers/centrifugo && $(GO) vet ./... && $(GO) build -o /dev/null github.com/centrifugal/centrifugo/v6

# Autobahn|Testsuite against `shoal serve`; the HTML report lands in
# autobahn-report/index.html.
conformance:
	scripts/conformance

# The soak test's long form (the unit tests run its short form): SOAK is
# how long it loads the gateway. See docs/operations.md#soak.
SOAK ?= 10m
soak:
	$(GO) test -count=1 -timeout 0 -run '^TestSoak$$' -v ./cmd/shoal -soak $(SOAK)

build:
	$(GO) build -o bin/shoal ./cmd/shoal

clean:
	rm -rf bin

# A fleet on this machine: 3 NATS nodes in a JetStream cluster and 3 shoal
# hosts on 127.0.0.11-13:8080 (deploy/local-fleet.sh; docs/operations.md).
fleet:
	deploy/local-fleet.sh up

fleet-status:
	deploy/local-fleet.sh status

fleet-down:
	deploy/local-fleet.sh down

# The README's test command is `make test`: it needs only Go (and, for the
# steps that use them, installs what it needs itself).
GO ?= go

.PHONY: test check fmt vet unit peers conformance build clean

test: check unit conformance

check: fmt vet

fmt:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit: peers
	$(GO) test -race -count=1 ./...

# The bench peers are a module of their own, which ./... from here skips.
peers:
	cd bench/peers && $(GO) vet ./... && $(GO) test -count=1 ./...

# Autobahn|Testsuite against `shoal serve`; the HTML report lands in
# autobahn-report/index.html.
conformance:
	scripts/conformance

build:
	$(GO) build -o bin/shoal ./cmd/shoal

clean:
	rm -rf bin

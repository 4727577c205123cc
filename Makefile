# imgbake build, test and release targets.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/imgbake/imgbake/internal/version.Version=$(VERSION)
PLATFORMS := linux/amd64 linux/arm64 linux/arm darwin/amd64 darwin/arm64

.PHONY: generate build install test e2e bench cross clean

# The static /init programs that network boot serves (netboot/initrd, for
# arm64 and armhf) are built here and embedded into imgbake.
generate:
	$(GO) generate ./netboot/initramfs

build: generate
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/imgbake ./cmd/imgbake

install: generate
	CGO_ENABLED=0 $(GO) install -trimpath -ldflags '$(LDFLAGS)' ./cmd/imgbake

# The whole suite. Tests that need a tool (e2fsck, mtools, qemu, ...) skip with
# a message naming it when it is missing; .ci/run installs them all.
# The QEMU boot tests (./e2e) run after the rest, not beside it: software
# emulation on a loaded machine turns into spurious boot timeouts.
test:
	$(GO) vet ./...
	$(GO) test -timeout 30m $$($(GO) list ./... | grep -v '/e2e')
	$(GO) test -timeout 45m ./e2e/...

# Only the QEMU boot tests.
e2e:
	$(GO) test -timeout 60m -run 'Boot|Netboot' -v ./e2e/...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

cross: generate
	@for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		echo "building bin/imgbake-$$os-$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o bin/imgbake-$$os-$$arch ./cmd/imgbake || exit 1; \
	done

clean:
	rm -rf bin netboot/initramfs/bin/init-*

# imgbake build, test and release targets.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
# Release tarballs carry the commit's time, so one commit gives the same bytes.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
VERSIONPKG := github.com/imgbake/imgbake/internal/version
LDFLAGS  := -s -w -buildid= -X $(VERSIONPKG).Version=$(VERSION) -X $(VERSIONPKG).Commit=$(COMMIT)
PLATFORMS := linux/amd64 linux/arm64 linux/arm darwin/amd64 darwin/arm64
# A version the module proxy serves that understands this go.mod's Go; run
# with `go run`, so it is no requirement of the module.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: generate build install check test unit e2e bench cross release clean

# The static /init programs that network boot serves (netboot/initrd, for
# arm64 and armhf) are built here and embedded into imgbake.
generate:
	$(GO) generate ./netboot/initramfs

build: generate
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/imgbake ./cmd/imgbake

# imgbake, and beside it imgbake for the Pis' CPUs (imgbake-linux-arm64,
# imgbake-linux-arm), which `imgbake build` puts into a netboot server
# node's image.
install: generate
	CGO_ENABLED=0 $(GO) install -trimpath -ldflags '$(LDFLAGS)' ./cmd/imgbake
	@bindir=$$($(GO) env GOBIN); [ -n "$$bindir" ] || bindir=$$($(GO) env GOPATH)/bin; \
	for a in arm64 arm; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o $$bindir/imgbake-linux-$$a ./cmd/imgbake || exit 1; \
	done

# The cheap checks, in seconds to a few minutes: formatting, go.mod, vet
# (also for macOS, test files included: Linux-only code and tests live in
# _linux.go files), staticcheck.
check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...
	GOOS=darwin GOARCH=amd64 $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# The whole suite, cheapest first: the checks, the cross builds, the unit and
# integration tests, then the QEMU boot tests. Tests that need a tool
# (e2fsck, mtools, qemu, ...) skip with a message naming it when it is
# missing; .ci/run installs them all.
test: check cross unit
	$(GO) test -timeout 45m ./e2e/...

# Every package but ./e2e. The QEMU boot tests (./e2e) run after the rest,
# not beside it: software emulation on a loaded machine turns into spurious
# boot timeouts.
unit:
	$(GO) test -timeout 30m $$($(GO) list ./... | grep -v '/e2e')

# Only the QEMU boot tests.
e2e:
	$(GO) test -timeout 60m -run 'Boot|Netboot' -v ./e2e/...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# bin/imgbake-<os>-<arch> for every platform README names, version stamped.
cross: generate
	@for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		echo "building bin/imgbake-$$os-$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o bin/imgbake-$$os-$$arch ./cmd/imgbake || exit 1; \
	done

# dist/imgbake-<version>-<os>-<arch>.tar.gz (imgbake, imgbake-linux-arm64 and
# imgbake-linux-arm for a netboot server node's image, README.md, LICENSE,
# THIRD_PARTY_LICENSES) and dist/SHA256SUMS. Reproducible: the same commit
# gives the same bytes (-trimpath, no build id, entries sorted, owner 0,
# mtime of the commit, gzip without a name or time). Needs GNU tar.
# THIRD_PARTY_LICENSES holds the licences of the Go modules compiled into
# the tarball's binaries and the /init programs they embed, from the module cache (no
# network); a module without a licence file stops the release.
INITS := netboot/initramfs/bin/init-arm64 netboot/initramfs/bin/init-armhf
release: cross
	rm -rf dist && mkdir -p dist
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; name=imgbake-$(VERSION)-$$os-$$arch; \
		rm -rf dist/$$name; mkdir -p dist/$$name; \
		cp bin/imgbake-$$os-$$arch dist/$$name/imgbake; cp README.md LICENSE dist/$$name/; \
		$(GO) run ./internal/licenses bin/imgbake-$$os-$$arch bin/imgbake-linux-arm64 bin/imgbake-linux-arm $(INITS) > dist/$$name/THIRD_PARTY_LICENSES; \
		chmod 0755 dist/$$name dist/$$name/imgbake; chmod 0644 dist/$$name/README.md dist/$$name/LICENSE dist/$$name/THIRD_PARTY_LICENSES; \
		for a in arm64 arm; do [ "$$os/$$arch" = linux/$$a ] || install -m 0755 bin/imgbake-linux-$$a dist/$$name/; done; \
		tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) \
			--format=gnu -C dist -cf - $$name | gzip -n -9 > dist/$$name.tar.gz; \
		rm -rf dist/$$name; \
		echo "dist/$$name.tar.gz"; \
	done
	cd dist && sha256sum *.tar.gz > SHA256SUMS
	@cat dist/SHA256SUMS

clean:
	rm -rf bin dist netboot/initramfs/bin/init-*

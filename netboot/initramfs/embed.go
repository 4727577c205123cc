package initramfs

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
)

// The netboot /init programs are built into bin/ by `go generate` (make
// build runs it before building imgbake) and embedded. A binary built
// without them still runs; `imgbake netboot` then says how to get them.
//
//go:generate env CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath "-ldflags=-s -w" -o bin/init-arm64 ../initrd
//go:generate env CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 go build -trimpath "-ldflags=-s -w" -o bin/init-armhf ../initrd

//go:embed bin
var programs embed.FS

// ErrNoInit is wrapped by Init's error when this imgbake was built without
// the init programs.
var ErrNoInit = errors.New("no netboot init program")

// Init returns the embedded /init for a node's architecture: "arm64" or
// "armhf" (ARMv7, which also runs on 64-bit Pi kernels).
func Init(arch string) ([]byte, error) {
	if arch != "arm64" && arch != "armhf" {
		return nil, fmt.Errorf("%w for architecture %q: network boot supports arm64 and armhf nodes", ErrNoInit, arch)
	}
	data, err := programs.ReadFile("bin/init-" + arch)
	if errors.Is(err, fs.ErrNotExist) || len(data) == 0 {
		return nil, fmt.Errorf("%w for %s in this imgbake binary: build imgbake with `make build` "+
			"(or run `go generate ./netboot/initramfs` before `go install ./cmd/imgbake`)", ErrNoInit, arch)
	}
	return data, err
}

package initramfs

import (
	"bytes"
	"fmt"
	"path"
	"sort"
)

// ModulesDir is where the addition puts kernel modules, one directory per
// kernel release (netboot/initrd loads <ModulesDir>/<uname -r>/*.ko in name
// order).
const ModulesDir = "imgbake/modules"

// Module is a kernel module, uncompressed.
type Module struct {
	// Name is the module name ("nbd").
	Name string
	// Data is the .ko file.
	Data []byte
}

// Addition returns the archive appended to a node's initramfs: init as
// /init, /dev/console (the kernel opens it for /init's output before any
// devtmpfs exists) and, for each kernel release, its modules in load
// order.
func Addition(init []byte, modules map[string][]Module) ([]byte, error) {
	if len(init) == 0 {
		return nil, fmt.Errorf("building the initramfs addition: no init program")
	}
	var b bytes.Buffer
	w := NewWriter(&b)
	w.MkdirAll("dev")
	w.CharDevice("dev/console", 0o600, 5, 1)
	w.MkdirAll("proc")
	w.MkdirAll("sys")
	w.MkdirAll("run")
	releases := make([]string, 0, len(modules))
	for r := range modules {
		releases = append(releases, r)
	}
	sort.Strings(releases)
	for _, r := range releases {
		if r == "" || r != path.Base(r) || r == "." || r == ".." {
			return nil, fmt.Errorf("building the initramfs addition: bad kernel release %q", r)
		}
		for i, m := range modules[r] {
			w.WriteFile(fmt.Sprintf("%s/%s/%02d-%s.ko", ModulesDir, r, i, m.Name), 0o644, m.Data)
		}
	}
	w.WriteFile("init", 0o755, init)
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("building the initramfs addition: %w", err)
	}
	return b.Bytes(), nil
}

// NetbootModules are the modules the addition carries when the node's
// kernel has them as modules: nbd for the root disk, and the Ethernet
// drivers of the Pi 3B/3B+ (smsc95xx, lan78xx), Pi 4 (genet), Pi 5 (macb),
// common USB adapters, and virtio for QEMU, and the root file system's
// (Raspberry Pi kernels build ext4 in; distribution kernels such as
// Debian's have it as a module, with the crc32c it needs for checksums).
// With the Ethernet driver a module, the kernel's ip=dhcp finds no
// interface and /init configures it itself.
func NetbootModules() []string {
	return []string{"nbd", "crc32c_generic", "ext4", "smsc95xx", "lan78xx", "genet", "macb", "r8152", "ax88179_178a", "virtio_mmio", "virtio_pci", "virtio_net"}
}

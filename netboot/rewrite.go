package netboot

import (
	"fmt"
	"net/netip"
	"strings"
)

// AddedInitramfs is the initramfs file name the served config.txt names
// when the node's own config.txt names none.
const AddedInitramfs = "imgbake-initramfs"

// autoInitramfs returns the names the firmware loads with
// auto_initramfs=1, one per kernel name (kernel.img, kernel7.img,
// kernel7l.img, kernel8.img, kernel_2712.img).
func autoInitramfs() []string {
	return []string{"initramfs", "initramfs7", "initramfs7l", "initramfs8", "initramfs_2712"}
}

// dropParam reports the kernel parameters the served command line
// replaces: the SD root, and any network setup a previous boot method left.
func dropParam(k string) bool {
	switch k {
	case "root", "ip", "nfsroot", "imgbake.nbd", "rootwait":
		return true
	}
	return false
}

// Cmdline returns the node's cmdline.txt with the network root: root= is
// the NBD partition, imgbake.nbd= names the server and export, ip=dhcp has
// the kernel bring up the network. Everything else (console, cgroup flags,
// rootfstype, init=) is kept, in order. Only the first line counts, as for
// the firmware.
func Cmdline(orig string, server netip.AddrPort, export string, rootPart int) string {
	line, _, _ := strings.Cut(orig, "\n")
	var kept []string
	for _, f := range strings.Fields(line) {
		k, _, _ := strings.Cut(f, "=")
		if !dropParam(k) {
			kept = append(kept, f)
		}
	}
	kept = append(kept,
		fmt.Sprintf("root=/dev/nbd0p%d", rootPart),
		fmt.Sprintf("imgbake.nbd=%s/%s", server, export),
		"ip=dhcp", "rootwait")
	return strings.Join(kept, " ") + "\n"
}

// Config returns the node's config.txt as served, and the names of the
// initramfs files the firmware will ask for (each gets the netboot
// addition appended). A config.txt with an initramfs line or
// auto_initramfs=1 is served unchanged; otherwise an [all] section naming
// AddedInitramfs is appended.
func Config(orig string) (string, []string) {
	var names []string
	auto := false
	for _, line := range strings.Split(orig, "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "initramfs" {
			names = append(names, f[1])
		}
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "auto_initramfs" && strings.TrimSpace(v) == "1" {
			auto = true
		}
	}
	if auto {
		names = append(names, autoInitramfs()...)
	}
	if len(names) > 0 {
		return orig, names
	}
	out := orig
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	out += "\n# Added by imgbake netboot (not on the disk): the network root's initramfs.\n[all]\ninitramfs " + AddedInitramfs + " followkernel\n"
	return out, []string{AddedInitramfs}
}

// CmdlineFile returns the kernel command line file config.txt names with
// cmdline= (the last one wins), or cmdline.txt.
func CmdlineFile(config string) string {
	name := "cmdline.txt"
	for _, line := range strings.Split(config, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(strings.TrimSuffix(line, "\r")), "=")
		if ok && strings.TrimSpace(k) == "cmdline" && strings.TrimSpace(v) != "" {
			name = strings.TrimSpace(v)
		}
	}
	return name
}

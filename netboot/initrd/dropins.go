//go:build linux

package main

import (
	"fmt"
	"strings"
)

// runFile is a file written under the new root's /run, which is a tmpfs:
// nothing persists into a later boot of the same disk from an SD card.
type runFile struct {
	path string // below /run
	data string
}

// dropIns are the runtime configuration files that keep the network
// managers of the supported distributions away from the interface that
// carries the root disk: NetworkManager (Bookworm and later), systemd-networkd
// (Armbian, netplan) and systemd-resolved get their DNS servers there.
// dhcpcd has no runtime directory: dhcpcdConf makes a runtime copy of its
// configuration that is bind-mounted over /etc/dhcpcd.conf.
func dropIns(nc netConfig) []runFile {
	files := []runFile{
		{"NetworkManager/conf.d/90-imgbake-netboot.conf", fmt.Sprintf(
			"# imgbake netboot: %s carries the root disk; NetworkManager must not touch it.\n"+
				"[keyfile]\nunmanaged-devices=interface-name:%s\n", nc.ifname, nc.ifname)},
		{"systemd/network/00-imgbake-netboot.network", fmt.Sprintf(
			"# imgbake netboot: %s carries the root disk; keep the kernel's configuration.\n"+
				"[Match]\nName=%s\n\n[Link]\nUnmanaged=yes\n", nc.ifname, nc.ifname)},
	}
	if len(nc.dns) > 0 {
		files = append(files, runFile{"systemd/resolved.conf.d/90-imgbake-netboot.conf",
			"[Resolve]\nDNS=" + strings.Join(nc.dns, " ") + "\n" + domains(nc.domain)})
	}
	return files
}

func domains(d string) string {
	if d == "" {
		return ""
	}
	return "Domains=" + d + "\n"
}

// resolvConf is the resolver configuration from the DHCP answer.
func resolvConf(nc netConfig) string {
	var b strings.Builder
	b.WriteString("# imgbake netboot: from the DHCP answer the kernel got\n")
	if nc.domain != "" {
		fmt.Fprintf(&b, "search %s\n", nc.domain)
	}
	for _, s := range nc.dns {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return b.String()
}

// dhcpcdConf is orig with the root interface denied to dhcpcd.
func dhcpcdConf(orig, ifname string) string {
	if orig != "" && !strings.HasSuffix(orig, "\n") {
		orig += "\n"
	}
	return orig + "\n# imgbake netboot: " + ifname + " carries the root disk\ndenyinterfaces " + ifname + "\n"
}

//go:build linux

package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// params are what /init reads from the kernel command line.
type params struct {
	// server is the NBD server as host:port, export the export name: from
	// imgbake.nbd=<host>:<port>/<export>.
	server, export string
	// root is the device to mount (root=/dev/nbd0p2), fstype and flags how
	// (rootfstype=, rootflags=, ro/rw).
	root, fstype, flags string
	readOnly            bool
	// init is the program to hand over to (init=, default /sbin/init).
	init string
	// ifname is the interface the kernel's ip= configured, when named.
	ifname string
}

// parseCmdline reads the parameters /init needs from a kernel command line.
func parseCmdline(cmdline string) (params, error) {
	p := params{fstype: "ext4", init: "/sbin/init", readOnly: true}
	var nbd string
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "imgbake.nbd":
			nbd = v
		case "root":
			p.root = v
		case "rootfstype":
			p.fstype = v
		case "rootflags":
			p.flags = v
		case "ro":
			p.readOnly = true
		case "rw":
			p.readOnly = false
		case "init":
			p.init = v
		case "ip":
			// ip=<client>:<server>:<gw>:<mask>:<host>:<device>:<autoconf>
			if parts := strings.Split(v, ":"); len(parts) >= 6 {
				p.ifname = parts[5]
			}
		}
	}
	if nbd == "" {
		return p, fmt.Errorf("no imgbake.nbd= on the kernel command line: boot through `imgbake netboot`, which adds it")
	}
	hostport, export, ok := strings.Cut(nbd, "/")
	if !ok || export == "" {
		return p, fmt.Errorf("imgbake.nbd=%s: want <server>:<port>/<export>", nbd)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, "10809"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil || host == "" {
		return p, fmt.Errorf("imgbake.nbd=%s: want <server>:<port>/<export>", nbd)
	}
	p.server, p.export = net.JoinHostPort(host, port), export
	if p.root == "" {
		p.root = "/dev/nbd0p2"
	}
	if !strings.HasPrefix(p.root, "/dev/nbd") {
		return p, fmt.Errorf("root=%s: the network root must be an NBD partition such as /dev/nbd0p2", p.root)
	}
	return p, nil
}

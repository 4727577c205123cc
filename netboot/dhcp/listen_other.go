//go:build !linux

package dhcp

import (
	"context"
	"fmt"
	"net"
)

// Listen fails on systems other than Linux: binding the DHCP socket to one
// network interface (SO_BINDTODEVICE) is Linux-only, and without it a reply
// to 255.255.255.255 may leave through the wrong network.
func Listen(ctx context.Context, ifname, addr string) (net.PacketConn, error) {
	return nil, fmt.Errorf("listening for DHCP on %s %s: imgbake netboot runs on Linux only (or pass --no-dhcp when another server sends the network boot answer)", ifname, addr)
}

package dhcp

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listen opens a UDP socket on addr (usually ":67") bound to the network
// interface ifname, able to send broadcasts out of it. Binding to the
// interface is what makes a reply to 255.255.255.255 leave through the
// cluster network on a host with several, and keeps requests from other
// networks out. ifname "" skips the interface binding.
func Listen(ctx context.Context, ifname, addr string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if ifname != "" {
				serr = unix.BindToDevice(int(fd), ifname)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(ctx, "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for DHCP on %s %s (port 67 needs root or CAP_NET_BIND_SERVICE, and no other DHCP server on this host): %w", ifname, addr, err)
	}
	return c, nil
}

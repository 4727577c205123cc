//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/imgbake/imgbake/netboot/nbd"
)

// dial connects to the NBD server and negotiates export name, leaving the
// connection ready for transmission.
func dial(ctx context.Context, server, name string) (*net.TCPConn, nbd.ClientExport, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, nbd.ClientExport{}, fmt.Errorf("connecting to the NBD server %s: %w", server, err)
	}
	tc := c.(*net.TCPConn)
	tc.SetNoDelay(true)
	tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3})
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	exp, err := nbd.Handshake(tc, name)
	if err != nil {
		tc.Close()
		return nil, nbd.ClientExport{}, fmt.Errorf("negotiating export %s with %s: %w", name, server, err)
	}
	tc.SetDeadline(time.Time{})
	return tc, exp, nil
}

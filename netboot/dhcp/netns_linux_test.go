package dhcp

import (
	"context"
	"net"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// testNet is a pair of network namespaces joined by a veth pair: the
// server side "srv" (interface vs, 10.77.0.1/24) and the client side "cli"
// (interface vc, no address unless the test adds one).
type testNet struct {
	srv, cli string
}

// newTestNet creates the namespaces or skips the test when it cannot.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	srv, cli := fixture.NewNetns(t, "dhcp-s"), fixture.NewNetns(t, "dhcp-c")
	srv.Veth(t, "vs", "", cli, "vc")
	srv.IP(t, "addr", "add", "10.77.0.1/24", "dev", "vs")
	srv.IP(t, "link", "set", "vs", "up")
	cli.IP(t, "link", "set", "vc", "up")
	return &testNet{srv: string(srv), cli: string(cli)}
}

// listenIn opens a broadcast-capable UDP socket bound to ifname in ns.
func listenIn(t *testing.T, ns, ifname, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	if err := fixture.Netns(ns).Do(func() (err error) {
		c, err = Listen(context.Background(), ifname, addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

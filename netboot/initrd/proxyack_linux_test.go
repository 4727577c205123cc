package main

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// TestProxyAnswerIsNoLease: imgbake netboot's proxy DHCP answers a known
// Pi's REQUEST with an ACK of the same transaction ID and no address (the
// boot menu, for the bootloader). /init's client and its lease renewer
// must wait for the real server's ACK instead of taking 0.0.0.0 (which
// made a node fail with "setting 0.0.0.0 on eth0: cannot assign requested
// address" until it gave up).
func TestProxyAnswerIsNoLease(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	req, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		t.Fatal(err)
	}
	proxy, _ := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4zero),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")))
	lease, _ := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 50)),
		dhcpv4.WithServerIP(net.IPv4(10, 77, 0, 2)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 2))))
	if addressed(proxy) || !addressed(lease) {
		t.Errorf("addressed: proxy %v, lease %v", addressed(proxy), addressed(lease))
	}
	if _, ok := replyOf(proxy, nil); ok {
		t.Error("the renewer took the proxy's ACK for an answer")
	}
	if rep, ok := replyOf(lease, nil); !ok || !rep.addr.Equal(net.IPv4(10, 77, 0, 50)) {
		t.Errorf("the renewer on the server's ACK: %+v %v", rep, ok)
	}
}

package dhcp

import (
	"bytes"
	"context"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "refresh testdata golden files from the real dnsmasq (needs root, ip, dnsmasq)")

// exchange broadcasts req from the client namespace and returns the first
// BOOTREPLY with the same transaction ID, retrying until the deadline.
func exchange(t *testing.T, c net.PacketConn, req *dhcpv4.DHCPv4, wait time.Duration) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	t.Helper()
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		if _, err := c.WriteTo(req.ToBytes(), dst); err != nil {
			t.Fatalf("sending %s: %v", req.MessageType(), err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			p, err := dhcpv4.FromBytes(buf[:n])
			if err == nil && p.OpCode == dhcpv4.OpcodeBootReply && p.TransactionID == req.TransactionID {
				return p, from.(*net.UDPAddr)
			}
		}
	}
	t.Fatalf("no reply to %s within %v", req.MessageType(), wait)
	return nil, nil
}

// TestDnsmasqGolden runs the real dnsmasq in proxy mode in a network
// namespace, sends it a Pi 4 DISCOVER and checks its OFFER against the
// golden file (refreshed with -update).
func TestDnsmasqGolden(t *testing.T) {
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		t.Skip("dnsmasq not installed (apt-get install dnsmasq): skipping the golden-capture check")
	}
	tn := newTestNet(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", tn.srv, dnsmasq, "--no-daemon", "--conf-file=/dev/null",
		"--port=0", "--interface=vs", "--bind-interfaces", "--dhcp-range=10.77.0.0,proxy",
		`--pxe-service=0,Raspberry Pi Boot   `, "--log-dhcp", "--user=root",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	c := listenIn(t, tn.cli, "vc", "0.0.0.0:68")
	req := piDiscover(t, pi4MAC, piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd))
	reply, from := exchange(t, c, req, 5*time.Second)
	t.Logf("dnsmasq replied from %v:\n%s", from, reply.Summary())
	if *update {
		if err := os.WriteFile(goldenOffer, reply.ToBytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden := readGolden(t)
	for _, code := range []uint8{43, 53, 60, 97} {
		if g, d := golden.Options.Get(dhcpv4.GenericOptionCode(code)), reply.Options.Get(dhcpv4.GenericOptionCode(code)); !bytes.Equal(g, d) {
			t.Errorf("option %d: dnsmasq sent % x, golden has % x (run with -update if dnsmasq changed)", code, d, g)
		}
	}
	if t.Failed() {
		t.Logf("dnsmasq log:\n%s", log.String())
	}
}

// TestProxyInNetns serves from a real broadcast socket in one namespace to
// a client without an address in another, as on a Pi network.
func TestProxyInNetns(t *testing.T) {
	tn := newTestNet(t)
	conn := listenIn(t, tn.srv, "vs", "0.0.0.0:67")
	srv := &Server{Handler: newProxy()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	c := listenIn(t, tn.cli, "vc", "0.0.0.0:68")
	opt97 := piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd)
	offer, from := exchange(t, c, piDiscover(t, pi4MAC, opt97), 5*time.Second)
	if from.IP.String() != "10.77.0.1" || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("reply from %v:\n%s", from, offer.Summary())
	}
	if golden := readGolden(t); !bytes.Equal(offer.ToBytes(), golden.ToBytes()) {
		t.Errorf("OFFER over the wire differs from dnsmasq's:\n%s\nwant:\n%s", offer.Summary(), golden.Summary())
	}
	ack, _ := exchange(t, c, piRequest(t, pi4MAC, nil, net.IPv4(10, 77, 0, 254), net.IPv4(10, 77, 0, 60)), 5*time.Second)
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IPv4zero) {
		t.Fatalf("reply to REQUEST:\n%s", ack.Summary())
	}
}

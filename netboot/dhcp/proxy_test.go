package dhcp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imgbake/imgbake/internal/testlog"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

var serverIP = netip.MustParseAddr("10.77.0.1")

// cluster knows one Pi 4 by serial and one Pi 3B by MAC.
var cluster = BackendFunc(func(_ context.Context, m Machine) (Node, error) {
	switch {
	case m.Serial == "1234abcd":
		return Node{Name: "node1"}, nil
	case m.MAC.String() == pi4MAC.String():
		return Node{Name: "node1"}, nil
	case m.MAC.String() == pi3MAC.String():
		return Node{Name: "node3", TFTPServer: netip.MustParseAddr("10.77.0.9")}, nil
	}
	return Node{}, fmt.Errorf("%s: %w", m, ErrUnknownMachine)
})

func newProxy() *Proxy { return &Proxy{Backend: cluster, ServerIP: serverIP} }

func TestProxyMatchesDnsmasq(t *testing.T) {
	golden := readGolden(t)
	req := piDiscover(t, pi4MAC, piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd))
	r, err := newProxy().Handle(context.Background(), req, nil)
	if err != nil || r == nil {
		t.Fatalf("Handle = %v, %v; want an OFFER", r, err)
	}
	if !bytes.Equal(r.Packet.ToBytes(), golden.ToBytes()) {
		t.Errorf("our OFFER differs from dnsmasq's:\n%s", cmp.Diff(golden.Summary(), r.Packet.Summary()))
	}
	if want := (&net.UDPAddr{IP: net.IPv4bcast, Port: 68}); r.To.String() != want.String() {
		t.Errorf("reply goes to %v, want %v", r.To, want)
	}
}

func TestProxyDecisions(t *testing.T) {
	opt97 := piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd)
	unknown := net.HardwareAddr{0xdc, 0xa6, 0x32, 9, 9, 9}
	laptop := piDiscover(t, net.HardwareAddr{0, 1, 2, 3, 4, 5}, nil)
	laptop.Options.Del(dhcpv4.OptionClassIdentifier)
	relayed := piDiscover(t, pi4MAC, opt97)
	relayed.GatewayIPAddr = net.IPv4(10, 1, 0, 1)
	aimed := piDiscover(t, pi4MAC, opt97)
	aimed.ClientIPAddr = net.IPv4(10, 77, 0, 99) // another host: the reply must not go there
	tests := []struct {
		name    string
		req     *dhcpv4.DHCPv4
		want    dhcpv4.MessageType // MessageTypeNone: no reply
		to      string
		siaddr  string
		opt66   string
		tftpLog bool
	}{
		{name: "pi4 discover", req: piDiscover(t, pi4MAC, opt97), want: dhcpv4.MessageTypeOffer, to: "255.255.255.255:68", siaddr: "0.0.0.0"},
		{name: "pi3 ROM discover, other TFTP host", req: piDiscover(t, pi3MAC, nil), want: dhcpv4.MessageTypeOffer, to: "255.255.255.255:68", siaddr: "10.77.0.9", opt66: "10.77.0.9"},
		{name: "unknown pi", req: piDiscover(t, unknown, piOpt97("RPi4", 1, unknown, 0xffff0000))},
		{name: "not a Pi bootloader", req: laptop},
		{name: "relayed: not answered", req: relayed},
		{name: "client address set: still broadcast", req: aimed, want: dhcpv4.MessageTypeOffer, to: "255.255.255.255:68", siaddr: "0.0.0.0"},
		{name: "pi4 request without option 60", req: piRequest(t, pi4MAC, nil, net.IPv4(10, 77, 0, 254), net.IPv4(10, 77, 0, 60)), want: dhcpv4.MessageTypeAck, to: "255.255.255.255:68", siaddr: "0.0.0.0"},
		{name: "unknown request", req: piRequest(t, unknown, nil, net.IPv4(10, 77, 0, 254), net.IPv4(10, 77, 0, 61))},
	}
	p := newProxy()
	for _, tt := range tests {
		r, err := p.Handle(context.Background(), tt.req, nil)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if tt.want == dhcpv4.MessageTypeNone {
			if r != nil {
				t.Errorf("%s: replied %s, want no reply", tt.name, r.Packet.MessageType())
			}
			continue
		}
		if r == nil {
			t.Errorf("%s: no reply, want %s", tt.name, tt.want)
			continue
		}
		got := r.Packet
		if got.MessageType() != tt.want || r.To.String() != tt.to || got.ServerIPAddr.String() != tt.siaddr ||
			!got.YourIPAddr.Equal(net.IPv4zero) || got.TransactionID != tt.req.TransactionID ||
			got.ServerIdentifier().String() != "10.77.0.1" || got.ClassIdentifier() != "PXEClient" ||
			string(got.GetOneOption(dhcpv4.OptionTFTPServerName)) != tt.opt66 ||
			!bytes.Equal(got.GetOneOption(dhcpv4.OptionClientMachineIdentifier), tt.req.GetOneOption(dhcpv4.OptionClientMachineIdentifier)) ||
			!bytes.Equal(got.GetOneOption(dhcpv4.OptionVendorSpecificInformation), piOption43(DefaultMenu)) {
			t.Errorf("%s: reply to %v:\n%s", tt.name, r.To, got.Summary())
		}
	}
}

// rewriteTo sends replies to the test client instead of the broadcast
// address (not routable on loopback), recording where they were meant to go.
type rewriteTo struct {
	h    Handler
	to   *net.UDPAddr
	sent chan string
}

func (r rewriteTo) Handle(ctx context.Context, req *dhcpv4.DHCPv4, from net.Addr) (*Reply, error) {
	rep, err := r.h.Handle(ctx, req, from)
	if rep != nil {
		r.sent <- rep.To.String()
		rep.To = r.to
	}
	return rep, err
}

func TestServerLoopSurvivesGarbage(t *testing.T) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sent := make(chan string, 10)
	var logBuf testlog.Buffer
	srv := &Server{Handler: rewriteTo{newProxy(), client.LocalAddr().(*net.UDPAddr), sent},
		Log: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	good := piDiscover(t, pi4MAC, piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd)).ToBytes()
	reply := good[:0:0]
	reply = append(reply, good...)
	reply[0] = 2 // a BOOTREPLY: ignored
	for _, p := range [][]byte{{}, {1}, good[:100], good[:240], bytes.Repeat([]byte{0xff}, 600), reply, append(good[:len(good)-1:len(good)-1], 43, 200)} {
		client.WriteTo(p, conn.LocalAddr())
	}
	client.WriteTo(good, conn.LocalAddr())
	client.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := client.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no reply after garbage: %v\n%s", err, logBuf.String())
	}
	if p, err := dhcpv4.FromBytes(buf[:n]); err != nil || p.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("reply %v, %v", p, err)
	}
	if to := <-sent; to != "255.255.255.255:68" {
		t.Errorf("handler chose %s, want broadcast", to)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
}

func FuzzProxy(f *testing.F) {
	f.Add(piDiscover(f, pi4MAC, piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd)).ToBytes())
	f.Add(piDiscover(f, pi3MAC, nil).ToBytes())
	f.Add(piRequest(f, pi4MAC, nil, net.IPv4(1, 2, 3, 4), net.IPv4(1, 2, 3, 5)).ToBytes())
	p := newProxy()
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		r, err := p.Handle(context.Background(), req, nil)
		if err == nil && r != nil {
			r.Packet.ToBytes()
			if !r.Packet.YourIPAddr.Equal(net.IPv4zero) {
				t.Fatalf("proxy handed out %v", r.Packet.YourIPAddr)
			}
		}
	})
}

// goldenOffer is dnsmasq 2.90's proxy OFFER to piDiscover(pi4MAC, ...),
// captured by TestDnsmasqGolden -update.
const goldenOffer = "testdata/dnsmasq-pi4-offer.bin"

func readGolden(t *testing.T) *dhcpv4.DHCPv4 {
	t.Helper()
	b, err := os.ReadFile(goldenOffer)
	if err != nil {
		t.Fatalf("reading golden file: %v (create it as root with: go test ./netboot/dhcp -run TestDnsmasqGolden -update)", err)
	}
	p, err := dhcpv4.FromBytes(b)
	if err != nil {
		t.Fatal(fmt.Errorf("parsing %s: %w", goldenOffer, err))
	}
	return p
}

// TestProxyRequestFromBackend: after a restart the proxy has not seen the
// DISCOVER; the Backend still recognises the Pi 4's REQUEST by its MAC.
func TestProxyRequestFromBackend(t *testing.T) {
	r, err := newProxy().Handle(context.Background(), piRequest(t, pi4MAC, nil, net.IPv4(10, 77, 0, 254), net.IPv4(10, 77, 0, 60)), nil)
	if err != nil || r == nil || r.Packet.MessageType() != dhcpv4.MessageTypeAck || !r.Packet.YourIPAddr.Equal(net.IPv4zero) {
		t.Fatalf("REQUEST from a known Pi 4: %v, %v; want an ACK without an address", r, err)
	}
}

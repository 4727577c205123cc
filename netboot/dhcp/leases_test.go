package dhcp

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func newLeases(t *testing.T, file string) *Leases {
	t.Helper()
	return &Leases{
		Backend: BackendFunc(func(ctx context.Context, m Machine) (Node, error) {
			if m.MAC.String() == pi3MAC.String() {
				return Node{Name: "node3", Address: netip.MustParseAddr("10.77.0.3")}, nil
			}
			return cluster(ctx, m)
		}),
		AllowUnknown: true,
		ServerIP:     serverIP,
		Subnet:       netip.MustParsePrefix("10.77.0.0/24"),
		RangeStart:   netip.MustParseAddr("10.77.0.100"),
		RangeEnd:     netip.MustParseAddr("10.77.0.102"),
		Router:       netip.MustParseAddr("10.77.0.1"),
		File:         file,
	}
}

func mac(i byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, i} }

func packet(t *testing.T, typ dhcpv4.MessageType, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	p, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(typ)}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// lease runs DISCOVER then REQUEST for hw and returns the ACKed address.
func doLease(t *testing.T, h *Leases, hw net.HardwareAddr) net.IP {
	t.Helper()
	ctx := context.Background()
	offer, err := h.Handle(ctx, packet(t, dhcpv4.MessageTypeDiscover, hw), nil)
	if err != nil || offer == nil || offer.Packet.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("DISCOVER from %v: %v, %v", hw, offer, err)
	}
	ip := offer.Packet.YourIPAddr
	ack, err := h.Handle(ctx, packet(t, dhcpv4.MessageTypeRequest, hw,
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice()))),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip))), nil)
	if err != nil || ack == nil || ack.Packet.MessageType() != dhcpv4.MessageTypeAck || !ack.Packet.YourIPAddr.Equal(ip) {
		t.Fatalf("REQUEST %v from %v: %v, %v", ip, hw, ack, err)
	}
	if lt := ack.Packet.IPAddressLeaseTime(0); lt != DefaultLeaseTime {
		t.Errorf("lease time %v", lt)
	}
	return ip
}

func TestLeasesPoolAndStatic(t *testing.T) {
	file := filepath.Join(t.TempDir(), "leases.json")
	h := newLeases(t, file)
	got := map[string]bool{}
	for i := byte(1); i <= 3; i++ {
		ip := doLease(t, h, mac(i)).String()
		if got[ip] {
			t.Fatalf("address %s given twice", ip)
		}
		got[ip] = true
	}
	if r, err := h.Handle(context.Background(), packet(t, dhcpv4.MessageTypeDiscover, mac(4)), nil); err == nil || r != nil {
		t.Errorf("DISCOVER with the pool exhausted: %v, %v; want an error saying so", r, err)
	}
	if ip := doLease(t, h, pi3MAC); ip.String() != "10.77.0.3" {
		t.Errorf("static lease: got %v", ip)
	}
	// The same client gets its address back.
	if ip := doLease(t, h, mac(2)); ip.String() != "10.77.0.101" {
		t.Errorf("renewed lease moved to %v", ip)
	}
	// A Pi bootloader gets the boot options with its address.
	r, err := h.Handle(context.Background(), piDiscover(t, pi3MAC, nil), nil)
	if err != nil || r == nil || r.Packet.YourIPAddr.String() != "10.77.0.3" || r.Packet.ClassIdentifier() != "PXEClient" ||
		string(r.Packet.GetOneOption(dhcpv4.OptionVendorSpecificInformation)) != string(piOption43(DefaultMenu)) {
		t.Errorf("Pi DISCOVER in full mode: %v %v", r, err)
	}
	// Leases survive a restart.
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var lf leaseFile
	if err := json.Unmarshal(b, &lf); err != nil || len(lf.Leases) != 4 {
		t.Fatalf("lease file: %v\n%s", err, b)
	}
	h2 := newLeases(t, file)
	if ip := doLease(t, h2, mac(3)); ip.String() != "10.77.0.102" {
		t.Errorf("after restart mac 3 got %v, want its old 10.77.0.102", ip)
	}
	if r, _ := h2.Handle(context.Background(), packet(t, dhcpv4.MessageTypeDiscover, mac(5)), nil); r != nil {
		t.Errorf("after restart a new client got %v from a full pool", r.Packet.YourIPAddr)
	}
}

func TestLeasesReleaseDeclineNak(t *testing.T) {
	h := newLeases(t, "")
	ctx := context.Background()
	a := doLease(t, h, mac(1))
	b := doLease(t, h, mac(2))
	// DECLINE: the address is held back, the client gets another.
	h.Handle(ctx, packet(t, dhcpv4.MessageTypeDecline, mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(serverIP.AsSlice())))), nil)
	c := doLease(t, h, mac(1))
	if c.Equal(a) || c.Equal(b) {
		t.Fatalf("after DECLINE of %v mac 1 got %v", a, c)
	}
	// RELEASE: the address is free again, but only when nothing else is.
	h.Handle(ctx, packet(t, dhcpv4.MessageTypeRelease, mac(2), dhcpv4.WithClientIP(b)), nil)
	if d := doLease(t, h, mac(3)); !d.Equal(b) {
		t.Errorf("after RELEASE of %v (no other free address) mac 3 got %v", b, d)
	}
	// Asking for someone else's address is refused with a NAK.
	r, err := h.Handle(ctx, packet(t, dhcpv4.MessageTypeRequest, mac(9), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(c))), nil)
	if err != nil || r == nil || r.Packet.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST for a taken address: %v, %v; want NAK", r, err)
	}
	// A REQUEST for another server's offer releases ours silently.
	if r, _ := h.Handle(ctx, packet(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 254))),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 200)))), nil); r != nil {
		t.Errorf("answered a REQUEST meant for another server: %v", r.Packet.Summary())
	}
}

func FuzzLeases(f *testing.F) {
	f.Add(piDiscover(f, pi4MAC, piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd)).ToBytes())
	f.Add(piRequest(f, pi4MAC, nil, net.IPv4(10, 77, 0, 1), net.IPv4(10, 77, 0, 100)).ToBytes())
	f.Add(piRequest(f, pi3MAC, nil, net.IPv4(10, 77, 0, 1), net.IPv4(10, 77, 0, 3)).ToBytes())
	h := &Leases{
		Backend:      cluster,
		AllowUnknown: true,
		ServerIP:     serverIP,
		Subnet:       netip.MustParsePrefix("10.77.0.0/24"),
		RangeStart:   netip.MustParseAddr("10.77.0.100"),
		RangeEnd:     netip.MustParseAddr("10.77.0.110"),
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		r, err := h.Handle(context.Background(), req, nil)
		if err == nil && r != nil {
			r.Packet.ToBytes()
			if ip, ok := netip.AddrFromSlice(r.Packet.YourIPAddr.To4()); ok && !ip.IsUnspecified() && !h.inPool(ip) {
				t.Fatalf("handed out %v outside the pool", ip)
			}
		}
		seen := map[string]netip.Addr{}
		for a, l := range h.db.leases {
			if l.State == stateBound && l.MAC != "" {
				if prev, dup := seen[l.MAC]; dup && time.Now().Before(l.Expires) && time.Now().Before(h.db.leases[prev].Expires) {
					t.Fatalf("%s holds %v and %v", l.MAC, prev, a)
				}
				seen[l.MAC] = a
			}
		}
	})
}

package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Defaults for Leases.
const (
	DefaultLeaseTime = time.Hour
	offerHold        = 30 * time.Second
	declineHold      = time.Hour
)

// Leases is a full DHCP server Handler (RFC 2131) for a dedicated cluster
// network: it gives known machines their static address (Node.Address) or
// one from the pool [RangeStart, RangeEnd], and adds the Pi network-boot
// options for Pi bootloaders, as Proxy does. Addresses are never given to
// two clients at once; a released or expired address goes to a new client
// only when no never-used or longer-expired address is left; a declined
// address is held back for an hour. Leases persist in File.
//
// Static addresses must lie outside the pool range: the Backend is only
// asked about the machine that is asking.
type Leases struct {
	// Backend says which machines to serve and their static addresses.
	// Required.
	Backend Backend
	// AllowUnknown also serves machines the Backend does not know, from the
	// pool and without boot options.
	AllowUnknown bool
	// ServerIP is this server's address (option 54, default TFTP server).
	ServerIP netip.Addr
	// Subnet is the cluster network, e.g. 10.77.0.0/24 (option 1).
	Subnet netip.Prefix
	// RangeStart and RangeEnd bound the dynamic pool, inclusive.
	RangeStart, RangeEnd netip.Addr
	// Router and DNS are optional options 3 and 6.
	Router netip.Addr
	DNS    []netip.Addr
	// LeaseTime defaults to DefaultLeaseTime.
	LeaseTime time.Duration
	// File is where leases persist (JSON); "" keeps them in memory.
	File string
	// Menu is the PXE menu text for Pi clients (default DefaultMenu).
	Menu string
	// Log receives a line per lease granted, declined or refused.
	Log *slog.Logger

	mu sync.Mutex
	db *leaseDB
}

// Handle implements Handler.
func (h *Leases) Handle(ctx context.Context, req *dhcpv4.DHCPv4, _ net.Addr) (*Reply, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	m := machineOf(req)
	node, known, err := h.lookup(ctx, m)
	if err != nil || (!known && !h.AllowUnknown) {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.db == nil {
		if h.db, err = loadLeaseDB(h.File); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return h.discover(req, m, node, known, now)
	case dhcpv4.MessageTypeRequest:
		return h.request(req, m, node, known, now)
	case dhcpv4.MessageTypeDecline:
		return nil, h.decline(req, m, now)
	case dhcpv4.MessageTypeRelease:
		return nil, h.release(req, m, now)
	case dhcpv4.MessageTypeInform:
		return h.reply(req, m, node, known, dhcpv4.MessageTypeAck, netip.Addr{})
	}
	return nil, nil
}

func (h *Leases) check() error {
	switch {
	case !h.ServerIP.Is4() || !h.Subnet.Addr().Is4():
		return errors.New("full DHCP: ServerIP and Subnet must be IPv4")
	case !h.Subnet.Contains(h.RangeStart) || !h.Subnet.Contains(h.RangeEnd) || h.RangeEnd.Less(h.RangeStart):
		return fmt.Errorf("full DHCP: pool %v-%v is not inside %v", h.RangeStart, h.RangeEnd, h.Subnet)
	}
	return nil
}

func (h *Leases) logger() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

func (h *Leases) lookup(ctx context.Context, m Machine) (Node, bool, error) {
	node, err := h.Backend.Lookup(ctx, m)
	if errors.Is(err, ErrUnknownMachine) {
		if !h.AllowUnknown {
			h.logger().Debug("dhcp: ignoring unknown machine", "machine", m.String())
		}
		return Node{}, false, nil
	}
	if err != nil {
		return Node{}, false, fmt.Errorf("looking up %s: %w", m, err)
	}
	if node.Address.IsValid() && !h.Subnet.Contains(node.Address) {
		return Node{}, false, fmt.Errorf("static address %v of %s is outside %v", node.Address, piLabel(m, node), h.Subnet)
	}
	return node, true, nil
}

// choose finds the address for a client: its static one, its current
// lease, the one it asks for, or a free pool address.
func (h *Leases) choose(req *dhcpv4.DHCPv4, mac string, node Node, now time.Time) (netip.Addr, error) {
	if a := node.Address; a.IsValid() {
		if !h.db.free(a, mac, now) {
			return netip.Addr{}, fmt.Errorf("static address %v is leased to %s", a, h.db.leases[a].MAC)
		}
		return a, nil
	}
	if l := h.db.byMAC(mac); l != nil && h.inPool(l.Addr) && h.db.free(l.Addr, mac, now) {
		return l.Addr, nil
	}
	if ip, ok := netip.AddrFromSlice(req.RequestedIPAddress().To4()); ok && h.inPool(ip) && h.db.free(ip, mac, now) {
		if _, taken := h.db.leases[ip]; !taken {
			return ip, nil
		}
	}
	skip := func(a netip.Addr) bool { return a == h.ServerIP || a == h.Router }
	a, ok := h.db.allocate(h.RangeStart, h.RangeEnd, mac, skip, now)
	if !ok {
		return netip.Addr{}, fmt.Errorf("no free address in %v-%v: widen the pool", h.RangeStart, h.RangeEnd)
	}
	return a, nil
}

func (h *Leases) inPool(a netip.Addr) bool {
	return a.IsValid() && h.RangeStart.Compare(a) <= 0 && a.Compare(h.RangeEnd) <= 0
}

func (h *Leases) discover(req *dhcpv4.DHCPv4, m Machine, node Node, known bool, now time.Time) (*Reply, error) {
	mac := m.MAC.String()
	a, err := h.choose(req, mac, node, now)
	if err != nil {
		return nil, fmt.Errorf("offering an address to %s: %w", m, err)
	}
	if l, ok := h.db.leases[a]; !ok || l.MAC != mac || l.State != stateBound {
		h.db.set(&lease{MAC: mac, Addr: a, State: stateOffered, Expires: now.Add(offerHold)}, now)
	}
	return h.reply(req, m, node, known, dhcpv4.MessageTypeOffer, a)
}

func (h *Leases) request(req *dhcpv4.DHCPv4, m Machine, node Node, known bool, now time.Time) (*Reply, error) {
	mac := m.MAC.String()
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(h.ServerIP.AsSlice())) {
		if l := h.db.byMAC(mac); l != nil && l.State == stateOffered {
			delete(h.db.leases, l.Addr) // the client chose another server
		}
		return nil, nil
	}
	want, _ := netip.AddrFromSlice(req.RequestedIPAddress().To4())
	if !want.IsValid() {
		want, _ = netip.AddrFromSlice(req.ClientIPAddr.To4())
	}
	// The address is the client's if it is its static one, or a pool
	// address nobody else holds (its offer, its lease, or one it remembers
	// from before a server restart).
	ours := h.inPool(want) && h.db.free(want, mac, now)
	if node.Address.IsValid() {
		ours = want == node.Address && h.db.free(want, mac, now)
	}
	if !ours {
		if !h.Subnet.Contains(want) && req.ServerIdentifier() == nil {
			return nil, nil // INIT-REBOOT on another network: not ours to NAK (RFC 2131 4.3.2)
		}
		h.logger().Info("dhcp: refusing address", "machine", m.String(), "addr", want)
		return h.nak(req)
	}
	h.db.set(&lease{MAC: mac, Addr: want, State: stateBound, Expires: now.Add(h.leaseTime())}, now)
	if err := h.db.save(); err != nil {
		return nil, err
	}
	h.logger().Info("dhcp: leased", "node", piLabel(m, node), "machine", m.String(), "addr", want)
	return h.reply(req, m, node, known, dhcpv4.MessageTypeAck, want)
}

func (h *Leases) decline(req *dhcpv4.DHCPv4, m Machine, now time.Time) error {
	a, _ := netip.AddrFromSlice(req.RequestedIPAddress().To4())
	if l, ok := h.db.leases[a]; !ok || l.MAC != m.MAC.String() {
		return nil
	}
	h.logger().Warn("dhcp: client found its address already in use; holding it back", "machine", m.String(), "addr", a, "for", declineHold)
	h.db.leases[a] = &lease{Addr: a, State: stateDeclined, Expires: now.Add(declineHold)}
	return h.db.save()
}

func (h *Leases) release(req *dhcpv4.DHCPv4, m Machine, now time.Time) error {
	a, _ := netip.AddrFromSlice(req.ClientIPAddr.To4())
	l, ok := h.db.leases[a]
	if !ok || l.MAC != m.MAC.String() || l.State != stateBound {
		return nil
	}
	l.Expires = now
	h.logger().Info("dhcp: released", "machine", m.String(), "addr", a)
	return h.db.save()
}

func (h *Leases) leaseTime() time.Duration {
	if h.LeaseTime > 0 {
		return h.LeaseTime
	}
	return DefaultLeaseTime
}

func (h *Leases) nak(req *dhcpv4.DHCPv4) (*Reply, error) {
	resp, err := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(h.ServerIP.AsSlice()))), dhcpv4.WithBroadcast(true))
	if err != nil {
		return nil, err
	}
	return &Reply{Packet: resp, To: &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}}, nil
}

// reply builds an OFFER or ACK giving addr (none for INFORM), with the Pi
// boot options for a known Pi.
func (h *Leases) reply(req *dhcpv4.DHCPv4, m Machine, node Node, known bool, typ dhcpv4.MessageType, addr netip.Addr) (*Reply, error) {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(h.ServerIP.AsSlice()))),
		dhcpv4.WithNetmask(net.CIDRMask(h.Subnet.Bits(), 32)),
	}
	if addr.IsValid() {
		mods = append(mods, dhcpv4.WithYourIP(net.IP(addr.AsSlice())), dhcpv4.WithLeaseTime(uint32(h.leaseTime()/time.Second)))
	}
	if h.Router.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(net.IP(h.Router.AsSlice()))))
	}
	var dns []net.IP
	for _, d := range h.DNS {
		dns = append(dns, net.IP(d.AsSlice()))
	}
	if len(dns) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...)))
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, fmt.Errorf("building %s for %s: %w", typ, m, err)
	}
	if known && (m.PXE || m.Serial != "") {
		p := &Proxy{ServerIP: h.ServerIP, Menu: h.Menu}
		pxe, err := p.reply(req, m, node, typ)
		if err != nil {
			return nil, err
		}
		for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionVendorSpecificInformation, dhcpv4.OptionClassIdentifier,
			dhcpv4.OptionClientMachineIdentifier, dhcpv4.OptionTFTPServerName} {
			if v := pxe.Packet.GetOneOption(code); v != nil {
				resp.UpdateOption(dhcpv4.OptGeneric(code, v))
			}
		}
		resp.ServerIPAddr = pxe.Packet.ServerIPAddr
	}
	to := replyTo(req)
	if typ != dhcpv4.MessageTypeAck || req.ClientIPAddr.IsUnspecified() {
		to = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
		if req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified() {
			to = replyTo(req)
		}
	}
	return &Reply{Packet: resp, To: to}, nil
}

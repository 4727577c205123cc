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

	"github.com/imgbake/imgbake/netboot"
)

// rememberFor is how long a Pi seen in a DISCOVER is recognised in a
// REQUEST without option 60; maxRemembered bounds that memory.
const (
	rememberFor   = 2 * time.Minute
	maxRemembered = 4096
)

// Proxy is a proxyDHCP Handler (PXE specification, section 2.2.3): it
// answers Raspberry Pi network-boot requests with boot information only and
// never hands out addresses; the network's own DHCP server does that.
//
// It answers a DISCOVER with option 60 PiVendorClass from a machine the
// Backend knows with an OFFER, and the Pi 4's following REQUEST (which has
// no option 60; it is recognised by the MAC of a recent DISCOVER, or by the
// Backend) with an ACK. The replies carry what dnsmasq sends for
// pxe-service=0,"Raspberry Pi Boot   " in proxy mode: yiaddr 0, option 53,
// option 54 (ServerIP, from which the Pi fetches its files over TFTP), 60
// "PXEClient", 97 echoed and 43 (see piOption43). They are broadcast, as
// the client has no address yet.
type Proxy struct {
	// Backend says which machines to boot. Required.
	Backend Backend
	// ServerIP is this server's address on the Pi's network. Required.
	ServerIP netip.Addr
	// Menu is the PXE menu text (default DefaultMenu).
	Menu string
	// Log receives one line per answered or ignored Pi. Nil means silent.
	Log *slog.Logger
	// Answered, if not nil, is called for every request answered: the
	// machine m, which the Backend said is node n, is booting.
	Answered func(m Machine, n Node)

	mu    sync.Mutex
	seen  map[string]seenPi // by MAC
	lines netboot.LogLimit
}

type seenPi struct {
	node Node
	at   time.Time
}

// Handle implements Handler.
func (p *Proxy) Handle(ctx context.Context, req *dhcpv4.DHCPv4, _ net.Addr) (*Reply, error) {
	if !p.ServerIP.Is4() {
		return nil, errors.New("proxy DHCP: ServerIP must be an IPv4 address")
	}
	m := machineOf(req)
	if req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified() {
		// Relays are not supported: the Pis must be on the server's link
		// (the binding of a node's disk checks the neighbour table).
		p.logf(m, slog.LevelDebug, "dhcp: ignoring a relayed request (the Pis must be on this server's network)", "relay", req.GatewayIPAddr.String())
		return nil, nil
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		if !m.PXE {
			return nil, nil // not a Pi bootloader: the network's DHCP server answers it
		}
		node, ok, err := p.lookup(ctx, m, true)
		if !ok || err != nil {
			return nil, err
		}
		p.remember(m, node)
		p.logf(m, slog.LevelInfo, "dhcp: offering network boot", "node", piLabel(m, node))
		return p.answer(req, m, node, dhcpv4.MessageTypeOffer)
	case dhcpv4.MessageTypeRequest:
		node, ok := p.recall(m)
		if !ok {
			// Every DHCP client on the network may come here: ask the
			// Backend, but do not log the machines it does not know.
			var err error
			if node, ok, err = p.lookup(ctx, m, m.PXE); err != nil {
				return nil, err
			}
		}
		if !ok {
			return nil, nil
		}
		return p.answer(req, m, node, dhcpv4.MessageTypeAck)
	}
	return nil, nil
}

// logf logs a line about machine m, at most one per machine and message
// a minute and 20 a minute in all (see netboot.LogLimit): requests from
// made-up machines cannot flood the log.
func (p *Proxy) logf(m Machine, level slog.Level, msg string, args ...any) {
	ok, dropped := p.lines.Allow(m.MAC.String() + " " + msg)
	if !ok {
		return
	}
	args = append(args, "machine", m.String())
	if dropped > 0 {
		args = append(args, "dropped_lines", dropped)
	}
	p.logger().Log(context.Background(), level, msg, args...)
}

func (p *Proxy) logger() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

func (p *Proxy) lookup(ctx context.Context, m Machine, logUnknown bool) (Node, bool, error) {
	node, err := p.Backend.Lookup(ctx, m)
	if errors.Is(err, ErrUnknownMachine) {
		if logUnknown {
			p.logf(m, slog.LevelInfo, "dhcp: not answering a Pi that is not in the cluster; add its MAC or serial to boot it")
		}
		return Node{}, false, nil
	}
	if err != nil {
		return Node{}, false, fmt.Errorf("looking up %s: %w", m, err)
	}
	return node, true, nil
}

func (p *Proxy) remember(m Machine, n Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = make(map[string]seenPi)
	}
	now := time.Now()
	if len(p.seen) >= maxRemembered {
		for k, v := range p.seen {
			if now.Sub(v.at) > rememberFor {
				delete(p.seen, k)
			}
		}
		if len(p.seen) >= maxRemembered {
			return
		}
	}
	p.seen[m.MAC.String()] = seenPi{n, now}
}

func (p *Proxy) recall(m Machine) (Node, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.seen[m.MAC.String()]
	if !ok || time.Since(s.at) > rememberFor {
		return Node{}, false
	}
	return s.node, true
}

// answer is reply, reported to Answered.
func (p *Proxy) answer(req *dhcpv4.DHCPv4, m Machine, n Node, typ dhcpv4.MessageType) (*Reply, error) {
	r, err := p.reply(req, m, n, typ)
	if err == nil && p.Answered != nil {
		p.Answered(m, n)
	}
	return r, err
}

func (p *Proxy) reply(req *dhcpv4.DHCPv4, m Machine, n Node, typ dhcpv4.MessageType) (*Reply, error) {
	menu := p.Menu
	if menu == "" {
		menu = DefaultMenu
	}
	if len(menu) > 200 {
		return nil, fmt.Errorf("PXE menu text of %d bytes is too long for option 43", len(menu))
	}
	server := net.IP(p.ServerIP.AsSlice())
	resp, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(net.IPv4zero),
		dhcpv4.WithServerIP(net.IPv4zero),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, piOption43(menu))),
	)
	if err != nil {
		return nil, fmt.Errorf("building %s for %s: %w", typ, m, err)
	}
	if o97 := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); o97 != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, o97))
	}
	if tftp := n.TFTPServer; tftp.IsValid() && tftp != p.ServerIP {
		// Files come from another host: name it as the PXE next-server
		// (siaddr) and in option 66 rather than leave the Pi to use
		// option 54. Not yet verified on Pi hardware.
		resp.ServerIPAddr = net.IP(tftp.AsSlice())
		resp.UpdateOption(dhcpv4.OptTFTPServerName(tftp.String()))
	}
	return &Reply{Packet: resp, To: replyTo()}, nil
}

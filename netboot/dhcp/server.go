// Package dhcp answers Raspberry Pi network-boot DHCP requests.
//
// The shape follows tinkerbell/smee: a Server owns the socket loop, a
// Handler decides each reply, and a Backend answers "what do I know about
// this machine". The handler provided is Proxy (proxyDHCP: PXE boot
// information only, never an address): addresses come from the network's
// own DHCP server (a router, or dnsmasq on a dedicated cluster network).
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/imgbake/imgbake/netboot"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Node is what the Backend knows about a machine.
type Node struct {
	// Name is the node's name, for logs.
	Name string
	// TFTPServer is the address the node fetches its boot files from; the
	// zero Addr means the DHCP server's own address.
	TFTPServer netip.Addr
}

// ErrUnknownMachine is wrapped by Backend errors for machines it does not
// know; such requests are ignored.
var ErrUnknownMachine = errors.New("unknown machine")

// Backend answers what is known about a machine, identified by its MAC and,
// for a Pi 4/5, its serial.
type Backend interface {
	Lookup(ctx context.Context, m Machine) (Node, error)
}

// BackendFunc adapts a function to a Backend.
type BackendFunc func(ctx context.Context, m Machine) (Node, error)

// Lookup calls f.
func (f BackendFunc) Lookup(ctx context.Context, m Machine) (Node, error) { return f(ctx, m) }

// Reply is a Handler's answer: the packet and where to send it.
type Reply struct {
	Packet *dhcpv4.DHCPv4
	To     *net.UDPAddr
}

// Handler decides the reply to a request; a nil Reply means no answer.
// An error is logged and the request dropped.
type Handler interface {
	Handle(ctx context.Context, req *dhcpv4.DHCPv4, from net.Addr) (*Reply, error)
}

// Server reads DHCP requests from a socket and sends the Handler's replies.
type Server struct {
	// Handler decides replies. Required.
	Handler Handler
	// Log receives a line per dropped packet or failed send (debug for
	// packets that are not DHCP requests). Nil means silent.
	Log *slog.Logger

	lines netboot.LogLimit
}

// Serve answers requests on conn until ctx is cancelled (it then returns
// nil) or reading from conn fails. Bad packets are logged and skipped. The
// caller owns conn: for replies to reach a client with no address, conn
// must be able to broadcast on the right interface (see Listen).
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	if s.Handler == nil {
		return errors.New("dhcp: Server.Handler is nil")
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("reading DHCP requests: %w", err)
		}
		s.handle(ctx, log, conn, buf[:n], from)
	}
}

func (s *Server) handle(ctx context.Context, log *slog.Logger, conn net.PacketConn, b []byte, from net.Addr) {
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		log.Debug("dhcp: ignoring malformed packet", "from", from.String(), "len", len(b), "err", err)
		return
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		log.Debug("dhcp: ignoring packet that is not an Ethernet BOOTREQUEST", "from", from.String())
		return
	}
	reply, err := s.Handler.Handle(ctx, req, from)
	if err != nil {
		if ok, dropped := s.lines.Allow(req.ClientHWAddr.String()); ok {
			log.Warn("dhcp: handling request", "mac", req.ClientHWAddr.String(), "type", req.MessageType().String(), "err", err, "dropped_lines", dropped)
		}
		return
	}
	if reply == nil {
		return
	}
	if _, err := conn.WriteTo(reply.Packet.ToBytes(), reply.To); err != nil {
		log.Warn("dhcp: sending reply", "mac", req.ClientHWAddr.String(), "to", reply.To.String(), "err", err)
	}
}

// replyTo is where every reply goes: a broadcast to the client port on
// the interface the server listens on. A Pi bootloader has no address
// yet and takes the broadcast (it sets the broadcast flag); the relay
// (giaddr) and client (ciaddr) fields of a request are never used as
// destinations, so a spoofed request cannot aim a reply at another host.
// Relayed requests are not answered (see Proxy.Handle).
func replyTo() *net.UDPAddr {
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

// piLabel names a machine in log lines.
func piLabel(m Machine, n Node) string {
	if n.Name != "" {
		return n.Name
	}
	if m.Serial != "" {
		return string(m.Serial)
	}
	return netboot.MACPrefix(m.MAC)
}

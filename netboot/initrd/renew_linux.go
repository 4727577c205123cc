package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// renewLease runs in the NBD helper for the life of the node: it keeps the
// lease encoded in arg (leaseInfo.String) alive. kmsg is the kernel log,
// opened before switch_root moves /dev away (nil: stderr). It handles
// every error itself, so the disk's reconnect loop never notices it.
func renewLease(ctx context.Context, arg string, kmsg *os.File) {
	logf := func(level int, format string, args ...any) { writeKmsg(kmsg, level, format, args...) }
	l, err := parseLease(arg)
	if err != nil {
		logf(3, "not renewing the DHCP lease: %v; give this node a DHCP reservation", err)
		return
	}
	ifi, err := net.InterfaceByName(l.ifname)
	if err != nil || len(ifi.HardwareAddr) == 0 {
		logf(3, "not renewing the DHCP lease of %s: interface %s: %v; give this node a DHCP reservation", l.addr, l.ifname, err)
		return
	}
	tr := &udpTransport{ifname: l.ifname, hw: ifi.HardwareAddr, timeout: 4 * time.Second, tries: 3}
	r := &renewer{tr: tr, clk: realClock{}, logf: logf}
	r.run(ctx, l)
}

// udpTransport sends DHCPREQUESTs from port 68 of one interface.
type udpTransport struct {
	ifname string
	hw     net.HardwareAddr
	// timeout is how long each of tries sends waits for an answer.
	timeout time.Duration
	tries   int
}

// request implements leaseTransport.
func (t *udpTransport) request(ctx context.Context, mode requestMode, addr, server net.IP) (dhcpReply, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range []int{unix.SO_REUSEADDR, unix.SO_BROADCAST} {
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o, 1)
				}
			}
			if serr == nil {
				serr = unix.BindToDevice(int(fd), t.ifname)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", fmt.Sprintf(":%d", dhcpv4.ClientPort))
	if err != nil {
		return dhcpReply{}, fmt.Errorf("opening the DHCP client port on %s: %w", t.ifname, err)
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetDeadline(time.Now()) })
	defer stop()

	mods := []dhcpv4.Modifier{dhcpv4.WithHwAddr(t.hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer)}
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	switch mode {
	case initReboot:
		mods = append(mods, dhcpv4.WithBroadcast(true), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(addr)))
	case renewing:
		if server == nil {
			return dhcpReply{}, errors.New("no DHCP server to renew with")
		}
		mods = append(mods, dhcpv4.WithClientIP(addr))
		dest.IP = server
	case rebinding:
		mods = append(mods, dhcpv4.WithClientIP(addr))
	}
	m, err := dhcpv4.New(mods...)
	if err != nil {
		return dhcpReply{}, fmt.Errorf("building a DHCPREQUEST: %w", err)
	}
	buf := make([]byte, 1500)
	for try := 0; try < t.tries && ctx.Err() == nil; try++ {
		if _, err := pc.WriteTo(m.ToBytes(), dest); err != nil {
			return dhcpReply{}, fmt.Errorf("sending a DHCPREQUEST to %s: %w", dest.IP, err)
		}
		pc.SetReadDeadline(time.Now().Add(t.timeout))
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return dhcpReply{}, ctx.Err()
				}
				break // timed out: send again
			}
			r, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || r.TransactionID != m.TransactionID || r.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			if rep, ok := replyOf(r, from); ok {
				return rep, nil
			}
		}
	}
	if ctx.Err() != nil {
		return dhcpReply{}, ctx.Err()
	}
	return dhcpReply{}, fmt.Errorf("no answer from the DHCP server (%d tries)", t.tries)
}

// replyOf reads an ACK or NAK; other message types are not answers.
func replyOf(r *dhcpv4.DHCPv4, from net.Addr) (dhcpReply, bool) {
	rep := dhcpReply{server: r.ServerIdentifier()}
	if rep.server == nil {
		if u, ok := from.(*net.UDPAddr); ok {
			rep.server = u.IP.To4()
		}
	}
	switch r.MessageType() {
	case dhcpv4.MessageTypeNak:
		rep.nak = true
	case dhcpv4.MessageTypeAck:
		if !addressed(r) {
			return dhcpReply{}, false // a proxy DHCP server's answer
		}
		rep.addr = r.YourIPAddr.To4()
		rep.lease = r.IPAddressLeaseTime(defaultLease)
		rep.t1 = r.IPAddressRenewalTime(0)
		rep.t2 = r.IPAddressRebindingTime(0)
	default:
		return dhcpReply{}, false
	}
	return rep, true
}

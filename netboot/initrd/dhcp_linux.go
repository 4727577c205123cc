package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// setupNetwork returns the interface the kernel configured (ip=dhcp with a
// built-in driver) or configures one with DHCP.
func setupNetwork(p params) (netConfig, error) {
	if nc, err := waitNetwork(p.ifname, 3*time.Second); err == nil {
		return nc, nil
	}
	logf("the kernel did not configure the network (driver loaded as a module?); asking DHCP")
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		for _, ifname := range ethernets(p.ifname) {
			nc, err := dhcpConfigure(ifname)
			if err == nil {
				return nc, nil
			}
			logf("DHCP on %s: %v", ifname, err)
		}
		time.Sleep(time.Second)
	}
	return netConfig{}, errors.New("no DHCP answer on any Ethernet interface: is the cable in, and is there a DHCP server?")
}

// ethernets lists the candidate interfaces: want, or every one with an
// Ethernet address, by name.
func ethernets(want string) []string {
	ifs, _ := net.Interfaces()
	var names []string
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 && len(i.HardwareAddr) == 6 && (want == "" || i.Name == want) {
			names = append(names, i.Name)
		}
	}
	sort.Strings(names)
	return names
}

// dhcpConfigure brings ifname up, runs DISCOVER/OFFER/REQUEST/ACK over a
// UDP socket bound to it (broadcast replies: the interface has no address
// yet) and applies the lease.
func dhcpConfigure(ifname string) (netConfig, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return netConfig{}, err
	}
	if err := setFlagsUp(ifname); err != nil {
		return netConfig{}, fmt.Errorf("bringing %s up: %w", ifname, err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return netConfig{}, err
	}
	defer unix.Close(fd)
	for _, o := range []int{unix.SO_REUSEADDR, unix.SO_BROADCAST} {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1)
	}
	if err := unix.BindToDevice(fd, ifname); err != nil {
		return netConfig{}, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: dhcpv4.ClientPort}); err != nil {
		return netConfig{}, err
	}
	opts := []dhcpv4.Modifier{dhcpv4.WithBroadcast(true), dhcpv4.WithRequestedOptions(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer, dhcpv4.OptionDomainName)}
	disc, err := dhcpv4.NewDiscovery(ifi.HardwareAddr, opts...)
	if err != nil {
		return netConfig{}, err
	}
	offer, err := exchange(fd, disc, dhcpv4.MessageTypeOffer)
	if err != nil {
		return netConfig{}, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, opts...)
	if err != nil {
		return netConfig{}, err
	}
	ack, err := exchange(fd, req, dhcpv4.MessageTypeAck)
	if err != nil {
		return netConfig{}, err
	}
	return applyLease(ifi, ack)
}

// exchange broadcasts m until a reply of type want with its transaction ID
// arrives (4 tries, 2 s apart).
func exchange(fd int, m *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	to := &unix.SockaddrInet4{Port: dhcpv4.ServerPort, Addr: [4]byte{255, 255, 255, 255}}
	buf := make([]byte, 1500)
	for try := 0; try < 4; try++ {
		if err := unix.Sendto(fd, m.ToBytes(), 0, to); err != nil {
			return nil, fmt.Errorf("sending %s: %w", m.MessageType(), err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			tv := unix.NsecToTimeval(time.Until(deadline).Nanoseconds())
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				break
			}
			r, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || r.TransactionID != m.TransactionID || r.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			if r.MessageType() == dhcpv4.MessageTypeNak {
				return nil, errors.New("the DHCP server refused the request (NAK)")
			}
			if r.MessageType() == want && addressed(r) {
				return r, nil
			}
		}
	}
	return nil, fmt.Errorf("no DHCP %s", want)
}

// addressed reports whether an OFFER or ACK gives an address. A proxy DHCP
// server (imgbake netboot's, dnsmasq's proxy mode) answers the Pi's
// requests too, with the same transaction ID and no address (yiaddr
// 0.0.0.0): that answer is for the bootloader, not a lease.
func addressed(r *dhcpv4.DHCPv4) bool {
	ip := r.YourIPAddr.To4()
	return ip != nil && !ip.IsUnspecified()
}

// applyLease sets the address, netmask and default route of the lease.
func applyLease(ifi *net.Interface, ack *dhcpv4.DHCPv4) (netConfig, error) {
	ip := ack.YourIPAddr.To4()
	mask := net.IP(ack.SubnetMask())
	if len(mask) != 4 {
		mask = net.IP(ip.DefaultMask())
	}
	if err := setAddr(ifi.Name, ip, mask); err != nil {
		return netConfig{}, fmt.Errorf("setting %s on %s: %w", ip, ifi.Name, err)
	}
	if r := ack.Router(); len(r) > 0 {
		if err := addDefaultRoute(ifi.Index, r[0].To4()); err != nil && !errors.Is(err, unix.EEXIST) {
			logf("adding the default route via %s: %v", r[0], err)
		}
	}
	nc := netConfig{ifname: ifi.Name, addr: ip, domain: ack.DomainName(), lease: normalize(leaseInfo{
		ifname: ifi.Name, addr: ip, server: ack.ServerIdentifier(), lease: ack.IPAddressLeaseTime(defaultLease),
		t1: ack.IPAddressRenewalTime(0), t2: ack.IPAddressRebindingTime(0)})}
	for _, d := range ack.DNS() {
		nc.dns = append(nc.dns, d.String())
	}
	logf("DHCP: %s/%s on %s from %s", ip, net.IPMask(mask), ifi.Name, ack.ServerIdentifier())
	return nc, nil
}

// withIfreq runs fn with a socket for interface ioctls and an Ifreq
// naming the interface.
func withIfreq(name string, fn func(fd int, ifr *unix.Ifreq) error) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	return fn(fd, ifr)
}

func ifreqIoctl(name string, req uint, set func(*unix.Ifreq) error) error {
	return withIfreq(name, func(fd int, ifr *unix.Ifreq) error {
		if set != nil {
			if err := set(ifr); err != nil {
				return err
			}
		}
		return unix.IoctlIfreq(fd, req, ifr)
	})
}

func setFlagsUp(name string) error {
	return withIfreq(name, func(fd int, ifr *unix.Ifreq) error {
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return err
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	})
}

func setAddr(name string, ip, mask net.IP) error {
	if err := ifreqIoctl(name, unix.SIOCSIFADDR, func(r *unix.Ifreq) error { return r.SetInet4Addr(ip.To4()) }); err != nil {
		return err
	}
	return ifreqIoctl(name, unix.SIOCSIFNETMASK, func(r *unix.Ifreq) error { return r.SetInet4Addr(mask.To4()) })
}

// addDefaultRoute adds "default via gw dev <index>" with rtnetlink.
func addDefaultRoute(index int, gw net.IP) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	rt := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	body := append(rt, attr(unix.RTA_GATEWAY, gw.To4())...)
	body = append(body, attr(unix.RTA_OIF, u32(uint32(index)))...)
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	msg = append(msg, body...)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.RTM_NEWROUTE)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	if n >= unix.NLMSG_HDRLEN+4 && binary.NativeEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if e := int32(binary.NativeEndian.Uint32(buf[unix.NLMSG_HDRLEN:])); e != 0 {
			return unix.Errno(-e)
		}
	}
	return nil
}

package config

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"golang.org/x/crypto/ssh"
)

// CheckAuthorizedKey parses one authorized_keys line as OpenSSH's sshd does
// (options, key type, base64 key blob, comment) and says what is wrong with
// it: a key cut short or mangled when copied decodes to no key at all.
func CheckAuthorizedKey(k string) error {
	const hint = "paste the whole line of your public key file, e.g. ~/.ssh/id_ed25519.pub"
	if strings.ContainsAny(k, "\r\n") {
		return fmt.Errorf("an SSH key is one line; this one has a line break: %s", hint)
	}
	k = strings.TrimSpace(k)
	if k == "" {
		return fmt.Errorf("empty SSH key: %s", hint)
	}
	if strings.Contains(k, "PRIVATE KEY") {
		return errors.New("this is a private key: never put it in the cluster file; give the public key (the .pub file) instead")
	}
	if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
		return fmt.Errorf("not an OpenSSH public key (%s): the key data is cut short or mangled, or the type is unknown; %s", keySummary(k), hint)
	} else if len(rest) > 0 {
		return fmt.Errorf("more than one SSH key in one entry: give each key as its own list item")
	}
	return nil
}

// keySummary names a key by its type and the ends of its base64 data,
// enough to find it without printing it all.
func keySummary(k string) string {
	f := strings.Fields(k)
	for i, s := range f {
		if strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-") || strings.HasPrefix(s, "sk-") {
			if i+1 < len(f) {
				b := f[i+1]
				if len(b) > 12 {
					b = b[:4] + "…" + b[len(b)-4:]
				}
				return fmt.Sprintf("%s %s, %d characters of key data", s, b, len(f[i+1]))
			}
			return s + " with no key data"
		}
	}
	return "no key type such as ssh-ed25519 found"
}

// CanNetboot reports whether a Raspberry Pi model (as written in the
// cluster file) can boot from the network through its built-in Ethernet:
// Pi 3B (once its OTP bit is set), 3B+, 4, 400, 5, 500, CM4 and CM5. Network
// boot works only with the built-in wired adapter (Raspberry Pi
// documentation, boot-net.adoc and boot-msd.adoc: "Raspberry Pi 3A+ and Zero 2
// W do not support network boot").
func CanNetboot(model string) bool {
	raw := strings.ToLower(strings.TrimSpace(model))
	if raw == "pi3a+" {
		return false // no Ethernet; the 3A+ is otherwise treated as a pi3+
	}
	m, _ := NormalizeModel(raw)
	switch m {
	case "pi3", "pi3+", "pi4", "pi400", "pi5", "pi500", "cm4", "cm5":
		return true
	}
	return false
}

func netbootWhyNot(model string) string {
	m, _ := NormalizeModel(model)
	switch {
	case strings.EqualFold(strings.TrimSpace(model), "pi3a+") || m == "pi02w" || m == "cm3" || m == "cm3+" || m == "cm4s":
		return "it has no built-in Ethernet, and network boot uses only that"
	case m == "pi2":
		return "only the BCM2837 Pi 2B v1.2 has network boot, and imgbake serves Pi 3B and newer"
	}
	return "its boot ROM has no network boot"
}

// broadcast returns the broadcast address of p's network.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// checkUnique records two nodes with the same static address, serial or
// MAC: they would fight over the address, or the network-boot server could
// not tell them apart.
func (c *Cluster) checkUnique() {
	d := c.doc
	type seenAt struct{ node, field string }
	seen := map[string]seenAt{}
	dup := func(kind, value, field, node, fix string) {
		key := kind + "\x00" + value
		if o, ok := seen[key]; ok {
			d.Errorf(field, "%s %s is also %s's (line %d): %s", kind, value, o.node, d.Line(o.field), fix)
			return
		}
		seen[key] = seenAt{node, field}
	}
	for i, n := range c.Nodes {
		f := fmt.Sprintf("nodes[%d]", i)
		if p, err := netip.ParsePrefix(n.Address); err == nil && p.Addr().Is4() {
			dup("address", p.Addr().String(), f+".address", n.Name, "give each node its own address")
		}
		nb := n.Netboot
		if nb == nil {
			continue
		}
		if s := strings.ToLower(nb.Serial); serialRE.MatchString(s) {
			dup("serial", s, f+".netboot.serial", n.Name, "each Pi has its own serial; check which board this is (grep Serial /proc/cpuinfo)")
		}
		if hw, err := net.ParseMAC(nb.MAC); err == nil && len(hw) == 6 {
			dup("MAC", hw.String(), f+".netboot.mac", n.Name, "each Pi has its own MAC; check which board this is (ip link on the Pi)")
		}
	}
}

// CheckServerAddress checks that the node that starts the cluster has the
// address agents join. starts reports whether a listed node is a server
// that starts the cluster (not one that joins it). The check applies when
// server: is an IP address and that node has a static address; it is
// skipped when server: is a name (the name may resolve to any address) and
// when the cluster file says server-address-check: off (the server is
// reached through another address on purpose: a virtual IP, a port forward).
func (c *Cluster) CheckServerAddress(starts func(n Node) bool) error {
	if c.ServerAddressCheck == "off" {
		return nil
	}
	ip, err := netip.ParseAddr(ServerHost(c.Server))
	if err != nil {
		return nil
	}
	d := NewDoc(c.File)
	if c.doc != nil {
		d.lines = c.doc.lines
	}
	for i, n := range c.Nodes {
		p, err := netip.ParsePrefix(n.Address)
		if err != nil || !starts(n) || p.Addr() == ip.Unmap() {
			continue
		}
		d.Errorf(fmt.Sprintf("nodes[%d].address", i),
			"%s is the server (profile %s) at %s, but agents join server: %s (line %d) and would never reach it; set address: %s/%d, or server: %s; if agents reach %s through %s on purpose (a virtual IP, a port forward), add server-address-check: off",
			n.Name, n.Profile, p.Addr(), c.Server, d.Line("server"), ip, p.Bits(), p.Addr(), n.Name, ip)
	}
	return d.Err()
}

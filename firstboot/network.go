package firstboot

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"

	"github.com/imgbake/imgbake/image/plan"
	"gopkg.in/yaml.v3"
)

// marshal is yaml.Marshal with the 2-space indent people write by hand.
func marshal(v any) ([]byte, error) {
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// static is a node's static IPv4 configuration.
type static struct {
	addr    netip.Prefix
	gateway string
	dns     []string
}

func (b *builder) static() (*static, error) {
	n := b.in.Node
	if n.Address == "" {
		return nil, nil
	}
	p, err := netip.ParsePrefix(n.Address)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("node %s: address %q: expected an IPv4 address with prefix length such as 192.168.1.21/24", n.Name, n.Address)
	}
	return &static{addr: p, gateway: n.Gateway, dns: n.DNS}, nil
}

// network writes the static address in the form the release's network
// system reads. With DHCP (no address) nothing changes.
func (b *builder) network() error {
	s, err := b.static()
	if err != nil || s == nil || b.in.OS.CloudInit || b.wifiStatic() {
		// With cloud-init, network-config carries it (cloudInit); on a
		// model without Ethernet, the Wi-Fi configuration (wifi).
		return err
	}
	const begin, end = "# imgbake: static address (begin)\n", "# imgbake: static address (end)\n"
	switch b.in.OS.Network {
	case "dhcpcd":
		block := begin + "interface eth0\nstatic ip_address=" + s.addr.String() + "\n"
		if s.gateway != "" {
			block += "static routers=" + s.gateway + "\n"
		}
		if len(s.dns) > 0 {
			block += "static domain_name_servers=" + strings.Join(s.dns, " ") + "\n"
		}
		block += end
		b.edit(plan.Root, "/etc/dhcpcd.conf", "static address "+s.addr.String(), 0o644, func(old []byte) ([]byte, error) {
			return replaceBlock(old, begin, end, block), nil
		})
	case "NetworkManager":
		b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: "/etc/NetworkManager/system-connections/imgbake-wired.nmconnection", Kind: plan.File, Mode: 0o600, Data: []byte(s.nmKeyfile(b.node.name))})
	case "netplan":
		b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: "/etc/netplan/90-imgbake.yaml", Kind: plan.File, Mode: 0o600, Data: []byte(s.netplan())})
	case "systemd-networkd":
		b.file("/etc/systemd/network/10-imgbake-wired.network", 0o644, s.networkd())
	case "ifupdown":
		b.file("/etc/network/interfaces.d/imgbake-eth0", 0o644, s.ifupdown())
	default:
		return fmt.Errorf("node %s: a static address needs a known network system, but the base image uses %q; remove address: to use DHCP (and reserve the address in your DHCP server)", b.node.name, b.in.OS.Network)
	}
	return nil
}

// nmKeyfile is a NetworkManager connection for any wired interface, with a
// UUID derived from the node name so builds are reproducible.
func (s *static) nmKeyfile(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by imgbake: static address for %s.\n[connection]\nid=imgbake-wired\nuuid=%s\ntype=ethernet\nautoconnect=true\nautoconnect-priority=100\n\n[ethernet]\n\n", name, connUUID("", name))
	b.WriteString(s.nmIPv4())
	b.WriteString("\n[ipv6]\nmethod=auto\n")
	return b.String()
}

// nmIPv4 is the [ipv4] section of a NetworkManager keyfile.
func (s *static) nmIPv4() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[ipv4]\nmethod=manual\naddress1=%s", s.addr)
	if s.gateway != "" {
		fmt.Fprintf(&b, ",%s", s.gateway)
	}
	b.WriteString("\n")
	if len(s.dns) > 0 {
		fmt.Fprintf(&b, "dns=%s;\n", strings.Join(s.dns, ";"))
	}
	return b.String()
}

// connUUID is a NetworkManager connection UUID derived from the node name
// and a kind ("" for the wired connection), so builds are reproducible.
func connUUID(kind, name string) string {
	h := sha256.Sum256([]byte("imgbake-nm:" + kind + name))
	h[6] = h[6]&0x0f | 0x50 // version 5-style
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// ethernet is the netplan / cloud-init v2 form of the wired interface.
func (s *static) ethernet() map[string]any {
	e := map[string]any{
		"match":     map[string]any{"name": "e*"},
		"dhcp4":     false,
		"addresses": []string{s.addr.String()},
	}
	if s.gateway != "" {
		e["routes"] = []any{map[string]any{"to": "default", "via": s.gateway}}
	}
	if len(s.dns) > 0 {
		e["nameservers"] = map[string]any{"addresses": s.dns}
	}
	return e
}

func (s *static) netplan() string {
	// Armbian's 10-dhcp-all-interfaces.yaml defines "all-eth-interfaces"
	// (match e*, DHCP). netplan merges definitions with the same id and
	// later files win, so this file overrides it instead of competing with
	// it for the same interface.
	out, _ := marshal(map[string]any{"network": map[string]any{
		"version":   2,
		"ethernets": map[string]any{"all-eth-interfaces": s.ethernet()},
	}})
	return "# Written by imgbake: static address (overrides the DHCP default of\n# 10-dhcp-all-interfaces.yaml, which uses the same id).\n" + string(out)
}

func (s *static) networkd() string {
	return "# Written by imgbake: static address.\n[Match]\nName=e*\n\n[Network]\n" + s.networkdAddress()
}

// networkdAddress is the static part of a .network file's [Network].
func (s *static) networkdAddress() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Address=%s\n", s.addr)
	if s.gateway != "" {
		fmt.Fprintf(&b, "Gateway=%s\n", s.gateway)
	}
	for _, d := range s.dns {
		fmt.Fprintf(&b, "DNS=%s\n", d)
	}
	return b.String()
}

func (s *static) ifupdown() string {
	return "# Written by imgbake: static address.\nauto eth0\n" + s.ifupdownStanza("eth0")
}

// ifupdownStanza is an interfaces(5) stanza with the static address.
func (s *static) ifupdownStanza(iface string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "iface %s inet static\n\taddress %s\n", iface, s.addr)
	if s.gateway != "" {
		fmt.Fprintf(&b, "\tgateway %s\n", s.gateway)
	}
	if len(s.dns) > 0 {
		fmt.Fprintf(&b, "\tdns-nameservers %s\n", strings.Join(s.dns, " "))
	}
	return b.String()
}

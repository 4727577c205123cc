package firstboot

import (
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/config"
)

// wifiIface is the on-board Wi-Fi interface of a Raspberry Pi (and of
// Armbian, which boots with net.ifnames=0).
const wifiIface = "wlan0"

// wifiStatic reports whether the node's static address belongs to its
// Wi-Fi interface: a model without Ethernet (Zero 2 W) with Wi-Fi set.
func (b *builder) wifiStatic() bool {
	return config.WiFiOnly(b.in.Node.Model) && b.settings().WiFi != nil
}

// wifi writes the Wi-Fi network in the form the release's network system
// reads, root-only since it holds the passphrase, and sets the regulatory
// domain as raspi-config's do_wifi_country does.
func (b *builder) wifi(s config.Settings) error {
	var st *static
	if b.wifiStatic() {
		var err error
		if st, err = b.static(); err != nil {
			return err
		}
	}
	w, sec := s.WiFi, s.WiFiSecret
	wpa, err := wpaSupplicantConf(w, sec)
	if err != nil {
		return err
	}
	switch b.in.OS.Network {
	case "NetworkManager":
		b.secret("/etc/NetworkManager/system-connections/imgbake-wifi.nmconnection", nmWiFi(b.node.name, w, sec, st))
	case "netplan":
		b.secret("/etc/netplan/90-imgbake-wifi.yaml", netplanWiFi(w, sec, st))
	case "dhcpcd":
		b.secret("/etc/wpa_supplicant/wpa_supplicant.conf", wpa)
	case "ifupdown":
		b.secret("/etc/wpa_supplicant/wpa_supplicant.conf", wpa)
		b.file("/etc/network/interfaces.d/"+wifiIface, 0o644, ifupdownWiFi(st))
	case "systemd-networkd":
		b.secret("/etc/wpa_supplicant/wpa_supplicant-"+wifiIface+".conf", wpa)
		b.symlink(unitDir+"/multi-user.target.wants/wpa_supplicant@"+wifiIface+".service", "/lib/systemd/system/wpa_supplicant@.service")
		b.file("/etc/systemd/network/11-imgbake-wifi.network", 0o644, networkdWiFi(st))
	default:
		return fmt.Errorf("node %s: Wi-Fi needs a known network system, but the base image uses %q; remove wifi: and use Ethernet", b.node.name, b.in.OS.Network)
	}
	if b.in.OS.Family == "raspios" {
		for _, dev := range rfkillWLAN {
			b.file("/var/lib/systemd/rfkill/"+dev+":wlan", 0o644, "0\n")
		}
		if b.in.OS.Network == "NetworkManager" || b.in.OS.Release == "trixie" {
			// pi-gen's net-tweaks turn NetworkManager's Wi-Fi off until
			// a country is set.
			b.edit(plan.Root, "/var/lib/NetworkManager/NetworkManager.state", "WirelessEnabled=true", 0o644, func(old []byte) ([]byte, error) {
				return setIniKey(old, "main", "WirelessEnabled", "true"), nil
			})
		}
	}
	return nil
}

// nmWiFi is a NetworkManager keyfile for the network, as raspberrypi-sys-
// mods' imager_custom set_wlan writes it.
func nmWiFi(name string, w *config.WiFi, sec config.WiFiSecret, st *static) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by imgbake: Wi-Fi network for %s.\n[connection]\nid=imgbake-wifi\nuuid=%s\ntype=wifi\nautoconnect=true\n\n", name, connUUID("wifi:", name))
	fmt.Fprintf(&b, "[wifi]\nmode=infrastructure\nssid=%s\nhidden=%t\n\n", nmString(w.SSID), w.Hidden)
	if p := firstOf(sec.Passphrase, sec.PSK); p != "" {
		fmt.Fprintf(&b, "[wifi-security]\nkey-mgmt=wpa-psk\npsk=%s\n\n", nmString(p))
	}
	if st != nil {
		b.WriteString(st.nmIPv4() + "\n")
	} else {
		b.WriteString("[ipv4]\nmethod=auto\n\n")
	}
	b.WriteString("[ipv6]\naddr-gen-mode=default\nmethod=auto\n")
	return b.String()
}

// nmString escapes a keyfile value (GKeyFile: backslash escapes; leading
// and trailing spaces kept with \s).
func nmString(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == ' ' && (i == 0 || i == len(s)-1):
			b.WriteString(`\s`)
		case r == '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// netplanWiFi is a netplan file for the Wi-Fi interface with the
// regulatory domain (netplan merges it with the base's other files, such
// as cloud-init's 50-cloud-init.yaml).
func netplanWiFi(w *config.WiFi, sec config.WiFiSecret, st *static) string {
	ap := map[string]any{}
	if p := firstOf(sec.Passphrase, sec.PSK); p != "" {
		ap["password"] = p
	}
	if w.Hidden {
		ap["hidden"] = true
	}
	iface := map[string]any{
		"regulatory-domain": w.Country,
		"access-points":     map[string]any{w.SSID: ap},
	}
	if st != nil {
		for k, v := range st.ethernet() {
			if k != "match" {
				iface[k] = v
			}
		}
	} else {
		iface["dhcp4"] = true
	}
	out, _ := marshal(map[string]any{"network": map[string]any{
		"version": 2,
		"wifis":   map[string]any{wifiIface: iface},
	}})
	return "# Written by imgbake: Wi-Fi network (root-only: it holds the passphrase).\n" + string(out)
}

// wpaSupplicantConf is wpa_supplicant.conf as raspi-config writes it on
// Raspberry Pi OS Buster and Bullseye (and HypriotOS reads it), with the
// country.
func wpaSupplicantConf(w *config.WiFi, sec config.WiFiSecret) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by imgbake: Wi-Fi network (root-only: it holds the passphrase).\nctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev\nupdate_config=1\ncountry=%s\n\nnetwork={\n", w.Country)
	fmt.Fprintf(&b, "\tssid=%s\n", wpaString(w.SSID))
	if w.Hidden {
		b.WriteString("\tscan_ssid=1\n")
	}
	switch {
	case sec.PSK != "":
		fmt.Fprintf(&b, "\tpsk=%s\n\tkey_mgmt=WPA-PSK\n", strings.ToLower(sec.PSK))
	case sec.Passphrase != "":
		// The PSK derived from the passphrase, as wpa_passphrase and
		// Raspberry Pi Imager write it: the passphrase itself is not kept.
		psk, err := wpaPSK(sec.Passphrase, w.SSID)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "\tpsk=%s\n\tkey_mgmt=WPA-PSK\n", psk)
	default:
		b.WriteString("\tkey_mgmt=NONE\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// wpaPSK is the WPA PSK of a passphrase: PBKDF2-HMAC-SHA1 over the SSID,
// 4096 rounds, 32 bytes (IEEE 802.11i-2004, H.4).
func wpaPSK(passphrase, ssid string) (string, error) {
	k, err := pbkdf2.Key(sha1.New, passphrase, []byte(ssid), 4096, 32)
	if err != nil {
		return "", fmt.Errorf("deriving the Wi-Fi PSK: %w", err)
	}
	return hex.EncodeToString(k), nil
}

// wpaString is a wpa_supplicant.conf string: quoted, or hex when quoting
// would be ambiguous.
func wpaString(s string) string {
	if strings.ContainsAny(s, "\"\\\n\r") || !printable(s) {
		return hex.EncodeToString([]byte(s))
	}
	return `"` + s + `"`
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// ifupdownWiFi is /etc/network/interfaces.d/wlan0 (HypriotOS): the Wi-Fi
// interface through wpa_supplicant, DHCP or static.
func ifupdownWiFi(st *static) string {
	var b strings.Builder
	b.WriteString("# Written by imgbake: Wi-Fi interface.\nallow-hotplug " + wifiIface + "\n")
	if st == nil {
		b.WriteString("iface " + wifiIface + " inet dhcp\n")
	} else {
		b.WriteString(st.ifupdownStanza(wifiIface))
	}
	b.WriteString("\twpa-conf /etc/wpa_supplicant/wpa_supplicant.conf\n")
	return b.String()
}

// networkdWiFi is the systemd-networkd side of the Wi-Fi interface
// (wpa_supplicant@wlan0 associates it).
func networkdWiFi(st *static) string {
	var b strings.Builder
	b.WriteString("# Written by imgbake: Wi-Fi interface (wpa_supplicant@" + wifiIface + " joins the network).\n[Match]\nName=" + wifiIface + "\n\n[Network]\n")
	if st == nil {
		return b.String() + "DHCP=yes\n"
	}
	return b.String() + st.networkdAddress()
}

// setIniKey sets key=value in [section] of an INI-style file, adding the
// section or key when missing.
func setIniKey(old []byte, section, key, value string) []byte {
	lines := strings.SplitAfter(string(old), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	in, secAt := false, -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "[") {
			if in {
				break
			}
			in = t == "["+section+"]"
			if in {
				secAt = i
			}
			continue
		}
		if in && strings.HasPrefix(t, key+"=") {
			lines[i] = key + "=" + value + "\n"
			return []byte(strings.Join(lines, ""))
		}
	}
	if secAt < 0 {
		out := strings.Join(lines, "")
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		return []byte(out + "[" + section + "]\n" + key + "=" + value + "\n")
	}
	lines = append(lines[:secAt+1], append([]string{key + "=" + value + "\n"}, lines[secAt+1:]...)...)
	return []byte(strings.Join(lines, ""))
}

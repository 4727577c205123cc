package dhcp

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var (
	pi4MAC = net.HardwareAddr{0xdc, 0xa6, 0x32, 0x01, 0x36, 0xc2}
	pi3MAC = net.HardwareAddr{0xb8, 0x27, 0xeb, 0x11, 0x22, 0x33}
)

// piOpt97 builds a Pi 4/5 option 97 as REFERENCE.md describes it.
func piOpt97(model string, rev uint32, mac net.HardwareAddr, serial uint32) []byte {
	b := append([]byte{0}, model...)
	b = binary.BigEndian.AppendUint32(b, rev)
	b = append(b, mac[2:6]...)
	return binary.BigEndian.AppendUint32(b, serial)
}

// piDiscover builds a DISCOVER as the Pi 4 bootloader sends it (opt97 nil:
// as the Pi 3B ROM sends it).
func piDiscover(t testing.TB, mac net.HardwareAddr, opt97 []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{0x0a, 0x48, 0x58, 0x63}),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(PiVendorClass)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 0})),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1})),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionVendorSpecificInformation,
			dhcpv4.OptionClassIdentifier, dhcpv4.OptionTFTPServerName, dhcpv4.OptionBootfileName),
	}
	if opt97 != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, opt97)))
	}
	p, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	p.Flags = 0
	return p
}

// piRequest builds the Pi 4's REQUEST for the address offered by the
// network's DHCP server: no option 60.
func piRequest(t testing.TB, mac net.HardwareAddr, opt97 []byte, server, addr net.IP) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{0x0a, 0x48, 0x58, 0x64}),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(addr)),
	}
	if opt97 != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, opt97)))
	}
	p, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePiOption97(t *testing.T) {
	o := piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd)
	model, rev, serial := parsePiOption97(o, pi4MAC)
	if model != "RPi4" || rev != 0xc03111 || serial != "1234abcd" {
		t.Errorf("big-endian: %q %#x %q", model, rev, serial)
	}
	le := []byte{0, 'R', 'P', 'i', '5', 0x11, 0x31, 0xc0, 0, 0xc2, 0x36, 0x01, 0x32, 0xcd, 0xab, 0x34, 0x12}
	if model, rev, serial := parsePiOption97(le, pi4MAC); model != "RPi5" || rev != 0xc03111 || serial != "1234abcd" {
		t.Errorf("little-endian: %q %#x %q", model, rev, serial)
	}
	for _, bad := range [][]byte{nil, o[:16], append([]byte{1}, o[1:]...), piOpt97("PXE!", 1, pi4MAC, 1), piOpt97("RPi4", 1, pi3MAC, 1)} {
		if model, _, serial := parsePiOption97(bad, pi4MAC); model != "" || serial != "" {
			t.Errorf("parsePiOption97(%x) = %q %q; want nothing", bad, model, serial)
		}
	}
}

func TestPiOption43(t *testing.T) {
	want := append([]byte{0x06, 0x01, 0x03, 0x0a, 0x04, 0x00, 0x50, 0x58, 0x45, 0x09, 0x17, 0x00, 0x00, 0x14}, "Raspberry Pi Boot   "...)
	want = append(want, 0xff)
	if got := piOption43(DefaultMenu); string(got) != string(want) {
		t.Errorf("option 43 = % x\nwant       % x", got, want)
	}
}

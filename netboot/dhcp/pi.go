package dhcp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/imgbake/imgbake/netboot"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// PiVendorClass is option 60 of a Raspberry Pi bootloader's DISCOVER: PXE,
// architecture 0, UNDI 2.1.
const PiVendorClass = "PXEClient:Arch:00000:UNDI:002001"

// DefaultMenu is the PXE boot menu text the Pi looks for in option 43. The
// Pi 3B ROM wants exactly "Raspberry Pi Boot" followed by three spaces;
// later bootloaders match a substring.
const DefaultMenu = "Raspberry Pi Boot   "

// Machine is what a DHCP packet says about the machine that sent it.
type Machine struct {
	// MAC is the client hardware address (chaddr).
	MAC net.HardwareAddr
	// Model is the option 97 FourCC: "RPi4" or "RPi5"; empty when the
	// packet has none (Pi 3B ROM, or a REQUEST without option 97).
	Model string
	// BoardRevision is the board revision code from option 97.
	BoardRevision uint32
	// Serial is the Pi serial from option 97, empty when absent.
	Serial netboot.Serial
	// PXE reports option 60 equal to PiVendorClass.
	PXE bool
	// Address is the address the machine asks for (option 50) or has
	// (ciaddr); the zero Addr when the packet names none.
	Address netip.Addr
}

// String names the machine for logs and errors: its MAC, and its serial
// and model when known.
func (m Machine) String() string {
	s := "mac " + m.MAC.String()
	if m.Serial != "" {
		s += fmt.Sprintf(" serial %s (%s rev %#x)", m.Serial, m.Model, m.BoardRevision)
	}
	return s
}

// machineOf extracts the Machine from a request.
func machineOf(p *dhcpv4.DHCPv4) Machine {
	m := Machine{MAC: p.ClientHWAddr, PXE: p.ClassIdentifier() == PiVendorClass}
	m.Model, m.BoardRevision, m.Serial = parsePiOption97(p.GetOneOption(dhcpv4.OptionClientMachineIdentifier), p.ClientHWAddr)
	for _, ip := range []net.IP{p.RequestedIPAddress(), p.ClientIPAddr} {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok && !a.IsUnspecified() && !m.Address.IsValid() {
			m.Address = a
		}
	}
	return m
}

// parsePiOption97 decodes a Pi 4/5 client machine identifier: type 0 (RFC
// 4578) then 16 bytes: FourCC "RPi4"/"RPi5", board revision, the low four
// bytes of the MAC and the serial. The words' byte order is taken from the
// MAC field, which must match chaddr either way round; anything else is
// not a Pi identifier and yields zero values.
func parsePiOption97(o []byte, mac net.HardwareAddr) (model string, rev uint32, serial netboot.Serial) {
	if len(o) != 17 || o[0] != 0 || len(mac) != 6 {
		return "", 0, ""
	}
	fourcc := string(o[1:5])
	if fourcc != "RPi4" && fourcc != "RPi5" {
		return "", 0, ""
	}
	var order binary.ByteOrder
	switch low := mac[2:6]; {
	case bytes.Equal(o[9:13], low):
		order = binary.BigEndian
	case bytes.Equal(o[9:13], []byte{low[3], low[2], low[1], low[0]}):
		order = binary.LittleEndian
	default:
		return "", 0, ""
	}
	s := fmt.Sprintf("%08x", order.Uint32(o[13:17]))
	return fourcc, order.Uint32(o[5:9]), netboot.Serial(s)
}

// piOption43 encodes the PXE vendor options exactly as dnsmasq does for
// pxe-service=0,"<menu>": discovery control 3 (skip discovery, boot from
// the reply), a "PXE" menu prompt with timeout 0, and one boot menu entry
// of type 0 with the menu text.
func piOption43(menu string) []byte {
	b := []byte{6, 1, 3, 10, 4, 0, 'P', 'X', 'E', 9, byte(3 + len(menu)), 0, 0, byte(len(menu))}
	b = append(b, menu...)
	return append(b, 0xff)
}

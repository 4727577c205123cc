package dhcp

import (
	"bytes"
	"encoding/binary"
	"net"
	"regexp"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var serialRE = regexp.MustCompile(`^[0-9a-f]{8}$`)

// FuzzPiRequest parses the Pi-specific parts of DHCP packets from the
// network (option 60, option 97 with its byte-order guess) from untrusted
// bytes. A Machine names a serial only when option 97 is a well-formed Pi
// identifier whose MAC field matches chaddr, the serial is 8 lower-case hex
// digits, and re-encoding what was parsed gives back the option.
func FuzzPiRequest(f *testing.F) {
	f.Add(piDiscover(f, pi4MAC, piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd)).ToBytes())
	f.Add(piDiscover(f, pi4MAC, piOpt97("RPi5", 0xd04170, pi4MAC, 0xdeadbeef)).ToBytes())
	f.Add(piDiscover(f, pi3MAC, nil).ToBytes())
	le := piOpt97("RPi4", 0xc03111, pi4MAC, 0x1234abcd)
	for _, w := range [][2]int{{5, 9}, {9, 13}, {13, 17}} {
		binary.LittleEndian.PutUint32(le[w[0]:w[1]], binary.BigEndian.Uint32(le[w[0]:w[1]]))
	}
	f.Add(piDiscover(f, pi4MAC, le).ToBytes())
	f.Add(piRequest(f, pi4MAC, nil, net.IPv4(1, 2, 3, 4), net.IPv4(1, 2, 3, 5)).ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		m := machineOf(p)
		_ = m.String()
		if m.Serial == "" {
			if m.Model != "" || m.BoardRevision != 0 {
				t.Fatalf("model %q rev %#x without a serial", m.Model, m.BoardRevision)
			}
			return
		}
		o := p.GetOneOption(dhcpv4.OptionClientMachineIdentifier)
		if !serialRE.MatchString(string(m.Serial)) {
			t.Fatalf("serial %q is not 8 hex digits", m.Serial)
		}
		if m.Model != "RPi4" && m.Model != "RPi5" {
			t.Fatalf("model %q", m.Model)
		}
		var serial uint32
		for _, c := range []byte(m.Serial) {
			serial = serial<<4 | uint32(bytes.IndexByte([]byte("0123456789abcdef"), c))
		}
		be := piOpt97(m.Model, m.BoardRevision, p.ClientHWAddr, serial)
		le := bytes.Clone(be)
		for _, w := range [][2]int{{5, 9}, {9, 13}, {13, 17}} {
			binary.LittleEndian.PutUint32(le[w[0]:w[1]], binary.BigEndian.Uint32(be[w[0]:w[1]]))
		}
		if !bytes.Equal(o, be) && !bytes.Equal(o, le) {
			t.Fatalf("option 97 %x parsed as %+v, which encodes as %x or %x", o, m, be, le)
		}
	})
}

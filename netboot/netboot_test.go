package netboot

import (
	"net"
	"testing"
)

func TestParseSerial(t *testing.T) {
	for in, want := range map[string]Serial{"1234ABCD": "1234abcd", "100000001234abcd": "1234abcd", "deadbeef": "deadbeef"} {
		if got, err := ParseSerial(in); err != nil || got != want {
			t.Errorf("ParseSerial(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1234abc", "1234abcg", "../../..", "1234abcd1"} {
		if got, err := ParseSerial(in); err == nil {
			t.Errorf("ParseSerial(%q) = %q; want an error", in, got)
		}
	}
}

func TestMACPrefix(t *testing.T) {
	mac := net.HardwareAddr{0xdc, 0xa6, 0x32, 0x01, 0x36, 0xc2}
	if got := MACPrefix(mac); got != "dc-a6-32-01-36-c2" {
		t.Errorf("MACPrefix = %q", got)
	}
	if got, err := ParseMACPrefix("DC-A6-32-01-36-C2"); err != nil || got.String() != mac.String() {
		t.Errorf("ParseMACPrefix = %v, %v", got, err)
	}
	for _, in := range []string{"dc:a6:32:01:36:c2", "dc-a6-32-01-36", "dc-a6-32-01-36-cg", "dc.a6.32.01.36.c2"} {
		if _, err := ParseMACPrefix(in); err == nil {
			t.Errorf("ParseMACPrefix(%q) accepted", in)
		}
	}
}

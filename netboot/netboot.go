// Package netboot holds the small pieces shared by the Raspberry Pi network
// boot servers in its subpackages: dhcp (proxyDHCP), tftp (per-node boot
// files), nbd (per-node root disks) and binding (which address may use
// which node's disk).
//
// A Pi names itself in two ways during network boot: by its Ethernet MAC
// address and, on the Pi 4 and Pi 5, by the low 32 bits of its board serial
// number. The bootloader uses the serial (8 lower-case hex digits) as the
// default TFTP directory prefix, or the MAC as "dc-a6-32-01-36-c2" when the
// EEPROM sets TFTP_PREFIX=2 (Raspberry Pi documentation, "Raspberry Pi boot
// EEPROM").
package netboot

import (
	"fmt"
	"net"
	"strings"
)

// Serial is a Pi's TFTP serial: the low 32 bits of the board serial number
// as 8 lower-case hex digits, e.g. "1234abcd".
type Serial string

// ParseSerial accepts 8 hex digits in either case (optionally the full
// 16-digit serial from /proc/cpuinfo, of which the low 8 digits are kept)
// and returns the normalised Serial.
func ParseSerial(s string) (Serial, error) {
	if len(s) == 16 {
		s = s[8:]
	}
	if len(s) != 8 || !isHex(s) {
		return "", fmt.Errorf("parsing serial %q: want 8 hex digits, e.g. 1234abcd (the low half of the serial in /proc/cpuinfo)", s)
	}
	return Serial(strings.ToLower(s)), nil
}

// MACPrefix returns the TFTP directory prefix the bootloader uses for mac
// when TFTP_PREFIX=2: lower-case hex bytes joined by '-'.
func MACPrefix(mac net.HardwareAddr) string {
	return strings.ReplaceAll(mac.String(), ":", "-")
}

// ParseMACPrefix parses a "dc-a6-32-01-36-c2" directory prefix (either case).
func ParseMACPrefix(s string) (net.HardwareAddr, error) {
	if len(s) != 17 {
		return nil, fmt.Errorf("parsing MAC prefix %q: want 6 hex pairs joined by '-'", s)
	}
	for i := 2; i < len(s); i += 3 {
		if s[i] != '-' {
			return nil, fmt.Errorf("parsing MAC prefix %q: want 6 hex pairs joined by '-'", s)
		}
	}
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("parsing MAC prefix %q: %w", s, err)
	}
	return mac, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

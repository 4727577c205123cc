package enroll

import "fmt"

// Board is what a Raspberry Pi board revision code says about the board.
type Board struct {
	// Model is imgbake's model name (pi4, pi5, cm4, ...), the names the
	// cluster file's model: field takes; empty when the code is unknown.
	Model string
	// ARMv6 reports a BCM2835 CPU (Pi 1, Zero, Zero W, CM1), which cannot
	// run k3s.
	ARMv6 bool
	// MemoryMB is the memory size; 0 when the code does not say.
	MemoryMB int
}

// newTypes maps the type field of new-style revision codes (bits 4-11) to
// model names. Source: Raspberry Pi documentation, "Raspberry Pi revision
// codes" (computers/raspberry-pi/revision-codes.adoc), new-style table.
var newTypes = map[uint32]string{
	0x00: "pi1", 0x01: "pi1", 0x02: "pi1", 0x03: "pi1", // A, B, A+, B+
	0x04: "pi2", 0x06: "cm1", 0x08: "pi3", 0x09: "pi0", 0x0a: "cm3",
	0x0c: "pi0w", 0x0d: "pi3+", 0x0e: "pi3+", // 3A+ is a 3B+ for imgbake
	0x10: "cm3+", 0x11: "pi4", 0x12: "pi02w", 0x13: "pi400", 0x14: "cm4",
	0x15: "cm4s", 0x17: "pi5", 0x18: "cm5", 0x19: "pi500", 0x1a: "cm5",
}

// DecodeRevision decodes a board revision code, as the Pi 4/5 bootloader
// sends it in DHCP option 97 and /proc/cpuinfo shows it ("c03111").
// New-style codes (bit 23 set) are NOQuuuWuFMMMCCCCPPPPTTTTTTTTRRRR: memory
// size in MMM, processor in PPPP (0 = BCM2835, ARMv6), type in TTTTTTTT.
// Old-style codes 0x0002-0x0015 are the Pi 1 and CM1.
func DecodeRevision(rev uint32) (Board, error) {
	if rev&(1<<23) == 0 {
		code := rev & 0xffffff
		if code >= 0x2 && code <= 0x15 {
			m := "pi1"
			if code == 0x14 {
				m = "cm1"
			}
			return Board{Model: m, ARMv6: true}, nil
		}
		return Board{}, fmt.Errorf("board revision %#x: not a Raspberry Pi revision code", rev)
	}
	b := Board{ARMv6: (rev>>12)&0xf == 0}
	if mem := (rev >> 20) & 0x7; mem <= 6 {
		b.MemoryMB = 256 << mem
	}
	m, ok := newTypes[(rev>>4)&0xff]
	if !ok {
		return b, fmt.Errorf("board revision %#x: unknown board type %#x (newer than this imgbake?)", rev, (rev>>4)&0xff)
	}
	b.Model = m
	return b, nil
}

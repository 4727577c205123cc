package fat

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
)

// shortChars are the characters allowed in an 8.3 name besides A-Z, 0-9.
const shortChars = "!#$%&'()-@^_`{}~"

func validShort(s string) bool {
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune(shortChars, r)) {
			return false
		}
	}
	return true
}

// caseFlag returns the NT lower-case flag for a name part, or ok=false when
// it mixes upper and lower case (then a long name is needed).
func caseFlag(s string, flag byte) (byte, bool) {
	up, low := s != strings.ToLower(s), s != strings.ToUpper(s)
	switch {
	case up && low:
		return 0, false
	case low:
		return flag, true
	}
	return 0, true
}

// short83 returns the 8.3 entry name and NT case flags for name when it
// fits 8.3 exactly (as Linux vfat stores "cmdline.txt" without a long name).
func short83(name string) ([]byte, byte, bool) {
	base, ext, _ := strings.Cut(name, ".")
	if base == "" || len(base) > 8 || len(ext) > 3 || strings.Contains(ext, ".") ||
		!validShort(base) || !validShort(ext) || (ext == "" && strings.HasSuffix(name, ".")) {
		return nil, 0, false
	}
	fb, ok1 := caseFlag(base, 0x08)
	fe, ok2 := caseFlag(ext, 0x10)
	if !ok1 || !ok2 {
		return nil, 0, false
	}
	return []byte(fmt.Sprintf("%-8s%-3s", strings.ToUpper(base), strings.ToUpper(ext))), fb | fe, true
}

// alias makes a unique "BASE~N.EXT" 8.3 name for a long name.
func alias(name string, d *dir) ([]byte, error) {
	clean := func(s string) string {
		var b strings.Builder
		for _, r := range strings.ToUpper(s) {
			switch {
			case r == ' ' || r == '.':
			case r < 128 && validShort(string(r)):
				b.WriteRune(r)
			default:
				b.WriteByte('_')
			}
		}
		return b.String()
	}
	base, ext := strings.TrimLeft(name, "."), ""
	if i := strings.LastIndex(base, "."); i > 0 {
		base, ext = base[:i], base[i+1:]
	}
	base, ext = clean(base), clean(ext)
	if len(ext) > 3 {
		ext = ext[:3]
	}
	taken := map[string]bool{}
	for i := 0; i*entSize < len(d.data); i++ {
		e := d.data[i*entSize:][:entSize]
		if e[0] != 0 && e[0] != 0xe5 && e[11]&0x3f != attrLFN {
			taken[string(e[:11])] = true
		}
	}
	for n := 1; n < 1000000; n++ {
		tail := "~" + strconv.Itoa(n)
		b := base
		if len(b) > 8-len(tail) {
			b = b[:8-len(tail)]
		}
		s := fmt.Sprintf("%-8s%-3s", b+tail, ext)
		if !taken[s] {
			return []byte(s), nil
		}
	}
	return nil, fmt.Errorf("no free short name for %q", name)
}

// addEntry writes a new entry (long-name entries first when needed) into d
// and stores d.
func (f *FS) addEntry(d *dir, name string, attr byte, clus, size uint32) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, "\\/:*?\"<>|") {
		return fmt.Errorf("%q: not a valid FAT file name", name)
	}
	n83, nt, ok := short83(name)
	var lfn [][]byte
	if !ok {
		var err error
		if n83, err = alias(name, d); err != nil {
			return err
		}
		lfn = lfnEntries(name, checksum(n83))
	}
	slot, err := f.freeSlots(d, len(lfn)+1)
	if err != nil {
		return err
	}
	for i, e := range lfn {
		copy(d.data[(slot+i)*entSize:], e)
	}
	f.putEntry(d.data[(slot+len(lfn))*entSize:], n83, nt, attr, clus, size)
	return f.storeDir(d)
}

// lfnEntries returns the long-name entries for name, in on-disk order.
func lfnEntries(name string, sum byte) [][]byte {
	u := utf16.Encode([]rune(name))
	n := (len(u) + 12) / 13
	if len(u)%13 != 0 {
		u = append(u, 0)
	}
	for len(u)%13 != 0 {
		u = append(u, 0xffff)
	}
	out := make([][]byte, n)
	for i := range n {
		e := make([]byte, entSize)
		ord := byte(i + 1)
		if i == n-1 {
			ord |= 0x40
		}
		e[0], e[11], e[13] = ord, attrLFN, sum
		for j, o := range []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
			binary.LittleEndian.PutUint16(e[o:], u[i*13+j])
		}
		out[n-1-i] = e
	}
	return out
}

// freeSlots finds k consecutive free entries in d, growing a cluster-chain
// directory by one cluster when it is full.
func (f *FS) freeSlots(d *dir, k int) (int, error) {
	run := 0
	total := len(d.data) / entSize
	for i := range total {
		if b := d.data[i*entSize]; b == 0 || b == 0xe5 {
			run++
			if run == k {
				return i - k + 1, nil
			}
		} else {
			run = 0
		}
	}
	if d.clus == 0 && f.typ != 32 {
		return 0, fmt.Errorf("%w: root directory is full", ErrNoSpace)
	}
	cs, err := f.chain(d.clus)
	if err != nil {
		return 0, err
	}
	nc, err := f.alloc(1)
	if err != nil {
		return 0, err
	}
	f.fat[cs[len(cs)-1]] = nc[0]
	d.data = append(d.data, make([]byte, f.ClusterSize())...)
	return total - run, nil
}

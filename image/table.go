package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

const sector = 512

// Partition is one entry of the image's partition table.
type Partition struct {
	// Number is the partition number as the kernel names it (1 = p1).
	Number int `json:"number"`
	// Start and Size are in bytes.
	Start int64 `json:"start"`
	Size  int64 `json:"size"`
	// Type is the MBR type byte ("0x0c") or the GPT type GUID.
	Type string `json:"type"`
	// FS is the filesystem found in it: "fat32", "fat16", "fat12", "ext4",
	// or "" when unknown.
	FS string `json:"fs,omitempty"`
	// Label is the filesystem's volume label.
	Label string `json:"label,omitempty"`
	// PartUUID is how fstab and cmdline.txt refer to the partition:
	// "<disk id>-<nn>" on MBR, the unique GUID on GPT.
	PartUUID string `json:"partuuid"`
}

func (p Partition) end() int64 { return p.Start + p.Size }

// String describes the partition for error messages.
func (p Partition) String() string {
	fs := p.FS
	if fs == "" {
		fs = "unknown filesystem"
	}
	s := fmt.Sprintf("p%d %s %s", p.Number, p.Type, fs)
	if p.Label != "" {
		s += fmt.Sprintf(" %q", p.Label)
	}
	return s
}

// table is a parsed partition table.
type table struct {
	kind   string // "mbr" or "gpt"
	diskID string
	parts  []Partition
	gptHdr []byte // primary GPT header sector
	gptEnt []byte // GPT partition entry array
	mbr    []byte
	// index of each partition's entry (MBR slot or GPT entry number)
	slot map[int]int
}

// readTable parses the MBR, or the GPT behind a protective MBR.
func readTable(r io.ReaderAt, size int64) (*table, error) {
	mbr := make([]byte, sector)
	if n, err := r.ReadAt(mbr, 0); err != nil {
		if what := notAnImage(mbr[:n]); what != "" {
			return nil, fmt.Errorf("this is %s of %d bytes, not a disk image: download it again (check the address; an error page or a login page is not the image)", what, n)
		}
		return nil, fmt.Errorf("reading partition table: %w (a disk image is at least one sector; this file has %d bytes)", err, n)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		if what := notAnImage(mbr); what != "" {
			return nil, fmt.Errorf("this is %s, not a disk image: download it again (check the address; an error page or a login page is not the image)", what)
		}
		return nil, errors.New("no partition table: the first sector has no MBR signature (is this a whole-disk image?)")
	}
	t := &table{kind: "mbr", mbr: mbr, slot: map[int]int{}}
	t.diskID = fmt.Sprintf("%08x", binary.LittleEndian.Uint32(mbr[440:]))
	for i := range 4 {
		e := mbr[446+16*i:][:16]
		typ := e[4]
		if typ == 0xee {
			return readGPT(r, size, mbr)
		}
		start := int64(binary.LittleEndian.Uint32(e[8:])) * sector
		n := int64(binary.LittleEndian.Uint32(e[12:])) * sector
		if typ == 0 || n == 0 {
			continue
		}
		// A download cut short leaves the table promising a little more
		// than the file holds; a damaged table promises anything.
		if want := maxPartEnd(mbr); start > 0 && start < size && start+n > size && want < 8*size {
			return nil, truncated(size, want)
		}
		if start+n > size || start == 0 {
			return nil, fmt.Errorf("corrupt partition table: partition %d (%d bytes at %d) lies outside the %d-byte image (if the download was cut short, download it again)", i+1, n, start, size)
		}
		t.slot[i+1] = i
		t.parts = append(t.parts, Partition{Number: i + 1, Start: start, Size: n,
			Type: fmt.Sprintf("0x%02x", typ), PartUUID: fmt.Sprintf("%s-%02d", t.diskID, i+1)})
	}
	if err := checkOverlap(t.parts); err != nil {
		return nil, err
	}
	return t, nil
}

// truncated reports an image shorter than its partition table says.
func truncated(size, want int64) error {
	return fmt.Errorf("this looks like a truncated download: %d of %d bytes; download it again", size, want)
}

// maxPartEnd returns the end in bytes of the MBR partition that ends last.
func maxPartEnd(mbr []byte) int64 {
	var end int64
	for i := range 4 {
		e := mbr[446+16*i:][:16]
		if e[4] != 0 {
			end = max(end, (int64(binary.LittleEndian.Uint32(e[8:]))+int64(binary.LittleEndian.Uint32(e[12:])))*sector)
		}
	}
	return end
}

// notAnImage names what the first sector of a file that is no disk image
// looks like: "an HTML page", "a text file", or "" when it is neither.
func notAnImage(head []byte) string {
	if i := bytes.IndexByte(head, 0); i >= 0 {
		head = head[:i] // a short text file padded by the read
	}
	t := bytes.TrimLeft(head, " \t\r\n\ufeff")
	if len(t) == 0 {
		return ""
	}
	lower := bytes.ToLower(t)
	if bytes.HasPrefix(lower, []byte("<!doctype html")) || bytes.HasPrefix(lower, []byte("<?xml")) || bytes.Contains(lower, []byte("<html")) {
		return "an HTML page"
	}
	for _, r := range string(t) {
		if r == utf8.RuneError || (r < 0x20 && r != '\n' && r != '\r' && r != '\t') {
			return ""
		}
	}
	return "a text file"
}

func checkOverlap(ps []Partition) error {
	for i, a := range ps {
		for _, b := range ps[i+1:] {
			if a.Start < b.end() && b.Start < a.end() {
				return fmt.Errorf("corrupt partition table: partitions %d and %d overlap", a.Number, b.Number)
			}
		}
	}
	return nil
}

// guid formats a GPT GUID (mixed-endian) as text.
func guid(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

func readGPT(r io.ReaderAt, size int64, mbr []byte) (*table, error) {
	h := make([]byte, sector)
	if _, err := r.ReadAt(h, sector); err != nil {
		return nil, fmt.Errorf("reading GPT header: %w", err)
	}
	hs := binary.LittleEndian.Uint32(h[12:])
	if !bytes.Equal(h[:8], []byte("EFI PART")) || hs < 92 || hs > sector {
		return nil, errors.New("corrupt partition table: protective MBR without a GPT header")
	}
	sum := binary.LittleEndian.Uint32(h[16:])
	c := bytes.Clone(h[:hs])
	binary.LittleEndian.PutUint32(c[16:], 0)
	if crc32.ChecksumIEEE(c) != sum {
		return nil, errors.New("corrupt partition table: GPT header checksum mismatch")
	}
	entLBA := binary.LittleEndian.Uint64(h[72:])
	n := int64(binary.LittleEndian.Uint32(h[80:]))
	esz := int64(binary.LittleEndian.Uint32(h[84:]))
	if esz < 128 || esz > 1<<20 || n*esz > 1<<20 {
		return nil, errors.New("corrupt partition table: bad GPT entry array size")
	}
	// Partitions lie between the first and last usable blocks, which lie
	// between the primary and the backup table (UEFI 2.10, 5.3.2).
	firstUsable, lastUsable := binary.LittleEndian.Uint64(h[40:]), binary.LittleEndian.Uint64(h[48:])
	if alt := binary.LittleEndian.Uint64(h[32:]); alt < 1<<40 && lastUsable < alt && int64(alt+1)*sector > size && int64(alt+1)*sector < 8*size {
		return nil, truncated(size, int64(alt+1)*sector)
	}
	if entLBA < 2 || entLBA >= uint64(size/sector) || firstUsable < 2 || lastUsable < firstUsable || lastUsable >= uint64(size/sector) {
		return nil, errors.New("corrupt partition table: GPT header points outside the image")
	}
	ents := make([]byte, n*esz)
	if _, err := r.ReadAt(ents, int64(entLBA)*sector); err != nil {
		return nil, fmt.Errorf("reading GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(ents) != binary.LittleEndian.Uint32(h[88:]) {
		return nil, errors.New("corrupt partition table: GPT entries checksum mismatch")
	}
	t := &table{kind: "gpt", diskID: guid(h[56:]), gptHdr: h, gptEnt: ents, mbr: mbr, slot: map[int]int{}}
	for i := range int(n) {
		e := ents[int64(i)*esz:][:esz]
		if isZero(e[:16]) {
			continue
		}
		first64, last64 := binary.LittleEndian.Uint64(e[32:]), binary.LittleEndian.Uint64(e[40:])
		if first64 < firstUsable || last64 < first64 || last64 > lastUsable {
			return nil, fmt.Errorf("corrupt partition table: GPT partition %d lies outside the image's usable blocks", i+1)
		}
		first, last := int64(first64), int64(last64)
		name := utf16.Decode(u16s(e[56:128]))
		t.slot[i+1] = i
		t.parts = append(t.parts, Partition{Number: i + 1, Start: first * sector, Size: (last - first + 1) * sector,
			Type: guid(e[:16]), PartUUID: guid(e[16:32]), Label: strings.TrimRight(string(name), "\x00")})
	}
	return t, checkOverlap(t.parts)
}

func u16s(b []byte) []uint16 {
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out
}

// growLast rewrites the table so that partition num (which must be the
// last one on the disk) ends at the end of a newSize-byte image, and
// returns the partition's new size. On GPT the backup header and entries
// move to the new end.
func (t *table) growLast(w io.WriterAt, num int, newSize int64) (int64, error) {
	var p *Partition
	for i := range t.parts {
		if t.parts[i].Number == num {
			p = &t.parts[i]
		}
	}
	for _, q := range t.parts {
		if p != nil && q.Start > p.Start {
			return 0, fmt.Errorf("cannot grow partition %d: partition %d lies after it (use a base image whose root partition is the last one)", num, q.Number)
		}
	}
	if p == nil {
		return 0, fmt.Errorf("no partition %d", num)
	}
	if t.kind == "mbr" {
		end := newSize / sector
		if end > 1<<32-1 {
			return 0, errors.New("cannot grow: an MBR partition table addresses at most 2 TiB (ask for a smaller --size)")
		}
		sectors := end - p.Start/sector
		binary.LittleEndian.PutUint32(t.mbr[446+16*t.slot[num]+12:], uint32(sectors))
		if _, err := w.WriteAt(t.mbr, 0); err != nil {
			return 0, fmt.Errorf("writing MBR: %w", err)
		}
		p.Size = sectors * sector
		return p.Size, nil
	}
	return t.growGPT(w, p, newSize)
}

func (t *table) growGPT(w io.WriterAt, p *Partition, newSize int64) (int64, error) {
	h := t.gptHdr
	esz := int64(binary.LittleEndian.Uint32(h[84:]))
	entSectors := (int64(len(t.gptEnt)) + sector - 1) / sector
	lastLBA := newSize/sector - 1
	lastUsable := lastLBA - entSectors - 1
	oldBackup := int64(binary.LittleEndian.Uint64(h[32:]))
	e := t.gptEnt[int64(t.slot[p.Number])*esz:]
	binary.LittleEndian.PutUint64(e[40:], uint64(lastUsable))
	binary.LittleEndian.PutUint64(h[32:], uint64(lastLBA))
	binary.LittleEndian.PutUint64(h[48:], uint64(lastUsable))
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(t.gptEnt))
	hs := binary.LittleEndian.Uint32(h[12:])
	seal := func(hdr []byte) {
		binary.LittleEndian.PutUint32(hdr[16:], 0)
		binary.LittleEndian.PutUint32(hdr[16:], crc32.ChecksumIEEE(hdr[:hs]))
	}
	seal(h)
	b := bytes.Clone(h)
	binary.LittleEndian.PutUint64(b[24:], uint64(lastLBA))
	binary.LittleEndian.PutUint64(b[32:], 1)
	binary.LittleEndian.PutUint64(b[72:], uint64(lastLBA-entSectors))
	seal(b)
	// Protective MBR covers the whole disk.
	binary.LittleEndian.PutUint32(t.mbr[446+12:], uint32(min(lastLBA, 1<<32-1)))
	writes := []struct {
		data []byte
		off  int64
	}{
		{t.mbr, 0}, {h, sector}, {t.gptEnt, int64(binary.LittleEndian.Uint64(h[72:])) * sector},
		{t.gptEnt, (lastLBA - entSectors) * sector}, {b, lastLBA * sector},
	}
	// Clear the old backup header, if it is where a backup can be (a
	// corrupt header's pointer must not make the image grow elsewhere).
	if oldBackup > 1 && oldBackup < lastLBA {
		writes = append([]struct {
			data []byte
			off  int64
		}{{make([]byte, sector), oldBackup * sector}}, writes...)
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.data, wr.off); err != nil {
			return 0, fmt.Errorf("writing GPT: %w", err)
		}
	}
	p.Size = (lastUsable+1)*sector - p.Start
	return p.Size, nil
}

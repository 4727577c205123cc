// Package fat reads and edits FAT12/16/32 filesystems in place: enough for
// imgbake to replace or create files on a Raspberry Pi boot partition
// (cmdline.txt, config.txt, cloud-init seeds) and to list the clusters in
// use for a block map. Layout as in Microsoft's "FAT: General Overview of
// On-Disk Format" (fatgen103). Timestamps come from the caller so that
// output is reproducible.
package fat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Errors returned by FS operations (test with errors.Is).
var (
	ErrNoSpace  = errors.New("fat: no free clusters")
	ErrReadOnly = errors.New("fat: filesystem opened read-only")
	ErrCorrupt  = errors.New("fat: filesystem is corrupt")
)

// Range is a byte range relative to the start of the filesystem.
type Range struct{ Off, Len int64 }

// FS is an open FAT filesystem.
type FS struct {
	r        io.ReaderAt
	w        io.WriterAt // nil when read-only
	off      int64
	now      time.Time
	typ      int // 12, 16 or 32
	bps      int64
	spc      int64
	resv     int64
	nfats    int64
	fatSize  int64 // sectors per FAT
	rootEnts int64
	rootClus uint32
	fsinfo   int64  // FSInfo sector, 0 = none
	dataOff  int64  // byte offset of cluster 2
	clusters uint32 // number of data clusters; valid clusters are 2..clusters+1
	label    string
	fat      []uint32
	dirty    bool
}

// Open reads the FAT filesystem at byte offset off of dev, size bytes long.
// dev must also be an io.WriterAt unless readOnly. now stamps every file and
// directory written.
func Open(dev io.ReaderAt, off, size int64, readOnly bool, now time.Time) (*FS, error) {
	f := &FS{r: dev, off: off, now: now}
	if !readOnly {
		w, ok := dev.(io.WriterAt)
		if !ok {
			return nil, errors.New("fat: device is not writable")
		}
		f.w = w
	}
	bs := make([]byte, 512)
	if _, err := dev.ReadAt(bs, off); err != nil {
		return nil, fmt.Errorf("reading FAT boot sector: %w", err)
	}
	if err := f.parseBPB(bs, size); err != nil {
		return nil, err
	}
	if err := f.loadFAT(); err != nil {
		return nil, err
	}
	return f, nil
}

// Probe reports whether the sector b (the first 512 bytes of a partition)
// looks like a FAT boot sector.
func Probe(b []byte) bool {
	if len(b) < 512 || b[510] != 0x55 || b[511] != 0xaa {
		return false
	}
	bps := binary.LittleEndian.Uint16(b[11:])
	spc := b[13]
	return (bps == 512 || bps == 1024 || bps == 2048 || bps == 4096) &&
		spc != 0 && spc&(spc-1) == 0 && b[16] != 0 && binary.LittleEndian.Uint16(b[14:]) != 0
}

func (f *FS) parseBPB(b []byte, size int64) error {
	if !Probe(b) {
		return fmt.Errorf("%w: no FAT boot sector", ErrCorrupt)
	}
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	f.bps, f.spc, f.resv, f.nfats = le16(11), int64(b[13]), le16(14), int64(b[16])
	f.rootEnts = le16(17)
	total := le16(19)
	if total == 0 {
		total = le32(32)
	}
	f.fatSize = le16(22)
	if f.fatSize == 0 {
		f.fatSize = le32(36)
	}
	rootSecs := (f.rootEnts*32 + f.bps - 1) / f.bps
	first := f.resv + f.nfats*f.fatSize + rootSecs
	if total*f.bps > size || first >= total || f.fatSize == 0 {
		return fmt.Errorf("%w: boot sector sizes do not fit the partition", ErrCorrupt)
	}
	f.dataOff = first * f.bps
	f.clusters = uint32((total - first) / f.spc)
	labelAt := 43
	switch {
	case f.clusters < 4085:
		f.typ = 12
	case f.clusters < 65525:
		f.typ = 16
	default:
		f.typ, labelAt = 32, 71
		f.rootClus = uint32(le32(44))
		if s := le16(48); s != 0 && s != 0xffff && s < f.resv {
			f.fsinfo = s
		}
	}
	if f.clusters == 0 {
		return fmt.Errorf("%w: no data clusters", ErrCorrupt)
	}
	// Each FAT must hold an entry for every cluster.
	if bits := int64(f.typ); (int64(f.clusters)+2)*bits > f.fatSize*f.bps*8 {
		return fmt.Errorf("%w: the FAT is too small for the partition's clusters", ErrCorrupt)
	}
	switch {
	case f.typ != 32 && (f.rootEnts == 0 || f.rootEnts*entSize%f.bps != 0):
		return fmt.Errorf("%w: bad root directory size", ErrCorrupt)
	case f.typ == 32 && (f.rootClus < 2 || f.rootClus > f.clusters+1):
		return fmt.Errorf("%w: the root directory cluster lies outside the partition", ErrCorrupt)
	}
	f.label = strings.TrimRight(string(b[labelAt:labelAt+11]), " ")
	if f.label == "NO NAME" {
		f.label = ""
	}
	return nil
}

// Type returns "fat12", "fat16" or "fat32".
func (f *FS) Type() string { return fmt.Sprintf("fat%d", f.typ) }

// Label returns the volume label from the boot sector.
func (f *FS) Label() string { return f.label }

// ClusterSize returns the cluster size in bytes.
func (f *FS) ClusterSize() int64 { return f.bps * f.spc }

func (f *FS) fatOff(i int64) int64 { return f.off + (f.resv+i*f.fatSize)*f.bps }

func (f *FS) loadFAT() error {
	raw := make([]byte, f.fatSize*f.bps)
	if _, err := f.r.ReadAt(raw, f.fatOff(0)); err != nil {
		return fmt.Errorf("reading FAT: %w", err)
	}
	n := int(f.clusters) + 2
	f.fat = make([]uint32, n)
	for c := range n {
		switch f.typ {
		case 32:
			f.fat[c] = binary.LittleEndian.Uint32(raw[4*c:]) & 0x0fffffff
		case 16:
			f.fat[c] = uint32(binary.LittleEndian.Uint16(raw[2*c:]))
		default:
			v := uint32(binary.LittleEndian.Uint16(raw[c+c/2:]))
			if c&1 == 1 {
				v >>= 4
			}
			f.fat[c] = v & 0xfff
		}
	}
	return nil
}

// eoc is the end-of-chain mark written for this FAT type.
func (f *FS) eoc() uint32 {
	switch f.typ {
	case 32:
		return 0x0fffffff
	case 16:
		return 0xffff
	}
	return 0xfff
}

// isEOC reports whether v ends a chain.
func (f *FS) isEOC(v uint32) bool { return v >= f.eoc()&^7 }

// chain returns the clusters of the chain starting at c.
func (f *FS) chain(c uint32) ([]uint32, error) {
	var out []uint32
	for c != 0 && !f.isEOC(c) {
		if c < 2 || c >= uint32(len(f.fat)) || len(out) > len(f.fat) {
			return nil, fmt.Errorf("%w: bad cluster chain", ErrCorrupt)
		}
		out = append(out, c)
		c = f.fat[c]
	}
	return out, nil
}

// alloc takes n free clusters, lowest first, links them into a chain and
// zeroes them on disk.
func (f *FS) alloc(n int) ([]uint32, error) {
	var got []uint32
	for c := uint32(2); c < uint32(len(f.fat)) && len(got) < n; c++ {
		if f.fat[c] == 0 {
			got = append(got, c)
		}
	}
	if len(got) < n {
		return nil, ErrNoSpace
	}
	zero := make([]byte, f.ClusterSize())
	for i, c := range got {
		next := f.eoc()
		if i+1 < len(got) {
			next = got[i+1]
		}
		f.fat[c] = next
		if _, err := f.w.WriteAt(zero, f.clusterOff(c)); err != nil {
			return nil, err
		}
	}
	f.dirty = true
	return got, nil
}

// free releases every cluster of the chain starting at c.
func (f *FS) free(c uint32) error {
	cs, err := f.chain(c)
	if err != nil {
		return err
	}
	for _, c := range cs {
		f.fat[c] = 0
	}
	f.dirty = len(cs) > 0 || f.dirty
	return nil
}

func (f *FS) clusterOff(c uint32) int64 {
	return f.off + f.dataOff + int64(c-2)*f.ClusterSize()
}

// FreeBytes returns the free space in bytes.
func (f *FS) FreeBytes() int64 {
	var n int64
	for _, v := range f.fat[2:] {
		if v == 0 {
			n++
		}
	}
	return n * f.ClusterSize()
}

// Sync writes the FAT (every copy) and the FSInfo free count back.
func (f *FS) Sync() error {
	if f.w == nil || !f.dirty {
		return nil
	}
	raw := make([]byte, f.fatSize*f.bps)
	if _, err := f.r.ReadAt(raw, f.fatOff(0)); err != nil {
		return fmt.Errorf("reading FAT: %w", err)
	}
	for c, v := range f.fat {
		switch f.typ {
		case 32:
			old := binary.LittleEndian.Uint32(raw[4*c:])
			binary.LittleEndian.PutUint32(raw[4*c:], old&0xf0000000|v)
		case 16:
			binary.LittleEndian.PutUint16(raw[2*c:], uint16(v))
		default:
			o := c + c/2
			old := binary.LittleEndian.Uint16(raw[o:])
			if c&1 == 1 {
				old = old&0x000f | uint16(v)<<4
			} else {
				old = old&0xf000 | uint16(v)
			}
			binary.LittleEndian.PutUint16(raw[o:], old)
		}
	}
	for i := range f.nfats {
		if _, err := f.w.WriteAt(raw, f.fatOff(i)); err != nil {
			return fmt.Errorf("writing FAT: %w", err)
		}
	}
	if f.fsinfo != 0 {
		if err := f.writeFSInfo(); err != nil {
			return err
		}
	}
	f.dirty = false
	return nil
}

func (f *FS) writeFSInfo() error {
	s := make([]byte, 512)
	at := f.off + f.fsinfo*f.bps
	if _, err := f.r.ReadAt(s, at); err != nil {
		return fmt.Errorf("reading FSInfo: %w", err)
	}
	if binary.LittleEndian.Uint32(s) != 0x41615252 || binary.LittleEndian.Uint32(s[484:]) != 0x61417272 {
		return nil // no valid FSInfo: nothing to keep up to date
	}
	binary.LittleEndian.PutUint32(s[488:], uint32(f.FreeBytes()/f.ClusterSize()))
	if _, err := f.w.WriteAt(s, at); err != nil {
		return fmt.Errorf("writing FSInfo: %w", err)
	}
	return nil
}

// AllocatedRanges returns the byte ranges (relative to the filesystem
// start, sorted, merged) in use: boot sectors, FATs, the FAT12/16 root
// directory and every allocated cluster.
func (f *FS) AllocatedRanges() []Range {
	rs := []Range{{0, f.dataOff}}
	cs := f.ClusterSize()
	for c := uint32(2); c < uint32(len(f.fat)); c++ {
		if f.fat[c] == 0 {
			continue
		}
		o := f.dataOff + int64(c-2)*cs
		if last := &rs[len(rs)-1]; last.Off+last.Len == o {
			last.Len += cs
		} else {
			rs = append(rs, Range{o, cs})
		}
	}
	return rs
}

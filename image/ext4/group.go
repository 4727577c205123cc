package ext4

import (
	"fmt"
	"maps"
	"slices"
)

// Group descriptor offsets (struct ext4_group_desc).
const (
	gdBlockBitmap   = 0x0
	gdInodeBitmap   = 0x4
	gdInodeTable    = 0x8
	gdFreeBlocks    = 0xC
	gdFreeInodes    = 0xE
	gdUsedDirs      = 0x10
	gdFlags         = 0x12
	gdBlockBmpCsum  = 0x18
	gdInodeBmpCsum  = 0x1A
	gdItableUnused  = 0x1C
	gdChecksum      = 0x1E
	gdBlockBitmapHi = 0x20
	gdInodeBitmapHi = 0x24
	gdInodeTableHi  = 0x28
	gdFreeBlocksHi  = 0x2C
	gdFreeInodesHi  = 0x2E
	gdUsedDirsHi    = 0x30
	gdItableUnusHi  = 0x32
	gdBlockBmpCsHi  = 0x38
	gdInodeBmpCsHi  = 0x3A

	bgInodeUninit  = 0x1
	bgBlockUninit  = 0x2
	bgItableZeroed = 0x4
)

// gdtBlock returns the first block of the primary descriptor table.
func (f *FS) gdtBlock() uint64 { return f.firstData + 1 }

func (f *FS) loadGDT() error {
	f.gdt = make([]byte, f.descBlks*uint64(f.bs))
	for i := uint64(0); i < f.descBlks; i++ {
		loc := f.gdtLoc(i)
		if loc >= f.blocks {
			return fmt.Errorf("reading group descriptors: block %d out of range: %w", loc, ErrCorrupt)
		}
		if err := f.readAt(f.gdt[i*uint64(f.bs):(i+1)*uint64(f.bs)], int64(loc)*f.bs); err != nil {
			return fmt.Errorf("reading group descriptors: %w", err)
		}
	}
	f.gdt = f.gdt[:uint64(f.groups)*uint64(f.descSize)]
	for g := uint32(0); g < f.groups; g++ {
		if f.csumEnabled() && f.descCsum(g) != le16(f.desc(g), gdChecksum) {
			return fmt.Errorf("reading group descriptor %d: checksum mismatch: %w", g, ErrCorrupt)
		}
		for _, b := range []uint64{f.blockBitmapLoc(g), f.inodeBitmapLoc(g), f.inodeTableLoc(g)} {
			if b < f.firstData || b >= f.blocks {
				return fmt.Errorf("reading group descriptor %d: metadata block %d out of range: %w", g, b, ErrCorrupt)
			}
		}
	}
	return nil
}

func (f *FS) csumEnabled() bool { return f.metaCsum || f.gdtCsum }

func (f *FS) desc(g uint32) []byte {
	o := int(g) * f.descSize
	return f.gdt[o : o+f.descSize]
}

func (f *FS) descLoHi32(g uint32, lo, hi int) uint64 {
	d := f.desc(g)
	v := uint64(le32(d, lo))
	if f.descSize >= 64 {
		v |= uint64(le32(d, hi)) << 32
	}
	return v
}

func (f *FS) descLoHi16(g uint32, lo, hi int) uint32 {
	d := f.desc(g)
	v := uint32(le16(d, lo))
	if f.descSize >= 64 {
		v |= uint32(le16(d, hi)) << 16
	}
	return v
}

func (f *FS) setDescLoHi16(g uint32, lo, hi int, v uint32) {
	d := f.desc(g)
	put16(d, lo, uint16(v))
	if f.descSize >= 64 {
		put16(d, hi, uint16(v>>16))
	}
	f.gdtDirty[g] = true
}

func (f *FS) setDescLoHi32(g uint32, lo, hi int, v uint64) {
	d := f.desc(g)
	put32(d, lo, uint32(v))
	if f.descSize >= 64 {
		put32(d, hi, uint32(v>>32))
	}
	f.gdtDirty[g] = true
}

func (f *FS) blockBitmapLoc(g uint32) uint64 { return f.descLoHi32(g, gdBlockBitmap, gdBlockBitmapHi) }
func (f *FS) inodeBitmapLoc(g uint32) uint64 { return f.descLoHi32(g, gdInodeBitmap, gdInodeBitmapHi) }
func (f *FS) inodeTableLoc(g uint32) uint64  { return f.descLoHi32(g, gdInodeTable, gdInodeTableHi) }
func (f *FS) groupFreeBlocks(g uint32) uint32 {
	return f.descLoHi16(g, gdFreeBlocks, gdFreeBlocksHi)
}
func (f *FS) groupFreeInodes(g uint32) uint32 {
	return f.descLoHi16(g, gdFreeInodes, gdFreeInodesHi)
}
func (f *FS) groupFlags(g uint32) uint16 { return le16(f.desc(g), gdFlags) }
func (f *FS) setGroupFlags(g uint32, v uint16) {
	put16(f.desc(g), gdFlags, v)
	f.gdtDirty[g] = true
}

// itableBlocks is the number of blocks each group's inode table takes.
func (f *FS) itableBlocks() uint64 {
	return (uint64(f.ipg)*uint64(f.inodeSize) + uint64(f.bs) - 1) / uint64(f.bs)
}

// groupStart is the first block of group g; groupLen the number of blocks in it.
func (f *FS) groupStart(g uint32) uint64 { return f.firstData + uint64(g)*uint64(f.bpg) }
func (f *FS) groupLen(g uint32) uint64 {
	n := f.blocks - f.groupStart(g)
	if n > uint64(f.bpg) {
		n = uint64(f.bpg)
	}
	return n
}

// hasSuper reports whether group g holds a superblock backup (sparse_super: 0, 1, 3^n, 5^n, 7^n).
func (f *FS) hasSuper(g uint32) bool {
	if g <= 1 || !f.hasRoCompat(roSparseSuper) {
		return true
	}
	if f.hasCompat(compatSparseSuper2) {
		return g == le32(f.sb, sbBackupBgs) || g == le32(f.sb, sbBackupBgs+4)
	}
	if g%2 == 0 {
		return false
	}
	for _, p := range []uint32{3, 5, 7} {
		x := g
		for x%p == 0 {
			x /= p
		}
		if x == 1 {
			return true
		}
	}
	return false
}

// metaBg reports the meta_bg layout: descriptor block i >= s_first_meta_bg lives in the
// first group of its meta group (and backups in the second and last).
func (f *FS) metaBg() bool { return f.hasIncompat(incompatMetaBg) }

func (f *FS) firstMetaBg() uint64 { return uint64(le32(f.sb, sbFirstMetaBg)) }

// descPerBlock is the number of group descriptors in one block (the groups of a meta group).
func (f *FS) descPerBlock() uint32 { return uint32(f.bs) / uint32(f.descSize) }

// gdtLoc is where descriptor block i of the primary table lives.
func (f *FS) gdtLoc(i uint64) uint64 {
	if !f.metaBg() || i < f.firstMetaBg() {
		return f.gdtBlock() + i
	}
	g := uint32(i) * f.descPerBlock()
	if f.hasSuper(g) {
		return f.groupStart(g) + 1
	}
	return f.groupStart(g)
}

// superOverhead is the number of blocks at the start of group g taken by the superblock
// copy, descriptor blocks (classic or meta_bg) and the reserved GDT blocks
// (ext2fs_super_and_bgd_loc2).
func (f *FS) superOverhead(g uint32) uint64 {
	n := uint64(0)
	if f.hasSuper(g) {
		n = 1
	}
	dpb := f.descPerBlock()
	if !f.metaBg() || uint64(g/dpb) < f.firstMetaBg() {
		if f.hasSuper(g) {
			if f.metaBg() {
				n += f.firstMetaBg()
			} else {
				n += f.descBlks + uint64(le16(f.sb, sbReservedGDT))
			}
		}
	} else if r := g % dpb; r == 0 || r == 1 || r == dpb-1 {
		n++
	}
	return n
}

func (f *FS) descCsum(g uint32) uint16 {
	d := append([]byte(nil), f.desc(g)...)
	put16(d, gdChecksum, 0)
	if f.metaCsum {
		c := crc32cU32(f.csumSeed, g)
		c = crc32c(c, d[:gdChecksum])
		c = crc32c(c, d[gdChecksum:])
		return uint16(c)
	}
	c := crc16(0xFFFF, f.sb[sbUUID:sbUUID+16])
	var gb [4]byte
	put32(gb[:], 0, g)
	c = crc16(c, gb[:])
	c = crc16(c, d[:gdChecksum])
	if f.descSize > 32 {
		c = crc16(c, d[32:])
	}
	return c
}

func (f *FS) flushGDT() error {
	if len(f.gdtDirty) == 0 {
		return nil
	}
	blocks := map[uint64]bool{}
	for _, g := range slices.Sorted(maps.Keys(f.gdtDirty)) {
		if f.csumEnabled() {
			put16(f.desc(g), gdChecksum, f.descCsum(g))
		}
		blocks[uint64(g)*uint64(f.descSize)/uint64(f.bs)] = true
	}
	for _, i := range slices.Sorted(maps.Keys(blocks)) {
		lo := i * uint64(f.bs)
		hi := min(lo+uint64(f.bs), uint64(len(f.gdt)))
		buf := make([]byte, f.bs)
		copy(buf, f.gdt[lo:hi])
		if err := f.writeAt(buf, int64(f.gdtLoc(i))*f.bs); err != nil {
			return err
		}
	}
	clear(f.gdtDirty)
	return nil
}

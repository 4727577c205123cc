package ext4

import (
	"fmt"
	"math/bits"
)

const resizeIno = 7

// Grow extends the filesystem offline to newSize bytes (like resize2fs): new groups get
// their bitmaps and inode table inside themselves, the descriptor table grows into the
// reserved GDT blocks, and superblock/descriptor backups are written. dev must already be
// newSize bytes long past the filesystem start.
func (f *FS) Grow(newSize int64) error {
	if err := f.writable(); err != nil {
		return err
	}
	if err := f.grow(newSize); err != nil {
		return fmt.Errorf("growing filesystem to %d bytes: %w", newSize, err)
	}
	return nil
}

func (f *FS) grow(newSize int64) error {
	newBlocks := uint64(newSize / f.bs)
	if !f.hasIncompat(incompat64bit) && newBlocks > 1<<32-1 {
		newBlocks = 1<<32 - 1
	}
	if newBlocks < f.blocks {
		return fmt.Errorf("shrinking from %d blocks is not supported", f.blocks)
	}
	if newBlocks == f.blocks {
		return nil
	}
	if f.metaBg() {
		return fmt.Errorf("filesystems with meta_bg cannot be grown here; use resize2fs: %w", ErrUnsupported)
	}
	var probe [1]byte
	if _, err := f.dev.ReadAt(probe[:], f.off+newSize-1); err != nil {
		return fmt.Errorf("device is smaller than the new size (extend the image file or partition first): %w", err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	oldBlocks, oldGroups, oldDesc := f.blocks, f.groups, f.descBlks
	rsv := uint64(le16(f.sb, sbReservedGDT))
	newGroups := uint32((newBlocks - f.firstData + uint64(f.bpg) - 1) / uint64(f.bpg))
	// a last group too small for its own metadata is left out, as resize2fs does
	if newGroups > oldGroups {
		lastLen := newBlocks - f.firstData - uint64(newGroups-1)*uint64(f.bpg)
		over := 1 + uint64((uint64(newGroups)*uint64(f.descSize)+uint64(f.bs)-1)/uint64(f.bs)) + rsv
		if lastLen < over+2+f.itableBlocks()+50 {
			newGroups--
			newBlocks = f.firstData + uint64(newGroups)*uint64(f.bpg)
			if newBlocks <= oldBlocks {
				return nil
			}
		}
	}
	if uint64(newGroups)*uint64(f.ipg) > 1<<32-1 {
		return fmt.Errorf("%d groups would exceed 2^32 inodes: %w", newGroups, ErrUnsupported)
	}
	newDesc := (uint64(newGroups)*uint64(f.descSize) + uint64(f.bs) - 1) / uint64(f.bs)
	if extra := newDesc - oldDesc; extra > 0 && (extra > rsv || !f.hasCompat(compatResizeInode)) {
		return fmt.Errorf("the descriptor table needs %d more blocks but only %d are reserved; grow with resize2fs instead: %w", extra, rsv, ErrUnsupported)
	}
	// the old last group's bitmap, with its old padding, before the geometry changes
	gl := oldGroups - 1
	lb, err := f.blockBitmap(gl)
	if err != nil {
		return err
	}
	oldLastLen := f.groupLen(gl)

	f.blocks, f.groups, f.descBlks = newBlocks, newGroups, newDesc
	f.size = max(f.size, newSize)
	put16(f.sb, sbReservedGDT, uint16(rsv-(newDesc-oldDesc)))
	if newLen := f.groupLen(gl); newLen > oldLastLen {
		for i := oldLastLen; i < newLen; i++ {
			lb.clr(i)
		}
		f.touchBlockGroup(gl, lb)
		f.addGroupFree(gl, int64(newLen-oldLastLen))
	}
	f.gdt = append(f.gdt, make([]byte, int(newGroups-oldGroups)*f.descSize)...)
	for g := oldGroups; g < newGroups; g++ {
		if err := f.initGroup(g); err != nil {
			return err
		}
	}
	f.freeIno += (newGroups - oldGroups) * f.ipg
	put32(f.sb, sbInodesCount, newGroups*f.ipg)
	put32(f.sb, sbBlocksCountLo, uint32(newBlocks))
	r := uint64(le32(f.sb, sbRBlocksCountLo))
	if f.hasIncompat(incompat64bit) {
		put32(f.sb, sbBlocksCountHi, uint32(newBlocks>>32))
		r |= uint64(le32(f.sb, sbRBlocksCountHi)) << 32
	}
	hi, lo := bits.Mul64(r, newBlocks)
	r, _ = bits.Div64(hi, lo, oldBlocks)
	put32(f.sb, sbRBlocksCountLo, uint32(r))
	if f.hasIncompat(incompat64bit) {
		put32(f.sb, sbRBlocksCountHi, uint32(r>>32))
	}
	f.sbDirty = true
	f.log.Debug("growing ext4", "old_blocks", oldBlocks, "new_blocks", newBlocks, "old_groups", oldGroups,
		"new_groups", newGroups, "gdt_blocks", newDesc, "reserved_gdt_left", rsv-(newDesc-oldDesc))
	if f.hasCompat(compatResizeInode) {
		if err := f.rebuildResizeInode(); err != nil {
			return err
		}
	}
	for g := uint32(0); g < f.groups; g++ {
		f.gdtDirty[g] = true
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.writeBackups()
}

// initGroup lays out a new group: [super backup, GDT, reserved GDT], block bitmap, inode
// bitmap, inode table, then free blocks.
func (f *FS) initGroup(g uint32) error {
	start, n := f.groupStart(g), f.groupLen(g)
	ov := f.superOverhead(g)
	it := f.itableBlocks()
	if n < ov+2+it+1 {
		return fmt.Errorf("group %d too small (%d blocks): %w", g, n, ErrNoSpace)
	}
	bb, ib, itb := start+ov, start+ov+1, start+ov+2
	d := f.desc(g)
	clear(d)
	f.setDescLoHi32(g, gdBlockBitmap, gdBlockBitmapHi, bb)
	f.setDescLoHi32(g, gdInodeBitmap, gdInodeBitmapHi, ib)
	f.setDescLoHi32(g, gdInodeTable, gdInodeTableHi, itb)
	used := ov + 2 + it
	f.setDescLoHi16(g, gdFreeBlocks, gdFreeBlocksHi, uint32(n-used))
	f.setDescLoHi16(g, gdFreeInodes, gdFreeInodesHi, f.ipg)
	if f.csumEnabled() {
		f.setGroupFlags(g, bgInodeUninit)
		f.setDescLoHi16(g, gdItableUnused, gdItableUnusHi, f.ipg)
	} else if err := f.zeroBlocks(itb, it); err != nil {
		return err
	}
	bm := &bitmap{data: make([]byte, f.bs), dirty: true}
	for i := uint64(0); i < used; i++ {
		bm.set(i)
	}
	for i := n; i < uint64(f.bs*8); i++ {
		bm.set(i)
	}
	f.bbm[g] = bm
	im := &bitmap{data: make([]byte, f.bs), dirty: true}
	for i := uint64(f.ipg); i < uint64(f.bs*8); i++ {
		im.set(i)
	}
	f.ibm[g] = im
	f.freeBlk += n - used
	if o := le32(f.sb, sbOverhead); o != 0 {
		put32(f.sb, sbOverhead, o+uint32(used))
	}
	return nil
}

// zeroBlocks zeroes n blocks from start, skipping chunks that already read as zero so a
// sparse image stays sparse.
func (f *FS) zeroBlocks(start, n uint64) error {
	buf := make([]byte, min(uint64(chunkSize), n*uint64(f.bs)))
	for n > 0 {
		k := min(n, uint64(len(buf))/uint64(f.bs))
		chunk := buf[:k*uint64(f.bs)]
		if err := f.readAt(chunk, int64(start)*f.bs); err != nil || !isZero(chunk) {
			clear(chunk)
			if err := f.writeAt(chunk, int64(start)*f.bs); err != nil {
				return err
			}
		}
		start += k
		n -= k
	}
	return nil
}

// rebuildResizeInode rewrites inode 7's double-indirect map of the reserved GDT blocks and
// their backups for the current geometry (as ext2fs_create_resize_inode lays it out).
func (f *FS) rebuildResizeInode() error {
	in, err := f.getInode(resizeIno)
	if err != nil {
		return err
	}
	dind := uint64(le32(in.b, iBlock+13*4))
	rsv := uint64(le16(f.sb, sbReservedGDT))
	if dind == 0 {
		if rsv == 0 {
			return nil
		}
		return fmt.Errorf("resize inode has no double-indirect block: %w", ErrCorrupt)
	}
	apb := uint64(f.bs / 4)
	var backups []uint32
	for g := uint32(1); g < f.groups; g++ {
		if f.hasSuper(g) {
			backups = append(backups, g)
		}
	}
	db := make([]byte, f.bs)
	for off := uint64(0); off < rsv; off++ {
		gdtBlk := f.firstData + 1 + f.descBlks + off
		put32(db, int(4*((f.descBlks+off)%apb)), uint32(gdtBlk))
		ind := make([]byte, f.bs)
		for k, g := range backups {
			if uint64(k) >= apb {
				break
			}
			put32(ind, 4*k, uint32(gdtBlk+uint64(g)*uint64(f.bpg)))
		}
		f.markDirty(gdtBlk, ind)
	}
	f.markDirty(dind, db)
	nb := int64(1 + rsv*(1+uint64(len(backups))))
	put32(in.b, iFlags, in.flags()&^flHugeFile)
	put32(in.b, iBlocksLo, 0)
	put16(in.b, iBlocksHi, 0)
	in.addBlocks(f, nb)
	in.setTime(iCtime, iCtimeExtra, f.now())
	return f.putInode(in)
}

// writeBackups copies the superblock and descriptor table into every backup group.
func (f *FS) writeBackups() error {
	tbl := make([]byte, f.descBlks*uint64(f.bs))
	copy(tbl, f.gdt)
	for g := uint32(1); g < f.groups; g++ {
		if !f.hasSuper(g) {
			continue
		}
		sb := append([]byte(nil), f.sb...)
		put16(sb, sbBlockGroupNr, uint16(g))
		f.setSuperCsum(sb)
		blk := make([]byte, f.bs)
		copy(blk, sb)
		start := f.groupStart(g)
		if err := f.writeAt(blk, int64(start)*f.bs); err != nil {
			return fmt.Errorf("writing backup superblock of group %d: %w", g, err)
		}
		if err := f.writeAt(tbl, int64(start+1)*f.bs); err != nil {
			return fmt.Errorf("writing backup descriptors of group %d: %w", g, err)
		}
	}
	return nil
}

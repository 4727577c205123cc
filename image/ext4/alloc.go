package ext4

import (
	"fmt"
	"maps"
	"slices"
)

type bitmap struct {
	data  []byte
	dirty bool
}

func (b *bitmap) get(i uint64) bool { return b.data[i/8]&(1<<(i%8)) != 0 }
func (b *bitmap) set(i uint64)      { b.data[i/8] |= 1 << (i % 8) }
func (b *bitmap) clr(i uint64)      { b.data[i/8] &^= 1 << (i % 8) }

// run is a contiguous range of blocks.
type run struct{ start, n uint64 }

// groupMeta returns the block ranges inside group g taken by filesystem metadata:
// superblock/GDT/reserved GDT copies and any group's bitmaps and inode table.
func (f *FS) groupMeta(g uint32) []run {
	start, end := f.groupStart(g), f.groupStart(g)+f.groupLen(g)
	var rs []run
	if n := f.superOverhead(g); n > 0 {
		rs = append(rs, run{start, n})
	}
	it := f.itableBlocks()
	for h := uint32(0); h < f.groups; h++ {
		for _, r := range []run{{f.blockBitmapLoc(h), 1}, {f.inodeBitmapLoc(h), 1}, {f.inodeTableLoc(h), it}} {
			if r.start < end && r.start+r.n > start {
				lo, hi := max(r.start, start), min(r.start+r.n, end)
				rs = append(rs, run{lo, hi - lo})
			}
		}
	}
	return rs
}

// blockBitmap returns group g's block bitmap, computing it for BLOCK_UNINIT groups.
func (f *FS) blockBitmap(g uint32) (*bitmap, error) {
	if b, ok := f.bbm[g]; ok {
		return b, nil
	}
	b := &bitmap{data: make([]byte, f.bs)}
	if f.csumEnabled() && f.groupFlags(g)&bgBlockUninit != 0 {
		start := f.groupStart(g)
		for _, r := range f.groupMeta(g) {
			for i := r.start; i < r.start+r.n; i++ {
				b.set(i - start)
			}
		}
	} else {
		if err := f.readAt(b.data, int64(f.blockBitmapLoc(g))*f.bs); err != nil {
			return nil, fmt.Errorf("reading block bitmap of group %d: %w", g, err)
		}
		if f.metaCsum {
			c := crc32c(f.csumSeed, b.data[:f.bpg/8])
			want := f.descLoHi16(g, gdBlockBmpCsum, gdBlockBmpCsHi)
			if f.descSize < 64 {
				c &= 0xFFFF
			}
			if c != want {
				return nil, fmt.Errorf("reading block bitmap of group %d: checksum mismatch: %w", g, ErrCorrupt)
			}
		}
	}
	for i := f.groupLen(g); i < uint64(f.bs*8); i++ {
		b.set(i)
	}
	f.bbm[g] = b
	return b, nil
}

// inodeBitmap returns group g's inode bitmap (all free for INODE_UNINIT groups).
func (f *FS) inodeBitmap(g uint32) (*bitmap, error) {
	if b, ok := f.ibm[g]; ok {
		return b, nil
	}
	b := &bitmap{data: make([]byte, f.bs)}
	if !(f.csumEnabled() && f.groupFlags(g)&bgInodeUninit != 0) {
		if err := f.readAt(b.data, int64(f.inodeBitmapLoc(g))*f.bs); err != nil {
			return nil, fmt.Errorf("reading inode bitmap of group %d: %w", g, err)
		}
	}
	for i := uint64(f.ipg); i < uint64(f.bs*8); i++ {
		b.set(i)
	}
	f.ibm[g] = b
	return b, nil
}

func (f *FS) flushBitmaps() error {
	for _, g := range slices.Sorted(maps.Keys(f.bbm)) {
		b := f.bbm[g]
		if !b.dirty {
			continue
		}
		if err := f.writeAt(b.data, int64(f.blockBitmapLoc(g))*f.bs); err != nil {
			return err
		}
		if f.metaCsum {
			f.setDescLoHi16(g, gdBlockBmpCsum, gdBlockBmpCsHi, crc32c(f.csumSeed, b.data[:f.bpg/8]))
		}
		b.dirty = false
	}
	for _, g := range slices.Sorted(maps.Keys(f.ibm)) {
		b := f.ibm[g]
		if !b.dirty {
			continue
		}
		if err := f.writeAt(b.data, int64(f.inodeBitmapLoc(g))*f.bs); err != nil {
			return err
		}
		if f.metaCsum {
			f.setDescLoHi16(g, gdInodeBmpCsum, gdInodeBmpCsHi, crc32c(f.csumSeed, b.data[:f.ipg/8]))
		}
		b.dirty = false
	}
	return nil
}

// markBlockBitmapInit clears BLOCK_UNINIT once a group's bitmap is changed.
func (f *FS) touchBlockGroup(g uint32, b *bitmap) {
	b.dirty = true
	if fl := f.groupFlags(g); fl&bgBlockUninit != 0 {
		f.setGroupFlags(g, fl&^bgBlockUninit)
	}
	f.gdtDirty[g] = true
}

// allocBlocks allocates n blocks near goal, as few runs as the free space allows: a first
// pass takes only free runs of at least min(n, 256) blocks (so a big file does not fill
// every small hole of a used filesystem), a second pass takes whatever is left, each
// first fit from goal onwards, wrapping. It fails with ErrNoSpace before changing anything.
func (f *FS) allocBlocks(goal, n uint64) ([]run, error) {
	if n == 0 {
		return nil, nil
	}
	if n > f.freeBlk {
		return nil, fmt.Errorf("allocating %d blocks (%d free): %w", n, f.freeBlk, ErrNoSpace)
	}
	if goal < f.firstData || goal >= f.blocks {
		goal = f.firstData
	}
	g0 := uint32((goal - f.firstData) / uint64(f.bpg))
	var runs []run
	left := n
	for _, minRun := range []uint64{min(n, 256), 1} {
		for i := uint32(0); i <= f.groups && left > 0; i++ {
			g := (g0 + i) % f.groups
			if f.groupFreeBlocks(g) == 0 {
				continue
			}
			b, err := f.blockBitmap(g)
			if err != nil {
				f.undoAlloc(runs)
				return nil, err
			}
			from := uint64(0)
			if i == 0 {
				from = goal - f.groupStart(g) // the goal group's head comes last, at i == groups
			}
			for _, r := range f.takeFromGroup(g, b, from, left, minRun) {
				left -= r.n
				runs = appendRun(runs, r)
			}
		}
	}
	if left > 0 {
		f.undoAlloc(runs)
		return nil, fmt.Errorf("allocating %d blocks: free counts disagree with bitmaps: %w", n, ErrCorrupt)
	}
	return runs, nil
}

func appendRun(runs []run, r run) []run {
	if k := len(runs); k > 0 && runs[k-1].start+runs[k-1].n == r.start {
		runs[k-1].n += r.n
		return runs
	}
	return append(runs, r)
}

// takeFromGroup marks up to want free blocks of group g used, scanning from bit from and
// skipping free runs shorter than minRun (unless they cover all that is wanted).
func (f *FS) takeFromGroup(g uint32, b *bitmap, from, want, minRun uint64) []run {
	var got []run
	end := f.groupLen(g)
	start := f.groupStart(g)
	i := from
	for i < end && want > 0 && f.groupFreeBlocks(g) > 0 {
		if i%8 == 0 && b.data[i/8] == 0xFF {
			i += 8
			continue
		}
		if b.get(i) {
			i++
			continue
		}
		j := i
		for j < end && !b.get(j) && j-i < want {
			j++
		}
		if j-i < minRun && j-i < want {
			i = j
			continue
		}
		for k := i; k < j; k++ {
			b.set(k)
		}
		got = append(got, run{start + i, j - i})
		f.addGroupFree(g, -int64(j-i))
		want -= j - i
		i = j
	}
	if len(got) > 0 {
		f.touchBlockGroup(g, b)
	}
	return got
}

func (f *FS) addGroupFree(g uint32, d int64) {
	f.setDescLoHi16(g, gdFreeBlocks, gdFreeBlocksHi, uint32(int64(f.groupFreeBlocks(g))+d))
	f.freeBlk = uint64(int64(f.freeBlk) + d)
	f.sbDirty = true
}

func (f *FS) undoAlloc(runs []run) {
	for _, r := range runs {
		_ = f.freeBlocks(r.start, r.n)
	}
}

// freeBlocks marks n blocks from start free.
func (f *FS) freeBlocks(start, n uint64) error {
	for n > 0 {
		if start < f.firstData || start >= f.blocks {
			return fmt.Errorf("freeing block %d: out of range: %w", start, ErrCorrupt)
		}
		g := uint32((start - f.firstData) / uint64(f.bpg))
		b, err := f.blockBitmap(g)
		if err != nil {
			return err
		}
		off := start - f.groupStart(g)
		k := min(n, f.groupLen(g)-off)
		var freed int64
		for i := off; i < off+k; i++ {
			if b.get(i) {
				b.clr(i)
				freed++
			}
			f.forget(f.groupStart(g) + i)
		}
		f.touchBlockGroup(g, b)
		f.addGroupFree(g, freed)
		start += k
		n -= k
	}
	return nil
}

// allocInode allocates the lowest free inode, preferring group pg.
func (f *FS) allocInode(pg uint32, dir bool) (uint32, error) {
	if f.freeIno == 0 {
		return 0, fmt.Errorf("allocating an inode: %w", ErrNoInodes)
	}
	for i := uint32(0); i < f.groups; i++ {
		g := (pg + i) % f.groups
		if f.groupFreeInodes(g) == 0 {
			continue
		}
		b, err := f.inodeBitmap(g)
		if err != nil {
			return 0, err
		}
		for j := uint64(0); j < uint64(f.ipg); j++ {
			ino := g*f.ipg + uint32(j) + 1
			if b.get(j) || ino < f.firstIno {
				continue
			}
			if err := f.claimInode(g, b, uint32(j), dir); err != nil {
				return 0, err
			}
			return ino, nil
		}
	}
	return 0, fmt.Errorf("allocating an inode: free counts disagree with bitmaps: %w", ErrCorrupt)
}

func (f *FS) claimInode(g uint32, b *bitmap, j uint32, dir bool) error {
	b.set(uint64(j))
	b.dirty = true
	fl := f.groupFlags(g)
	if fl&bgInodeUninit != 0 {
		fl &^= bgInodeUninit
	}
	f.setGroupFlags(g, fl)
	if f.csumEnabled() {
		unused := f.descLoHi16(g, gdItableUnused, gdItableUnusHi)
		if used := f.ipg - unused; j >= used {
			// inodes between the old high-water mark and j were never initialised
			if fl&bgItableZeroed == 0 {
				if err := f.zeroInodes(g, used, j); err != nil {
					return err
				}
			}
			f.setDescLoHi16(g, gdItableUnused, gdItableUnusHi, f.ipg-j-1)
		}
	}
	f.setDescLoHi16(g, gdFreeInodes, gdFreeInodesHi, f.groupFreeInodes(g)-1)
	if dir {
		f.setDescLoHi16(g, gdUsedDirs, gdUsedDirsHi, f.descLoHi16(g, gdUsedDirs, gdUsedDirsHi)+1)
	}
	f.freeIno--
	f.sbDirty = true
	return nil
}

// zeroInodes clears inode slots [from, to) of group g, through the block cache so a cached
// copy of the inode table never writes the old bytes back.
func (f *FS) zeroInodes(g, from, to uint32) error {
	for j := from; j < to; j++ {
		blk, off, err := f.inodeLoc(g*f.ipg + j + 1)
		if err != nil {
			return err
		}
		d, err := f.readBlock(blk)
		if err != nil {
			return err
		}
		clear(d[off : off+f.inodeSize])
		f.markDirty(blk, d)
	}
	return nil
}

func (f *FS) freeInode(ino uint32, dir bool) error {
	g, j := (ino-1)/f.ipg, (ino-1)%f.ipg
	b, err := f.inodeBitmap(g)
	if err != nil {
		return err
	}
	if !b.get(uint64(j)) {
		return fmt.Errorf("freeing inode %d: already free: %w", ino, ErrCorrupt)
	}
	b.clr(uint64(j))
	b.dirty = true
	f.setDescLoHi16(g, gdFreeInodes, gdFreeInodesHi, f.groupFreeInodes(g)+1)
	if dir {
		f.setDescLoHi16(g, gdUsedDirs, gdUsedDirsHi, f.descLoHi16(g, gdUsedDirs, gdUsedDirsHi)-1)
	}
	f.freeIno++
	f.sbDirty = true
	return nil
}

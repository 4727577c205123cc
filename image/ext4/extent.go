package ext4

import (
	"fmt"
	"sort"
)

const (
	extMagic    = 0xF30A
	maxInitLen  = 32768
	maxExtDepth = 5
)

// extent maps n logical blocks from lblk to physical blocks from pblk.
type extent struct {
	lblk   uint32
	pblk   uint64
	n      uint32
	uninit bool
}

// fileMap returns the data extents of an inode (sorted by logical block) and the blocks of
// its mapping metadata (extent tree nodes or indirect blocks).
func (f *FS) fileMap(in *inode) ([]extent, []uint64, error) {
	if in.flags()&flInline != 0 {
		return nil, nil, fmt.Errorf("inode %d uses inline data: %w", in.ino, ErrUnsupported)
	}
	if in.isLink() && f.isFastSymlink(in) {
		return nil, nil, nil
	}
	var exts []extent
	var meta []uint64
	var err error
	if in.flags()&flExtents != 0 {
		budget := f.blocks // no file maps more blocks than the filesystem has
		err = f.walkExtents(in, in.b[iBlock:iBlock+60], -1, &exts, &meta, &budget)
	} else {
		exts, meta, err = f.indirectMap(in)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading block map of inode %d: %w", in.ino, err)
	}
	sort.Slice(exts, func(i, j int) bool { return exts[i].lblk < exts[j].lblk })
	return exts, meta, nil
}

func (f *FS) walkExtents(in *inode, node []byte, wantDepth int, exts *[]extent, meta *[]uint64, budget *uint64) error {
	if le16(node, 0) != extMagic {
		return fmt.Errorf("bad extent header magic: %w", ErrCorrupt)
	}
	n, max, depth := int(le16(node, 2)), int(le16(node, 4)), int(le16(node, 6))
	if n > max || 12+12*max > len(node) || depth > maxExtDepth || (wantDepth >= 0 && depth != wantDepth) {
		return fmt.Errorf("bad extent header: %w", ErrCorrupt)
	}
	for i := 0; i < n; i++ {
		e := node[12+12*i:]
		if depth == 0 {
			l := uint32(le16(e, 4))
			x := extent{lblk: le32(e, 0), pblk: uint64(le16(e, 6))<<32 | uint64(le32(e, 8)), n: l}
			if l > maxInitLen {
				x.n, x.uninit = l-maxInitLen, true
			}
			if x.pblk+uint64(x.n) > f.blocks || x.pblk < f.firstData || uint64(x.n) > *budget {
				return fmt.Errorf("extent %d+%d out of range: %w", x.pblk, x.n, ErrCorrupt)
			}
			*budget -= uint64(x.n)
			*exts = append(*exts, x)
			continue
		}
		child := uint64(le16(e, 8))<<32 | uint64(le32(e, 4))
		if child >= f.blocks || child < f.firstData {
			return fmt.Errorf("extent index block %d out of range: %w", child, ErrCorrupt)
		}
		if *budget == 0 {
			return fmt.Errorf("extent tree larger than the filesystem: %w", ErrCorrupt)
		}
		*budget--
		*meta = append(*meta, child)
		b, err := f.readBlock(child)
		if err != nil {
			return err
		}
		if f.metaCsum {
			tail := 12 + 12*int(le16(b, 4))
			if tail+4 <= len(b) && crc32c(in.seed(f), b[:tail]) != le32(b, tail) {
				return fmt.Errorf("extent block %d: checksum mismatch: %w", child, ErrCorrupt)
			}
		}
		if err := f.walkExtents(in, b, depth-1, exts, meta, budget); err != nil {
			return err
		}
	}
	return nil
}

// indirectMap reads an ext2/3 style block map.
func (f *FS) indirectMap(in *inode) ([]extent, []uint64, error) {
	if in.size() < 0 {
		return nil, nil, fmt.Errorf("negative size: %w", ErrCorrupt)
	}
	nblk := uint64((in.size() + f.bs - 1) / f.bs)
	var exts []extent
	var meta []uint64
	apb := uint64(f.bs / 4)
	budget := f.blocks // no file maps more blocks than the filesystem has
	add := func(l uint64, p uint32) {
		if p == 0 {
			return
		}
		if budget == 0 {
			return
		}
		budget--
		if k := len(exts); k > 0 && uint64(exts[k-1].lblk)+uint64(exts[k-1].n) == l &&
			exts[k-1].pblk+uint64(exts[k-1].n) == uint64(p) && exts[k-1].n < maxInitLen {
			exts[k-1].n++
			return
		}
		exts = append(exts, extent{lblk: uint32(l), pblk: uint64(p), n: 1})
	}
	var walk func(blk uint32, level int, base uint64) error
	walk = func(blk uint32, level int, base uint64) error {
		if blk == 0 || base >= nblk {
			return nil
		}
		if uint64(blk) >= f.blocks {
			return fmt.Errorf("indirect block %d out of range: %w", blk, ErrCorrupt)
		}
		if budget == 0 {
			return fmt.Errorf("indirect map larger than the filesystem: %w", ErrCorrupt)
		}
		budget--
		meta = append(meta, uint64(blk))
		b, err := f.readBlock(uint64(blk))
		if err != nil {
			return err
		}
		span := uint64(1)
		for i := 0; i < level; i++ {
			span *= apb
		}
		for i := uint64(0); i < apb; i++ {
			p := le32(b, int(4*i))
			l := base + i*span
			if l >= nblk {
				break
			}
			if level == 0 {
				add(l, p)
			} else if err := walk(p, level-1, l); err != nil {
				return err
			}
		}
		return nil
	}
	for i := uint64(0); i < 12 && i < nblk; i++ {
		add(i, le32(in.b, iBlock+4*int(i)))
	}
	base := uint64(12)
	span := apb
	for lvl := 0; lvl < 3; lvl++ {
		if err := walk(le32(in.b, iBlock+4*(12+lvl)), lvl, base); err != nil {
			return nil, nil, err
		}
		base += span
		span *= apb
	}
	return exts, meta, nil
}

// extCap is the number of entries in one extent tree block.
func (f *FS) extCap() int { return int((f.bs - 12) / 12) }

// treeNodes is the number of tree blocks needed for n extents.
func (f *FS) treeNodes(n int) int {
	total := 0
	for n > 4 {
		n = (n + f.extCap() - 1) / f.extCap()
		total += n
	}
	return total
}

// setExtents writes exts as the inode's extent tree, reusing the old tree blocks first and
// allocating others near goal; i_blocks is adjusted for the change in tree blocks.
func (f *FS) setExtents(in *inode, exts []extent, old []uint64, goal uint64) error {
	need := f.treeNodes(len(exts))
	var nodes []uint64
	nodes = append(nodes, old[:min(need, len(old))]...)
	if need > len(nodes) {
		runs, err := f.allocBlocks(goal, uint64(need-len(nodes)))
		if err != nil {
			return err
		}
		for _, r := range runs {
			for i := uint64(0); i < r.n; i++ {
				nodes = append(nodes, r.start+i)
			}
		}
	}
	if len(old) > need {
		for _, b := range old[need:] {
			if err := f.freeBlocks(b, 1); err != nil {
				return err
			}
		}
	}
	in.addBlocks(f, int64(need)-int64(len(old)))
	// level 0 entries: the extents themselves
	type entry struct {
		lblk uint32
		ptr  uint64
		n    uint32
		un   bool
	}
	level := make([]entry, len(exts))
	for i, e := range exts {
		level[i] = entry{e.lblk, e.pblk, e.n, e.uninit}
	}
	depth := 0
	next := 0
	capN := f.extCap()
	for len(level) > 4 {
		var up []entry
		for i := 0; i < len(level); i += capN {
			part := level[i:min(i+capN, len(level))]
			blk := nodes[next]
			next++
			b := make([]byte, f.bs)
			put16(b, 0, extMagic)
			put16(b, 2, uint16(len(part)))
			put16(b, 4, uint16(capN))
			put16(b, 6, uint16(depth))
			for k, e := range part {
				f.putExtEntry(b[12+12*k:], depth, e.lblk, e.ptr, e.n, e.un)
			}
			if f.metaCsum {
				put32(b, 12+12*capN, crc32c(in.seed(f), b[:12+12*capN]))
			}
			f.markDirty(blk, b)
			up = append(up, entry{lblk: part[0].lblk, ptr: blk})
		}
		level = up
		depth++
	}
	root := in.b[iBlock : iBlock+60]
	clear(root)
	put16(root, 0, extMagic)
	put16(root, 2, uint16(len(level)))
	put16(root, 4, 4)
	put16(root, 6, uint16(depth))
	for k, e := range level {
		f.putExtEntry(root[12+12*k:], depth, e.lblk, e.ptr, e.n, e.un)
	}
	put32(in.b, iFlags, in.flags()|flExtents)
	return nil
}

func (f *FS) putExtEntry(b []byte, depth int, lblk uint32, ptr uint64, n uint32, uninit bool) {
	put32(b, 0, lblk)
	if depth == 0 {
		l := uint16(n)
		if uninit {
			l = uint16(n + maxInitLen)
		}
		put16(b, 4, l)
		put16(b, 6, uint16(ptr>>32))
		put32(b, 8, uint32(ptr))
		return
	}
	put32(b, 4, uint32(ptr))
	put16(b, 8, uint16(ptr>>32))
	put16(b, 10, 0)
}

// runsToExtents turns allocated runs into extents for logical blocks from lblk on.
func runsToExtents(runs []run, lblk uint32) []extent {
	var exts []extent
	for _, r := range runs {
		p, n := r.start, r.n
		for n > 0 {
			k := min(n, maxInitLen)
			exts = append(exts, extent{lblk: lblk, pblk: p, n: uint32(k)})
			lblk += uint32(k)
			p += k
			n -= k
		}
	}
	return exts
}

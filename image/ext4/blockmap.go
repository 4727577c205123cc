package ext4

import "fmt"

// Writing ext2/ext3 style block maps (12 direct pointers, then single, double and triple
// indirect blocks), for filesystems and inodes without extents.

const nDirect = 12

// indirectBlocks is the number of mapping blocks an n-block file needs.
func (f *FS) indirectBlocks(n uint64) uint64 {
	apb := uint64(f.bs / 4)
	if n <= nDirect {
		return 0
	}
	rest := n - nDirect
	total := uint64(1) // single indirect
	if rest <= apb {
		return total
	}
	rest -= apb
	d := min(rest, apb*apb)
	total += 1 + (d+apb-1)/apb
	if rest <= apb*apb {
		return total
	}
	rest -= apb * apb
	return total + 1 + (rest+apb*apb-1)/(apb*apb) + (rest+apb-1)/apb
}

// mapBlocks is the number of mapping blocks (extent tree or indirect) for exts in inode in.
func (f *FS) mapBlocks(in *inode, exts []extent) uint64 {
	if in.flags()&flExtents != 0 {
		return uint64(f.treeNodes(len(exts)))
	}
	n := uint64(0)
	if k := len(exts); k > 0 {
		n = uint64(exts[k-1].lblk) + uint64(exts[k-1].n)
	}
	return f.indirectBlocks(n)
}

// setMap stores exts as the inode's block map in its own format (extent tree when the
// inode has EXTENTS_FL, indirect blocks otherwise), replacing the old mapping blocks.
func (f *FS) setMap(in *inode, exts []extent, old []uint64, goal uint64) error {
	if in.flags()&flExtents != 0 {
		return f.setExtents(in, exts, old, goal)
	}
	var blocks []uint64
	for _, e := range exts {
		if uint64(e.lblk) != uint64(len(blocks)) || e.uninit {
			return fmt.Errorf("inode %d: block maps cannot hold holes or unwritten extents: %w", in.ino, ErrUnsupported)
		}
		for i := uint64(0); i < uint64(e.n); i++ {
			blocks = append(blocks, e.pblk+i)
		}
	}
	need := f.indirectBlocks(uint64(len(blocks)))
	if uint64(len(old)) > need+f.freeBlk {
		return ErrNoSpace
	}
	for _, b := range old {
		if err := f.freeBlocks(b, 1); err != nil {
			return err
		}
	}
	in.addBlocks(f, -int64(len(old)))
	var meta []uint64
	if need > 0 {
		runs, err := f.allocBlocks(goal, need)
		if err != nil {
			return err
		}
		for _, r := range runs {
			for i := uint64(0); i < r.n; i++ {
				meta = append(meta, r.start+i)
			}
		}
	}
	in.addBlocks(f, int64(need))
	clear(in.b[iBlock : iBlock+60])
	for l := 0; l < nDirect && l < len(blocks); l++ {
		put32(in.b, iBlock+4*l, uint32(blocks[l]))
	}
	rest := blocks[min(nDirect, len(blocks)):]
	for level := 0; level < 3 && len(rest) > 0; level++ {
		var blk uint64
		blk, rest = f.fillIndirect(level, rest, &meta)
		put32(in.b, iBlock+4*(nDirect+level), uint32(blk))
	}
	return nil
}

// fillIndirect writes one indirect block of the given level (0 single, 1 double, 2 triple)
// mapping the first blocks of rest, and returns it and what is left.
func (f *FS) fillIndirect(level int, rest []uint64, meta *[]uint64) (uint64, []uint64) {
	apb := int(f.bs / 4)
	blk := (*meta)[0]
	*meta = (*meta)[1:]
	b := make([]byte, f.bs)
	for i := 0; i < apb && len(rest) > 0; i++ {
		if level == 0 {
			put32(b, 4*i, uint32(rest[0]))
			rest = rest[1:]
			continue
		}
		var child uint64
		child, rest = f.fillIndirect(level-1, rest, meta)
		put32(b, 4*i, uint32(child))
	}
	f.markDirty(blk, b)
	return blk, rest
}

package ext4

import (
	"fmt"
)

// recLen is the minimal record length of an entry with an n-byte name.
func recLen(n int) int { return (8 + n + 3) &^ 3 }

// dirTail is the size of the checksum tail at the end of each leaf block.
func (f *FS) dirTail() int {
	if f.metaCsum {
		return 12
	}
	return 0
}

func hasLeafTail(b []byte) bool {
	n := len(b)
	return le32(b, n-12) == 0 && le16(b, n-8) == 12 && b[n-6] == 0 && b[n-5] == 0xDE
}

// sealLeaf sets a leaf block's checksum tail.
func (f *FS) sealLeaf(dir *inode, b []byte) {
	if !f.metaCsum {
		return
	}
	n := len(b)
	put32(b, n-12, 0)
	put16(b, n-8, 12)
	b[n-6], b[n-5] = 0, 0xDE
	put32(b, n-4, crc32c(dir.seed(f), b[:n-12]))
}

func (f *FS) putDirent(b []byte, off, rl int, ino uint32, name string, ft uint8) {
	put32(b, off, ino)
	put16(b, off+4, uint16(rl))
	b[off+6] = byte(len(name))
	if f.hasFiletype() {
		b[off+7] = ft
	} else {
		b[off+7] = 0
	}
	copy(b[off+8:off+rl], name)
	clear(b[off+8+len(name) : off+rl])
}

// insertInBlock puts an entry into leaf block b if there is room.
func (f *FS) insertInBlock(b []byte, name string, ino uint32, ft uint8) (bool, error) {
	ents, err := f.parseBlock(b)
	if err != nil {
		return false, err
	}
	need := recLen(len(name))
	limit := len(b) - f.dirTail()
	for _, e := range ents {
		if e.off >= limit {
			break
		}
		if e.ino == 0 && e.recLen >= need {
			f.putDirent(b, e.off, e.recLen, ino, name, ft)
			return true, nil
		}
		used := recLen(len(e.name))
		if e.ino != 0 && e.recLen-used >= need {
			put16(b, e.off+4, uint16(used))
			f.putDirent(b, e.off+used, e.recLen-used, ino, name, ft)
			return true, nil
		}
	}
	return false, nil
}

// appendDirBlock grows a directory by one block and returns its logical and physical number.
func (f *FS) appendDirBlock(dir *inode) (uint32, uint64, error) {
	exts, meta, err := f.fileMap(dir)
	if err != nil {
		return 0, 0, err
	}
	lblk := uint32(dir.size() / f.bs)
	goal := f.inodeGoal(dir.ino)
	if k := len(exts); k > 0 {
		goal = exts[k-1].pblk + uint64(exts[k-1].n)
	}
	// up front: one data block plus possibly new mapping blocks
	if f.freeBlk < 2+f.mapBlocks(dir, append(exts, extent{lblk: lblk, n: 1})) {
		return 0, 0, fmt.Errorf("growing directory inode %d: %w", dir.ino, ErrNoSpace)
	}
	runs, err := f.allocBlocks(goal, 1)
	if err != nil {
		return 0, 0, err
	}
	p := runs[0].start
	if k := len(exts); k > 0 && exts[k-1].pblk+uint64(exts[k-1].n) == p &&
		exts[k-1].lblk+exts[k-1].n == lblk && exts[k-1].n < maxInitLen && !exts[k-1].uninit {
		exts[k-1].n++
	} else {
		exts = append(exts, extent{lblk: lblk, pblk: p, n: 1})
	}
	if err := f.setMap(dir, exts, meta, p); err != nil {
		return 0, 0, err
	}
	dir.addBlocks(f, 1)
	dir.setSize(dir.size() + f.bs)
	return lblk, p, nil
}

// emptyLeaf returns a fresh leaf block holding only an unused entry (and tail).
func (f *FS) emptyLeaf(dir *inode) []byte {
	b := make([]byte, f.bs)
	put16(b, 4, uint16(int(f.bs)-f.dirTail()))
	f.sealLeaf(dir, b)
	return b
}

// addEntry links name to ino in dir and writes the directory inode.
func (f *FS) addEntry(dir *inode, name string, ino uint32, ft uint8) error {
	var err error
	if dir.flags()&flIndex != 0 && f.hasCompat(compatDirIndex) {
		err = f.dxInsert(dir, name, ino, ft)
	} else {
		// without dir_index the kernel drops a stale index flag the same way
		put32(dir.b, iFlags, dir.flags()&^flIndex)
		err = f.linearInsert(dir, name, ino, ft)
	}
	if err != nil {
		return fmt.Errorf("adding %q to directory inode %d: %w", name, dir.ino, err)
	}
	return f.putInode(dir)
}

func (f *FS) linearInsert(dir *inode, name string, ino uint32, ft uint8) error {
	blocks, err := f.dirMap(dir)
	if err != nil {
		return err
	}
	for _, p := range blocks {
		b, err := f.readBlock(p)
		if err != nil {
			return err
		}
		ok, err := f.insertInBlock(b, name, ino, ft)
		if err != nil {
			return err
		}
		if ok {
			f.sealLeaf(dir, b)
			f.markDirty(p, b)
			return nil
		}
	}
	_, p, err := f.appendDirBlock(dir)
	if err != nil {
		return err
	}
	b := f.emptyLeaf(dir)
	if _, err := f.insertInBlock(b, name, ino, ft); err != nil {
		return err
	}
	f.sealLeaf(dir, b)
	f.markDirty(p, b)
	return nil
}

// removeEntry unlinks name from dir (htree indexes stay valid: only the leaf changes).
func (f *FS) removeEntry(dir *inode, name string) error {
	blocks, err := f.dirMap(dir)
	if err != nil {
		return err
	}
	for _, p := range blocks {
		b, err := f.readBlock(p)
		if err != nil {
			return err
		}
		ents, err := f.parseBlock(b)
		if err != nil {
			return err
		}
		for i, e := range ents {
			if e.ino == 0 || string(e.name) != name {
				continue
			}
			if i == 0 {
				put32(b, e.off, 0)
			} else {
				prev := ents[i-1]
				put16(b, prev.off+4, uint16(prev.recLen+e.recLen))
				clear(b[e.off : e.off+8])
			}
			if f.metaCsum && hasLeafTail(b) {
				f.sealLeaf(dir, b)
			}
			f.markDirty(p, b)
			return nil
		}
	}
	return fmt.Errorf("removing %q from directory inode %d: entry not found: %w", name, dir.ino, ErrCorrupt)
}

// newDirBlock returns the first block of a new directory.
func (f *FS) newDirBlock(dir *inode, parent uint32) []byte {
	b := make([]byte, f.bs)
	f.putDirent(b, 0, 12, dir.ino, ".", ftDir)
	f.putDirent(b, 12, int(f.bs)-12-f.dirTail(), parent, "..", ftDir)
	f.sealLeaf(dir, b)
	return b
}

// dirIsEmpty reports whether a directory has only "." and "..".
func (f *FS) dirIsEmpty(dir *inode) (bool, error) {
	empty := true
	err := f.scanDir(dir, func(_ int, _ uint64, d dirent) bool {
		if n := string(d.name); n != "." && n != ".." {
			empty = false
			return false
		}
		return true
	})
	return empty, err
}

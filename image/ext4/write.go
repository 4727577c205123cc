package ext4

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// dirSlack is how many blocks adding one directory entry may need at most: a new leaf,
// a new index block and extent tree blocks for the directory.
const dirSlack = 4

const chunkSize = 4 << 20

// WriteFile creates or replaces a regular file with data.
func (f *FS) WriteFile(name string, data []byte, a Attr) error {
	return f.CreateFile(name, bytes.NewReader(data), int64(len(data)), a)
}

// CreateFile streams size bytes from r into name, creating it or replacing its content
// like O_TRUNC (the old blocks are freed, the inode and its xattrs stay). An existing
// symlink or special file at name is replaced by a regular file.
func (f *FS) CreateFile(name string, r io.Reader, size int64, a Attr) error {
	if err := f.writable(); err != nil {
		return err
	}
	if err := f.createFile(name, r, size, a); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

func (f *FS) createFile(name string, r io.Reader, size int64, a Attr) error {
	if size < 0 {
		return fmt.Errorf("negative size %d: %w", size, fs.ErrInvalid)
	}
	dir, base, err := f.resolveParent(name)
	if err != nil {
		return err
	}
	ino, exists, err := f.lookup(dir, base)
	if err != nil {
		return err
	}
	var old, other *inode
	if exists {
		if old, err = f.getInode(ino); err != nil {
			return err
		}
		if old.isDir() {
			return ErrIsDir
		}
		if !old.isReg() { // a symlink or special file: replaced by a new regular file
			other, old, exists = old, nil, false
		}
	}
	if !exists && f.freeIno == 0 && (other == nil || other.links() > 1) {
		return ErrNoInodes
	}
	nblk := uint64((size + f.bs - 1) / f.bs)
	slack := uint64(dirSlack)
	if exists {
		slack = 0
	}
	oldBlocks := uint64(0)
	if old != nil {
		oldBlocks = old.blocks512(f) / uint64(f.bs/512)
	}
	if nblk+slack+1 > f.freeBlk+oldBlocks {
		return fmt.Errorf("%d bytes need %d blocks, %d free: %w", size, nblk, f.freeBlk, ErrNoSpace)
	}
	if other != nil {
		if err := f.unlink(dir, base, other); err != nil {
			return err
		}
	}
	mapEst := uint64(f.treeNodes(int(nblk/maxInitLen) + 8)) // extents: a few per 128 MiB
	if !f.hasIncompat(incompatExtents) {
		mapEst = f.indirectBlocks(nblk)
	}
	if old != nil && nblk+mapEst+1 > f.freeBlk {
		// not enough room for old and new at once: truncate first (like O_TRUNC)
		if err := f.truncate(old); err != nil {
			return err
		}
	}
	goal := f.inodeGoal(dir.ino)
	if old != nil {
		goal = f.inodeGoal(old.ino)
	}
	runs, err := f.allocBlocks(goal, nblk)
	if err != nil {
		return err
	}
	exts := runsToExtents(runs, 0)
	probe := &inode{b: make([]byte, f.inodeSize)}
	if f.hasIncompat(incompatExtents) {
		put32(probe.b, iFlags, flExtents)
	}
	if f.mapBlocks(probe, exts)+slack > f.freeBlk {
		f.undoAlloc(runs)
		return fmt.Errorf("no room for the extent tree: %w", ErrNoSpace)
	}
	if err := f.streamData(r, size, exts); err != nil {
		f.undoAlloc(runs)
		return err
	}
	in := old
	if in == nil {
		if ino, err = f.allocInode((dir.ino-1)/f.ipg, false); err != nil {
			f.undoAlloc(runs)
			return err
		}
		in = f.newInode(ino, sIFREG|a.Mode&07777, a)
		put16(in.b, iLinks, 1)
	} else {
		if err := f.truncate(in); err != nil {
			return err
		}
		f.setAttr(in, sIFREG|a.Mode&07777, a)
	}
	treeGoal := goal
	if len(runs) > 0 {
		treeGoal = runs[len(runs)-1].start + runs[len(runs)-1].n
	}
	if err := f.setMap(in, exts, nil, treeGoal); err != nil {
		return err
	}
	in.addBlocks(f, int64(nblk))
	in.setSize(size)
	if size >= 1<<31 && !f.hasRoCompat(roLargeFile) {
		put32(f.sb, sbFeatureRoCompat, le32(f.sb, sbFeatureRoCompat)|roLargeFile)
		f.sbDirty = true
	}
	if err := f.putInode(in); err != nil {
		return err
	}
	if exists {
		return nil
	}
	f.touchDir(dir)
	return f.linkNew(dir, base, in, ftReg)
}

// linkNew adds the entry for a freshly created inode; if that fails (a full directory
// index, say) the inode is released again so nothing is left half-made.
func (f *FS) linkNew(dir *inode, base string, in *inode, ft uint8) error {
	err := f.addEntry(dir, base, in.ino, ft)
	if err == nil {
		return nil
	}
	if in.isDir() {
		if l := dir.links(); l > 2 {
			put16(dir.b, iLinks, l-1)
		}
		if perr := f.putInode(dir); perr != nil {
			return errors.Join(err, perr)
		}
	}
	if rerr := f.release(in, in.isDir()); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// setAttr applies mode, owner and times to an existing inode being replaced.
func (f *FS) setAttr(in *inode, mode uint16, a Attr) {
	put16(in.b, iMode, mode)
	in.setOwner(a.UID, a.GID)
	f.stamp(in, a.Mtime)
}

// stamp sets in's access and change times to now and its modification time
// to mtime, or to now when mtime is zero; it returns now.
func (f *FS) stamp(in *inode, mtime time.Time) time.Time {
	now := f.now()
	if mtime.IsZero() {
		mtime = now
	}
	in.setTime(iAtime, iAtimeExtra, now)
	in.setTime(iCtime, iCtimeExtra, now)
	in.setTime(iMtime, iMtimeExtra, mtime)
	return now
}

func (f *FS) touchDir(dir *inode) {
	now := f.now()
	dir.setTime(iMtime, iMtimeExtra, now)
	dir.setTime(iCtime, iCtimeExtra, now)
}

// truncate frees all data and mapping blocks of an inode and leaves it empty (on disk too).
func (f *FS) truncate(in *inode) error {
	if in.isLink() && f.isFastSymlink(in) {
		clear(in.b[iBlock : iBlock+60])
		in.setSize(0)
		return nil
	}
	exts, meta, err := f.fileMap(in)
	if err != nil {
		return err
	}
	for _, e := range exts {
		if err := f.freeBlocks(e.pblk, uint64(e.n)); err != nil {
			return err
		}
		in.addBlocks(f, -int64(e.n))
	}
	for _, b := range meta {
		if err := f.freeBlocks(b, 1); err != nil {
			return err
		}
		in.addBlocks(f, -1)
	}
	clear(in.b[iBlock : iBlock+60])
	in.setSize(0)
	if f.hasIncompat(incompatExtents) {
		put16(in.b, iBlock, extMagic)
		put16(in.b, iBlock+4, 4)
		put32(in.b, iFlags, in.flags()|flExtents)
	}
	return f.putInode(in)
}

// streamData copies size bytes from r into the extents, in large sequential writes.
func (f *FS) streamData(r io.Reader, size int64, exts []extent) error {
	buf := make([]byte, min(int64(chunkSize), (size+f.bs-1)/f.bs*f.bs))
	left := size
	for _, e := range exts {
		pos := int64(e.pblk) * f.bs
		end := pos + int64(e.n)*f.bs
		for pos < end {
			n := min(int64(len(buf)), end-pos)
			data := min(n, left)
			if _, err := io.ReadFull(r, buf[:data]); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("reading content (%d of %d bytes left): %w", left, size, err)
			}
			clear(buf[data:n])
			if err := f.writeAt(buf[:n], pos); err != nil {
				return err
			}
			left -= data
			pos += n
		}
	}
	return nil
}

// MkdirAll creates a directory and any missing parents; existing ones are left alone.
func (f *FS) MkdirAll(name string, a Attr) error {
	if err := f.writable(); err != nil {
		return err
	}
	comps, err := splitPath(name)
	if err != nil {
		return err
	}
	cur := "/"
	for _, c := range comps {
		p := cur + c
		in, _, err := f.resolve(p, true)
		switch {
		case err == nil && in.isDir():
		case err == nil:
			return fmt.Errorf("creating directory %s: %s: %w", name, p, ErrNotDir)
		case errors.Is(err, fs.ErrNotExist):
			if err := f.mkdir(p, a); err != nil {
				return fmt.Errorf("creating directory %s: %w", p, err)
			}
		default:
			return fmt.Errorf("creating directory %s: %w", name, err)
		}
		cur = p + "/"
	}
	return nil
}

func (f *FS) mkdir(name string, a Attr) error {
	dir, base, err := f.resolveParent(name)
	if err != nil {
		return err
	}
	if _, ok, err := f.lookup(dir, base); err != nil || ok {
		if ok {
			return fs.ErrExist // a dangling symlink
		}
		return err
	}
	if f.freeIno == 0 {
		return ErrNoInodes
	}
	if f.freeBlk < 1+dirSlack {
		return ErrNoSpace
	}
	ino, err := f.allocInode((dir.ino-1)/f.ipg, true)
	if err != nil {
		return err
	}
	runs, err := f.allocBlocks(f.inodeGoal(ino), 1)
	if err != nil {
		return err
	}
	in := f.newInode(ino, sIFDIR|a.Mode&07777, a)
	put16(in.b, iLinks, 2)
	if err := f.setMap(in, runsToExtents(runs, 0), nil, runs[0].start); err != nil {
		return err
	}
	in.addBlocks(f, 1)
	in.setSize(f.bs)
	f.markDirty(runs[0].start, f.newDirBlock(in, dir.ino))
	if err := f.putInode(in); err != nil {
		return err
	}
	if l := dir.links(); l >= 65000-1 || l == 1 {
		put16(dir.b, iLinks, 1) // dir_nlink: too many to count
		put32(f.sb, sbFeatureRoCompat, le32(f.sb, sbFeatureRoCompat)|roDirNlink)
		f.sbDirty = true
	} else {
		put16(dir.b, iLinks, l+1)
	}
	f.touchDir(dir)
	return f.linkNew(dir, base, in, ftDir)
}

package ext4

import (
	"fmt"
	"io/fs"
)

// Symlink creates name as a symbolic link to target: fast (in the inode) below 60 bytes,
// otherwise in one data block.
func (f *FS) Symlink(target, name string, a Attr) error {
	if err := f.writable(); err != nil {
		return err
	}
	if err := f.symlink(target, name, a); err != nil {
		return fmt.Errorf("creating symlink %s: %w", name, err)
	}
	return nil
}

func (f *FS) symlink(target, name string, a Attr) error {
	if len(target) == 0 || int64(len(target)) >= f.bs {
		return fmt.Errorf("target length %d not in 1..%d: %w", len(target), f.bs-1, fs.ErrInvalid)
	}
	dir, base, err := f.resolveParent(name)
	if err != nil {
		return err
	}
	if _, ok, err := f.lookup(dir, base); err != nil || ok {
		if ok {
			return fs.ErrExist
		}
		return err
	}
	if f.freeIno == 0 {
		return ErrNoInodes
	}
	if f.freeBlk < 1+dirSlack {
		return ErrNoSpace
	}
	ino, err := f.allocInode((dir.ino-1)/f.ipg, false)
	if err != nil {
		return err
	}
	in := f.newInode(ino, sIFLNK|0777, a)
	put16(in.b, iLinks, 1)
	in.setSize(int64(len(target)))
	if len(target) < 60 {
		put32(in.b, iFlags, in.flags()&^flExtents) // fast symlinks keep the target in i_block
		copy(in.b[iBlock:], target)
	} else {
		runs, err := f.allocBlocks(f.inodeGoal(ino), 1)
		if err != nil {
			return err
		}
		b := make([]byte, f.bs)
		copy(b, target)
		if err := f.writeAt(b, int64(runs[0].start)*f.bs); err != nil {
			return err
		}
		f.forget(runs[0].start)
		if err := f.setMap(in, runsToExtents(runs, 0), nil, runs[0].start); err != nil {
			return err
		}
		in.addBlocks(f, 1)
	}
	if err := f.putInode(in); err != nil {
		return err
	}
	f.touchDir(dir)
	return f.linkNew(dir, base, in, ftSymlink)
}

// Remove deletes a file, symlink or empty directory, freeing its blocks and inode once the
// last link is gone.
func (f *FS) Remove(name string) error {
	if err := f.writable(); err != nil {
		return err
	}
	dir, base, err := f.resolveParent(name)
	if err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	ino, ok, err := f.lookup(dir, base)
	if err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	if !ok {
		return fmt.Errorf("removing %s: %w", name, fs.ErrNotExist)
	}
	in, err := f.getInode(ino)
	if err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	if err := f.unlink(dir, base, in); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	return nil
}

// unlink removes the entry base (for inode in) from dir and releases the inode if unused.
func (f *FS) unlink(dir *inode, base string, in *inode) error {
	isDir := in.isDir()
	if isDir {
		empty, err := f.dirIsEmpty(in)
		if err != nil {
			return err
		}
		if !empty {
			return ErrNotEmpty
		}
	}
	if err := f.removeEntry(dir, base); err != nil {
		return err
	}
	if isDir {
		if l := dir.links(); l > 2 {
			put16(dir.b, iLinks, l-1)
		}
	}
	f.touchDir(dir)
	if err := f.putInode(dir); err != nil {
		return err
	}
	links := in.links()
	if isDir || links <= 1 {
		return f.release(in, isDir)
	}
	put16(in.b, iLinks, links-1)
	in.setTime(iCtime, iCtimeExtra, f.now())
	return f.putInode(in)
}

// release frees an inode's blocks, xattr block and the inode itself.
func (f *FS) release(in *inode, isDir bool) error {
	if err := f.truncate(in); err != nil {
		return err
	}
	if err := f.dropXattrBlock(in); err != nil {
		return err
	}
	put16(in.b, iLinks, 0)
	put32(in.b, iBlocksLo, 0)
	put16(in.b, iBlocksHi, 0)
	in.setTime(iDtime, 0, f.now())
	if err := f.putInode(in); err != nil {
		return err
	}
	return f.freeInode(in.ino, isDir)
}

// Chmod sets the permission bits (07777) of name, following a final symlink; every other
// inode field and xattr is kept.
func (f *FS) Chmod(name string, mode uint16) error {
	return f.change(name, "chmod", func(in *inode) error {
		put16(in.b, iMode, in.mode()&sIFMT|mode&07777)
		return nil
	})
}

// Chown sets owner and group of name, following a final symlink.
func (f *FS) Chown(name string, uid, gid uint32) error {
	return f.change(name, "chown", func(in *inode) error {
		in.setOwner(uid, gid)
		return nil
	})
}

// SetXattr sets one extended attribute (full name, e.g. "security.capability") of name,
// following a final symlink like setxattr(2) (ListXattrs and Getxattr, like llistxattr,
// do not follow it).
func (f *FS) SetXattr(name, attr string, value []byte) error {
	idx, suffix, err := splitXattrName(attr)
	if err != nil {
		return fmt.Errorf("setting xattr of %s: %w", name, err)
	}
	return f.change(name, "setting xattr "+attr+" of", func(in *inode) error {
		ibody, block, err := f.readXattrs(in)
		if err != nil {
			return err
		}
		all := append(ibody, block...)
		found := false
		for i := range all {
			if all[i].index == idx && all[i].name == suffix {
				all[i].value, found = append([]byte(nil), value...), true
			}
		}
		if !found {
			all = append(all, xattr{index: idx, name: suffix, value: append([]byte(nil), value...)})
		}
		if in.fileACL() == 0 && f.freeBlk < 1 {
			return ErrNoSpace
		}
		return f.writeXattrs(in, all)
	})
}

func (f *FS) change(name, what string, fn func(*inode) error) error {
	if err := f.writable(); err != nil {
		return err
	}
	in, _, err := f.resolve(name, true)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, name, err)
	}
	if err := fn(in); err != nil {
		return fmt.Errorf("%s %s: %w", what, name, err)
	}
	in.setTime(iCtime, iCtimeExtra, f.now())
	return f.putInode(in)
}

package ext4

import (
	"context"
	"errors"
	"fmt"
)

// CheckAllocation cross-checks the block bitmaps against what the inodes
// in use reference (data, extent tree and indirect blocks, xattr blocks),
// and returns an error wrapping ErrCorrupt for the first block that is in
// use but marked free: a later allocation would give it to a second file.
// Checksums cannot show this damage (a bitmap rewritten with a valid
// checksum); e2fsck -f pass 5 does. It reads every inode table in use once.
func (f *FS) CheckAllocation(ctx context.Context) error {
	used := func(blk uint64) (bool, error) {
		if blk < f.firstData || blk >= f.blocks {
			return false, nil
		}
		g := uint32((blk - f.firstData) / uint64(f.bpg))
		b, err := f.blockBitmap(g)
		if err != nil {
			return false, err
		}
		return b.get(blk - f.groupStart(g)), nil
	}
	freeErr := func(blk uint64, ino uint32) error {
		return bitmapError{fmt.Sprintf("block %d, used by inode %d, is marked free in the block bitmap", blk, ino)}
	}
	table := make([]byte, uint64(f.ipg)*uint64(f.inodeSize))
	for g := uint32(0); g < f.groups; g++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if f.csumEnabled() && f.groupFlags(g)&bgInodeUninit != 0 {
			continue
		}
		ib, err := f.inodeBitmap(g)
		if err != nil {
			return err
		}
		n := f.ipg
		if f.csumEnabled() {
			if unused := f.descLoHi16(g, gdItableUnused, gdItableUnusHi); unused <= n {
				n -= unused
			}
		}
		if n == 0 {
			continue
		}
		buf := table[:uint64(n)*uint64(f.inodeSize)]
		if err := f.readAt(buf, int64(f.inodeTableLoc(g))*f.bs); err != nil {
			return fmt.Errorf("reading inode table of group %d: %w", g, err)
		}
		for j := uint32(0); j < n; j++ {
			if !ib.get(uint64(j)) {
				continue
			}
			in := &inode{ino: g*f.ipg + j + 1, b: buf[uint64(j)*uint64(f.inodeSize):][:f.inodeSize]}
			if in.links() == 0 || !(in.isReg() || in.isDir() || in.isLink()) {
				continue // free, or a device, FIFO or socket: no blocks
			}
			if acl := in.fileACL(); acl != 0 {
				if ok, err := used(acl); err != nil {
					return err
				} else if !ok {
					return freeErr(acl, in.ino)
				}
			}
			exts, meta, err := f.fileMap(in)
			if errors.Is(err, ErrUnsupported) {
				continue // inline data: no blocks of its own
			}
			if err != nil {
				return err
			}
			for _, b := range meta {
				if ok, err := used(b); err != nil {
					return err
				} else if !ok {
					return freeErr(b, in.ino)
				}
			}
			for _, e := range exts {
				for b := e.pblk; b < e.pblk+uint64(e.n); b++ {
					if ok, err := used(b); err != nil {
						return err
					} else if !ok {
						return freeErr(b, in.ino)
					}
				}
			}
		}
	}
	return nil
}

// bitmapError is an ErrCorrupt that says only what is wrong: the caller
// says what to do (repair a copy, never the base).
type bitmapError struct{ msg string }

func (e bitmapError) Error() string { return e.msg }
func (e bitmapError) Unwrap() error { return ErrCorrupt }

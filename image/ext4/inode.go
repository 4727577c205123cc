package ext4

import (
	"fmt"
	"time"
)

// Inode field offsets (struct ext4_inode).
const (
	iMode        = 0x0
	iUID         = 0x2
	iSizeLo      = 0x4
	iAtime       = 0x8
	iCtime       = 0xC
	iMtime       = 0x10
	iDtime       = 0x14
	iGID         = 0x18
	iLinks       = 0x1A
	iBlocksLo    = 0x1C
	iFlags       = 0x20
	iBlock       = 0x28
	iGeneration  = 0x64
	iFileACLLo   = 0x68
	iSizeHigh    = 0x6C
	iBlocksHi    = 0x74
	iFileACLHi   = 0x76
	iUIDHi       = 0x78
	iGIDHi       = 0x7A
	iCsumLo      = 0x7C
	iExtraIsize  = 0x80
	iCsumHi      = 0x82
	iCtimeExtra  = 0x84
	iMtimeExtra  = 0x88
	iAtimeExtra  = 0x8C
	iCrtime      = 0x90
	iCrtimeExtra = 0x94

	flIndex     = 0x1000
	flHugeFile  = 0x40000
	flExtents   = 0x80000
	flEAInode   = 0x200000
	flInline    = 0x10000000
	flFastSyml  = 0 // fast symlinks are recognised by size, not a flag
	maxSymlinks = 40
)

// inode is a copy of one on-disk inode.
type inode struct {
	ino uint32
	b   []byte
}

func (f *FS) inodeLoc(ino uint32) (blk uint64, off int, err error) {
	if ino == 0 || ino > le32(f.sb, sbInodesCount) {
		return 0, 0, fmt.Errorf("inode %d out of range: %w", ino, ErrCorrupt)
	}
	g, j := (ino-1)/f.ipg, (ino-1)%f.ipg
	byteOff := uint64(j) * uint64(f.inodeSize)
	return f.inodeTableLoc(g) + byteOff/uint64(f.bs), int(byteOff % uint64(f.bs)), nil
}

func (f *FS) getInode(ino uint32) (*inode, error) {
	blk, off, err := f.inodeLoc(ino)
	if err != nil {
		return nil, err
	}
	d, err := f.readBlock(blk)
	if err != nil {
		return nil, fmt.Errorf("reading inode %d: %w", ino, err)
	}
	in := &inode{ino: ino, b: append([]byte(nil), d[off:off+f.inodeSize]...)}
	if f.metaCsum && in.csum(f) != in.storedCsum(f) {
		return nil, fmt.Errorf("reading inode %d: checksum mismatch: %w", ino, ErrCorrupt)
	}
	return in, nil
}

func (f *FS) putInode(in *inode) error {
	if f.metaCsum {
		c := in.csum(f)
		put16(in.b, iCsumLo, uint16(c))
		if in.hasExtra(iCsumHi + 2) {
			put16(in.b, iCsumHi, uint16(c>>16))
		}
	}
	blk, off, err := f.inodeLoc(in.ino)
	if err != nil {
		return err
	}
	d, err := f.readBlock(blk)
	if err != nil {
		return fmt.Errorf("writing inode %d: %w", in.ino, err)
	}
	copy(d[off:], in.b)
	f.markDirty(blk, d)
	return nil
}

// hasExtra reports whether the inode's extra space covers fields up to byte end.
func (in *inode) hasExtra(end int) bool {
	return len(in.b) > 128 && 128+int(le16(in.b, iExtraIsize)) >= end
}

func (in *inode) seed(f *FS) uint32 {
	return crc32cU32(crc32cU32(f.csumSeed, in.ino), le32(in.b, iGeneration))
}

func (in *inode) csum(f *FS) uint32 {
	b := append([]byte(nil), in.b...)
	put16(b, iCsumLo, 0)
	hi := in.hasExtra(iCsumHi + 2)
	if hi {
		put16(b, iCsumHi, 0)
	}
	c := crc32c(in.seed(f), b)
	if !hi {
		c &= 0xFFFF
	}
	return c
}

func (in *inode) storedCsum(f *FS) uint32 {
	c := uint32(le16(in.b, iCsumLo))
	if in.hasExtra(iCsumHi + 2) {
		c |= uint32(le16(in.b, iCsumHi)) << 16
	}
	return c
}

func (in *inode) mode() uint16  { return le16(in.b, iMode) }
func (in *inode) isDir() bool   { return in.mode()&sIFMT == sIFDIR }
func (in *inode) isReg() bool   { return in.mode()&sIFMT == sIFREG }
func (in *inode) isLink() bool  { return in.mode()&sIFMT == sIFLNK }
func (in *inode) flags() uint32 { return le32(in.b, iFlags) }
func (in *inode) links() uint16 { return le16(in.b, iLinks) }
func (in *inode) uid() uint32   { return uint32(le16(in.b, iUID)) | uint32(le16(in.b, iUIDHi))<<16 }
func (in *inode) gid() uint32   { return uint32(le16(in.b, iGID)) | uint32(le16(in.b, iGIDHi))<<16 }
func (in *inode) size() int64   { return int64(le32(in.b, iSizeLo)) | int64(le32(in.b, iSizeHigh))<<32 }
func (in *inode) fileACL() uint64 {
	return uint64(le32(in.b, iFileACLLo)) | uint64(le16(in.b, iFileACLHi))<<32
}

func (in *inode) setSize(n int64) {
	put32(in.b, iSizeLo, uint32(n))
	put32(in.b, iSizeHigh, uint32(n>>32))
}

func (in *inode) setOwner(uid, gid uint32) {
	put16(in.b, iUID, uint16(uid))
	put16(in.b, iUIDHi, uint16(uid>>16))
	put16(in.b, iGID, uint16(gid))
	put16(in.b, iGIDHi, uint16(gid>>16))
}

func (in *inode) setFileACL(b uint64) {
	put32(in.b, iFileACLLo, uint32(b))
	put16(in.b, iFileACLHi, uint16(b>>32))
}

// blocks512 returns i_blocks in 512-byte units.
func (in *inode) blocks512(f *FS) uint64 {
	n := uint64(le32(in.b, iBlocksLo)) | uint64(le16(in.b, iBlocksHi))<<32
	if in.flags()&flHugeFile != 0 {
		n *= uint64(f.bs / 512)
	}
	return n
}

// addBlocks adjusts i_blocks by d filesystem blocks.
func (in *inode) addBlocks(f *FS, d int64) {
	n := int64(in.blocks512(f)) + d*(f.bs/512)
	if n < 0 {
		n = 0
	}
	put32(in.b, iFlags, in.flags()&^flHugeFile)
	put32(in.b, iBlocksLo, uint32(n))
	put16(in.b, iBlocksHi, uint16(n>>32))
}

func (in *inode) time(off, extra int) time.Time {
	sec := int64(int32(le32(in.b, off)))
	var nsec int64
	if extra > 0 && in.hasExtra(extra+4) {
		e := le32(in.b, extra)
		sec += int64(e&3) << 32
		nsec = int64(e >> 2)
	}
	return time.Unix(sec, nsec).UTC()
}

func (in *inode) setTime(off, extra int, t time.Time) {
	if off >= 128 && !in.hasExtra(off+4) {
		return // crtime only exists in large inodes
	}
	sec := t.Unix()
	lo := uint32(sec)
	put32(in.b, off, lo)
	if extra > 0 && in.hasExtra(extra+4) {
		epoch := uint32((sec-int64(int32(lo)))>>32) & 3
		put32(in.b, extra, uint32(t.Nanosecond())<<2|epoch)
	}
}

func (f *FS) info(name string, in *inode) *FileInfo {
	return &FileInfo{Name: name, Ino: in.ino, Mode: uint32(in.mode()), UID: in.uid(), GID: in.gid(),
		Size: in.size(), Nlink: uint32(in.links()),
		Atime: in.time(iAtime, iAtimeExtra), Mtime: in.time(iMtime, iMtimeExtra), Ctime: in.time(iCtime, iCtimeExtra)}
}

// newInode returns a fresh in-memory inode with the given mode and attributes.
func (f *FS) newInode(ino uint32, mode uint16, a Attr) *inode {
	in := &inode{ino: ino, b: make([]byte, f.inodeSize)}
	put16(in.b, iMode, mode)
	in.setOwner(a.UID, a.GID)
	if f.hasIncompat(incompatExtents) {
		put32(in.b, iFlags, flExtents)
	}
	if f.inodeSize > 128 {
		extra := le16(f.sb, sbWantExtraIsize)
		if extra < 32 {
			extra = 32
		}
		if 128+int(extra) > f.inodeSize {
			extra = uint16(f.inodeSize - 128)
		}
		put16(in.b, iExtraIsize, extra)
	}
	now := f.stamp(in, a.Mtime)
	in.setTime(iCrtime, iCrtimeExtra, now)
	return in
}

// isFastSymlink reports whether a symlink keeps its target inside i_block.
func (f *FS) isFastSymlink(in *inode) bool {
	ea := uint64(0)
	if in.fileACL() != 0 {
		ea = uint64(f.bs / 512)
	}
	return in.isLink() && in.size() < 60 && in.blocks512(f) <= ea
}

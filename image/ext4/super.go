package ext4

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"time"
)

// Superblock field offsets (struct ext4_super_block).
const (
	sbInodesCount     = 0x0
	sbBlocksCountLo   = 0x4
	sbRBlocksCountLo  = 0x8
	sbFreeBlocksLo    = 0xC
	sbFreeInodes      = 0x10
	sbFirstDataBlock  = 0x14
	sbLogBlockSize    = 0x18
	sbLogClusterSize  = 0x1C
	sbBlocksPerGroup  = 0x20
	sbInodesPerGroup  = 0x28
	sbWtime           = 0x30
	sbMagic           = 0x38
	sbState           = 0x3A
	sbRevLevel        = 0x4C
	sbFirstIno        = 0x54
	sbInodeSize       = 0x58
	sbBlockGroupNr    = 0x5A
	sbFeatureCompat   = 0x5C
	sbFeatureIncompat = 0x60
	sbFeatureRoCompat = 0x64
	sbUUID            = 0x68
	sbReservedGDT     = 0xCE
	sbHashSeed        = 0xEC
	sbDefHashVersion  = 0xFC
	sbDescSize        = 0xFE
	sbFirstMetaBg     = 0x104
	sbBlocksCountHi   = 0x150
	sbRBlocksCountHi  = 0x154
	sbFreeBlocksHi    = 0x158
	sbWantExtraIsize  = 0x15E
	sbFlags           = 0x160
	sbLogGroupsPerFlx = 0x174
	sbKbytesWritten   = 0x178
	sbOverhead        = 0x248
	sbBackupBgs       = 0x24C
	sbChecksumSeed    = 0x270
	sbWtimeHi         = 0x274
	sbChecksum        = 0x3FC
)

// Feature bits.
const (
	compatHasJournal   = 0x4
	compatResizeInode  = 0x10
	compatDirIndex     = 0x20
	compatSparseSuper2 = 0x200

	incompatFiletype   = 0x2
	incompatRecover    = 0x4
	incompatJournalDev = 0x8
	incompatMetaBg     = 0x10
	incompatExtents    = 0x40
	incompat64bit      = 0x80
	incompatMMP        = 0x100
	incompatFlexBg     = 0x200
	incompatCsumSeed   = 0x2000
	incompatLargedir   = 0x4000

	roSparseSuper   = 0x1
	roLargeFile     = 0x2
	roHugeFile      = 0x8
	roGdtCsum       = 0x10
	roDirNlink      = 0x20
	roExtraIsize    = 0x40
	roMetadataCsum  = 0x400
	roOrphanPresent = 0x10000
)

const knownIncompat = incompatFiletype | incompatRecover | incompatMetaBg | incompatExtents | incompat64bit |
	incompatFlexBg | incompatCsumSeed | incompatLargedir

const knownRoCompat = roSparseSuper | roLargeFile | 0x4 | roHugeFile | roGdtCsum | roDirNlink |
	roExtraIsize | roMetadataCsum | roOrphanPresent

// FS is an open ext2/3/4 filesystem. Methods are not safe for concurrent use.
type FS struct {
	dev  io.ReaderAt
	w    io.WriterAt // nil when read-only
	off  int64
	size int64
	now  func() time.Time
	log  *slog.Logger

	sb        []byte
	bs        int64
	blocks    uint64
	firstData uint64
	bpg, ipg  uint32
	groups    uint32
	inodeSize int
	descSize  int
	descBlks  uint64
	firstIno  uint32

	metaCsum bool
	gdtCsum  bool
	csumSeed uint32
	hashSeed [4]uint32
	hashVer  uint8
	unsigned bool

	gdt      []byte          // all descriptors, descSize each
	gdtDirty map[uint32]bool // groups whose descriptor changed
	bbm      map[uint32]*bitmap
	ibm      map[uint32]*bitmap
	dirty    map[uint64][]byte // dirty metadata blocks
	cache    map[uint64][]byte // clean metadata blocks
	freeBlk  uint64
	freeIno  uint32
	written  uint64 // bytes written, for s_kbytes_written
	sbDirty  bool
	closed   bool
}

// Open reads the filesystem that starts at byte offset off of dev and is size bytes long.
func Open(dev io.ReaderAt, off, size int64, opts *Options) (*FS, error) {
	if opts == nil {
		opts = &Options{}
	}
	f := &FS{dev: dev, off: off, size: size, now: opts.Now, log: opts.Log,
		gdtDirty: map[uint32]bool{}, bbm: map[uint32]*bitmap{}, ibm: map[uint32]*bitmap{},
		dirty: map[uint64][]byte{}, cache: map[uint64][]byte{}}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if !opts.ReadOnly {
		w, ok := dev.(io.WriterAt)
		if !ok {
			return nil, fmt.Errorf("opening ext4 for writing: device is not writable (use Options.ReadOnly)")
		}
		f.w = w
	}
	f.sb = make([]byte, 1024)
	if _, err := dev.ReadAt(f.sb, off+1024); err != nil {
		return nil, fmt.Errorf("reading ext4 superblock: %w", err)
	}
	if err := f.parseSuper(); err != nil {
		return nil, err
	}
	if err := f.loadGDT(); err != nil {
		return nil, err
	}
	f.log.Debug("opened ext4", "blocks", f.blocks, "block_size", f.bs, "groups", f.groups,
		"desc_size", f.descSize, "metadata_csum", f.metaCsum, "gdt_csum", f.gdtCsum, "read_only", f.w == nil)
	return f, nil
}

func (f *FS) parseSuper() error {
	sb := f.sb
	if le16(sb, sbMagic) != 0xEF53 {
		return fmt.Errorf("reading ext4 superblock: bad magic %#x, not an ext2/3/4 filesystem: %w", le16(sb, sbMagic), ErrCorrupt)
	}
	incompat, ro := le32(sb, sbFeatureIncompat), le32(sb, sbFeatureRoCompat)
	if u := incompat &^ knownIncompat; u != 0 {
		return fmt.Errorf("opening ext4: incompatible features %#x (e.g. inline_data, encrypt, casefold, mmp) are not supported; use a base image made without them: %w", u, ErrUnsupported)
	}
	if u := ro &^ knownRoCompat; u != 0 {
		if f.w != nil {
			return fmt.Errorf("opening ext4 for writing: read-only-compatible features %#x (e.g. quota, bigalloc, project) are not supported: %w", u, ErrUnsupported)
		}
	}
	if f.w == nil && incompat&incompatRecover != 0 {
		f.log.Warn("ext4 journal needs recovery; reading possibly stale metadata")
	}
	if f.w != nil {
		if incompat&incompatRecover != 0 {
			return fmt.Errorf("opening ext4 for writing: journal needs recovery: %w", ErrNeedsRecovery)
		}
		if st := le16(sb, sbState); st&1 == 0 || st&2 != 0 || ro&roOrphanPresent != 0 {
			return fmt.Errorf("opening ext4 for writing: filesystem was not cleanly unmounted or has errors (state %#x): %w", st, ErrNeedsRecovery)
		}
		if le32(sb, sbFeatureCompat)&compatSparseSuper2 != 0 {
			return fmt.Errorf("opening ext4 for writing: sparse_super2 is not supported: %w", ErrUnsupported)
		}
	}
	if le32(sb, sbLogBlockSize) > 6 || le32(sb, sbLogClusterSize) != le32(sb, sbLogBlockSize) {
		return fmt.Errorf("opening ext4: unsupported block/cluster size: %w", ErrUnsupported)
	}
	f.bs = 1024 << le32(sb, sbLogBlockSize)
	f.blocks = uint64(le32(sb, sbBlocksCountLo))
	if incompat&incompat64bit != 0 {
		f.blocks |= uint64(le32(sb, sbBlocksCountHi)) << 32
		f.descSize = int(le16(sb, sbDescSize))
		if f.descSize < 64 || f.descSize&(f.descSize-1) != 0 {
			return fmt.Errorf("opening ext4: bad descriptor size %d: %w", f.descSize, ErrCorrupt)
		}
	} else {
		f.descSize = 32
	}
	f.firstData = uint64(le32(sb, sbFirstDataBlock))
	f.bpg, f.ipg = le32(sb, sbBlocksPerGroup), le32(sb, sbInodesPerGroup)
	if f.bpg < 8 || f.ipg < 8 || f.bpg%8 != 0 || f.ipg%8 != 0 || f.bpg > uint32(f.bs*8) || f.ipg > uint32(f.bs*8) ||
		f.firstData > 1 || f.blocks <= f.firstData+1 || f.blocks > uint64(f.size/f.bs) {
		return fmt.Errorf("opening ext4: bad geometry (%d blocks of %d bytes in a %d-byte partition, %d per group): %w",
			f.blocks, f.bs, f.size, f.bpg, ErrCorrupt)
	}
	f.groups = uint32((f.blocks - f.firstData + uint64(f.bpg) - 1) / uint64(f.bpg))
	f.descBlks = (uint64(f.groups)*uint64(f.descSize) + uint64(f.bs) - 1) / uint64(f.bs)
	f.inodeSize = 128
	f.firstIno = 11
	if le32(sb, sbRevLevel) >= 1 {
		f.inodeSize = int(le16(sb, sbInodeSize))
		f.firstIno = le32(sb, sbFirstIno)
	}
	if f.inodeSize < 128 || int64(f.inodeSize) > f.bs || f.inodeSize&(f.inodeSize-1) != 0 {
		return fmt.Errorf("opening ext4: bad inode size %d: %w", f.inodeSize, ErrCorrupt)
	}
	if f.descSize > int(f.bs) || uint64(le32(sb, sbInodesCount)) != uint64(f.groups)*uint64(f.ipg) ||
		f.firstIno < 3 || f.firstIno >= le32(sb, sbInodesCount) {
		return fmt.Errorf("opening ext4: inode count, first inode or descriptor size inconsistent: %w", ErrCorrupt)
	}
	f.metaCsum = ro&roMetadataCsum != 0
	f.gdtCsum = !f.metaCsum && ro&roGdtCsum != 0
	if f.metaCsum {
		if c := crc32c(^uint32(0), sb[:sbChecksum]); c != le32(sb, sbChecksum) {
			return fmt.Errorf("opening ext4: superblock checksum mismatch: %w", ErrCorrupt)
		}
		if incompat&incompatCsumSeed != 0 {
			f.csumSeed = le32(sb, sbChecksumSeed)
		} else {
			f.csumSeed = crc32c(^uint32(0), sb[sbUUID:sbUUID+16])
		}
	}
	for i := range f.hashSeed {
		f.hashSeed[i] = le32(sb, sbHashSeed+4*i)
	}
	f.hashVer = sb[sbDefHashVersion]
	f.unsigned = le32(sb, sbFlags)&2 != 0
	f.freeBlk = uint64(le32(sb, sbFreeBlocksLo))
	if incompat&incompat64bit != 0 {
		f.freeBlk |= uint64(le32(sb, sbFreeBlocksHi)) << 32
	}
	f.freeIno = le32(sb, sbFreeInodes)
	return nil
}

func (f *FS) hasIncompat(b uint32) bool { return le32(f.sb, sbFeatureIncompat)&b != 0 }
func (f *FS) hasRoCompat(b uint32) bool { return le32(f.sb, sbFeatureRoCompat)&b != 0 }
func (f *FS) hasCompat(b uint32) bool   { return le32(f.sb, sbFeatureCompat)&b != 0 }

// Size returns the filesystem size in bytes.
func (f *FS) Size() int64 { return int64(f.blocks) * f.bs }

// BlockSize returns the block size in bytes.
func (f *FS) BlockSize() int { return int(f.bs) }

// FreeBytes returns free blocks times the block size (space available to root).
func (f *FS) FreeBytes() int64 { return int64(f.freeBlk) * f.bs }

func (f *FS) writable() error {
	if f.closed {
		return fmt.Errorf("ext4: filesystem is closed")
	}
	if f.w == nil {
		return ErrReadOnly
	}
	return nil
}

// readAt reads from the filesystem at byte offset off (relative to the filesystem start).
func (f *FS) readAt(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > f.size {
		return fmt.Errorf("reading at %d: beyond the end of the filesystem: %w", off, ErrCorrupt)
	}
	n, err := f.dev.ReadAt(p, f.off+off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (f *FS) writeAt(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > f.size {
		return fmt.Errorf("writing at %d: beyond the end of the filesystem: %w", off, ErrCorrupt)
	}
	if _, err := f.w.WriteAt(p, f.off+off); err != nil {
		return err
	}
	f.written += uint64(len(p))
	return nil
}

// Sync writes back all dirty metadata.
func (f *FS) Sync() error {
	if f.w == nil || f.closed {
		return nil
	}
	if err := f.flushBitmaps(); err != nil {
		return fmt.Errorf("syncing bitmaps: %w", err)
	}
	if err := f.flushBlocks(); err != nil {
		return fmt.Errorf("syncing metadata blocks: %w", err)
	}
	if err := f.flushGDT(); err != nil {
		return fmt.Errorf("syncing group descriptors: %w", err)
	}
	if !f.sbDirty && f.written == 0 {
		return nil
	}
	return f.writeSuper()
}

func (f *FS) writeSuper() error {
	sb := f.sb
	put32(sb, sbFreeBlocksLo, uint32(f.freeBlk))
	if f.hasIncompat(incompat64bit) {
		put32(sb, sbFreeBlocksHi, uint32(f.freeBlk>>32))
	}
	put32(sb, sbFreeInodes, f.freeIno)
	now := f.now().Unix()
	put32(sb, sbWtime, uint32(now))
	sb[sbWtimeHi] = byte(now >> 32)
	kb := le64(sb, sbKbytesWritten) + (f.written+1023)/1024
	put64(sb, sbKbytesWritten, kb)
	f.written = 0
	f.setSuperCsum(sb)
	if err := f.writeAt(sb, 1024); err != nil {
		return fmt.Errorf("writing superblock: %w", err)
	}
	f.written = 0
	f.sbDirty = false
	return nil
}

func (f *FS) setSuperCsum(sb []byte) {
	if f.metaCsum {
		put32(sb, sbChecksum, crc32c(^uint32(0), sb[:sbChecksum]))
	}
}

// Close syncs and releases the filesystem; it is unusable afterwards.
func (f *FS) Close() error {
	if f.closed {
		return nil
	}
	err := f.Sync()
	f.closed = true
	f.cache, f.dirty, f.bbm, f.ibm = nil, nil, nil, nil
	return err
}

// readBlock returns block b (dirty copy first, then cache, then disk). The slice is shared:
// callers that change it must call markDirty.
func (f *FS) readBlock(b uint64) ([]byte, error) {
	if f.closed {
		return nil, fmt.Errorf("ext4: filesystem is closed")
	}
	if d, ok := f.dirty[b]; ok {
		return d, nil
	}
	if d, ok := f.cache[b]; ok {
		return d, nil
	}
	if b >= f.blocks {
		return nil, fmt.Errorf("reading block %d: beyond the end of the filesystem: %w", b, ErrCorrupt)
	}
	d := make([]byte, f.bs)
	if err := f.readAt(d, int64(b)*f.bs); err != nil {
		return nil, fmt.Errorf("reading block %d: %w", b, err)
	}
	if len(f.cache) >= 4096 {
		clear(f.cache)
	}
	f.cache[b] = d
	return d, nil
}

func (f *FS) markDirty(b uint64, d []byte) {
	delete(f.cache, b)
	f.dirty[b] = d
}

// forget drops cached copies of freed blocks so they are never written back over data.
func (f *FS) forget(b uint64) {
	delete(f.cache, b)
	delete(f.dirty, b)
}

func (f *FS) flushBlocks() error {
	keys := slices.Sorted(maps.Keys(f.dirty))
	for _, b := range keys {
		if err := f.writeAt(f.dirty[b], int64(b)*f.bs); err != nil {
			return err
		}
		f.cache[b] = f.dirty[b]
		delete(f.dirty, b)
	}
	return nil
}

func isZero(p []byte) bool { return bytes.Count(p, []byte{0}) == len(p) }

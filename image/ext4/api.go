// Package ext4 reads and edits ext2/3/4 filesystems in place, offline, in pure Go.
//
// It is written from the on-disk format (Linux Documentation/filesystems/ext4 and the
// behaviour of e2fsprogs): every change keeps the filesystem clean for `e2fsck -fn`,
// updates free counts, link counts and all metadata checksums, and is deterministic:
// the same inputs and Options.Now give byte-identical output.
package ext4

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"time"
)

// Errors returned by this package; test with errors.Is. fs.ErrNotExist and fs.ErrExist
// are used for missing and already existing names.
var (
	ErrNoSpace       = errors.New("ext4: no space left on filesystem")
	ErrNoInodes      = errors.New("ext4: no free inodes left on filesystem")
	ErrNeedsRecovery = errors.New("ext4: filesystem needs recovery (run e2fsck -fy on it first)")
	ErrUnsupported   = errors.New("ext4: unsupported filesystem feature")
	ErrReadOnly      = errors.New("ext4: filesystem opened read-only")
	ErrCorrupt       = errors.New("ext4: filesystem is corrupt (run e2fsck -fy on it first)")
	ErrNotEmpty      = errors.New("ext4: directory not empty")
	ErrNotDir        = errors.New("ext4: not a directory")
	ErrIsDir         = errors.New("ext4: is a directory")
)

// Device is where the filesystem lives. A read-only open needs only io.ReaderAt.
type Device interface {
	io.ReaderAt
	io.WriterAt
}

// Options tune Open. The zero value opens for writing with the wall clock.
type Options struct {
	// ReadOnly refuses every write; dev may then be only an io.ReaderAt.
	ReadOnly bool
	// Now is the clock for new and changed inodes and the superblock; nil means time.Now.
	// Output depends on nothing else (no randomness, no map order).
	Now func() time.Time
	// Log receives debug messages; nil is silent.
	Log *slog.Logger
}

// FileInfo describes one inode as found through a path.
type FileInfo struct {
	Name                string
	Ino                 uint32
	Mode                uint32 // raw i_mode: S_IFMT type bits | 07777 permission bits
	UID, GID            uint32
	Size                int64
	Nlink               uint32
	Atime, Mtime, Ctime time.Time
}

// File type bits of i_mode.
const (
	sIFMT   = 0xF000
	sIFSOCK = 0xC000
	sIFLNK  = 0xA000
	sIFREG  = 0x8000
	sIFBLK  = 0x6000
	sIFDIR  = 0x4000
	sIFCHR  = 0x2000
	sIFIFO  = 0x1000
)

// IsDir reports whether fi is a directory.
func (fi *FileInfo) IsDir() bool { return fi.Mode&sIFMT == sIFDIR }

// IsRegular reports whether fi is a regular file.
func (fi *FileInfo) IsRegular() bool { return fi.Mode&sIFMT == sIFREG }

// IsSymlink reports whether fi is a symbolic link.
func (fi *FileInfo) IsSymlink() bool { return fi.Mode&sIFMT == sIFLNK }

// FileMode returns the mode in Go form, with ModeSetuid, ModeSetgid and ModeSticky.
func (fi *FileInfo) FileMode() fs.FileMode {
	m := fs.FileMode(fi.Mode & 0777)
	switch fi.Mode & sIFMT {
	case sIFDIR:
		m |= fs.ModeDir
	case sIFLNK:
		m |= fs.ModeSymlink
	case sIFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		m |= fs.ModeDevice
	case sIFIFO:
		m |= fs.ModeNamedPipe
	case sIFSOCK:
		m |= fs.ModeSocket
	}
	if fi.Mode&04000 != 0 {
		m |= fs.ModeSetuid
	}
	if fi.Mode&02000 != 0 {
		m |= fs.ModeSetgid
	}
	if fi.Mode&01000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// DirEntry is one name in a directory. Type is an EXT4_FT_* value (1 regular, 2 directory,
// 3 char device, 4 block device, 5 fifo, 6 socket, 7 symlink; 0 unknown).
type DirEntry struct {
	Name string
	Ino  uint32
	Type uint8
}

// Directory entry file types (EXT4_FT_*).
const (
	ftUnknown = 0
	ftReg     = 1
	ftDir     = 2
	ftChr     = 3
	ftBlk     = 4
	ftFifo    = 5
	ftSock    = 6
	ftSymlink = 7
)

// Attr is what a new or replaced inode gets.
type Attr struct {
	Mode     uint16 // permission bits incl. 04000 setuid, 02000 setgid, 01000 sticky
	UID, GID uint32
	Mtime    time.Time // zero = Options.Now(); atime/ctime/crtime always from Now
}

// Range is a byte range relative to the start of the filesystem.
type Range struct{ Off, Len int64 }

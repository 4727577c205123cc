package flash

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"unsafe"
)

// Target is an opened flash target: a block device (a raw disk device on
// macOS) or, when allowed, a regular file.
type Target struct {
	// Path is the device or file path.
	Path string
	// Size is the device's capacity or the file's size in bytes.
	Size int64
	// Regular is true for a regular file.
	Regular bool

	f        *os.File // for writing; opened for direct I/O when direct is set
	rw       *os.File // buffered: unaligned writes and reading back
	direct   bool     // f bypasses the page cache; offsets, lengths and buffers must be aligned
	readOnly bool
}

// alignment is the offset, length and buffer alignment of writes to a
// target opened for direct I/O. 4096 covers 512-byte and 4K-sector media.
const alignment = 4096

// TargetOptions says how to open a target.
type TargetOptions struct {
	// AllowFile permits a regular file as the target; it is created when
	// missing and extended to MinSize when shorter.
	AllowFile bool
	// MinSize is the image size; a file target is extended to it.
	MinSize int64
}

// OpenTarget opens path for writing. It refuses anything that is not a
// block device (or a raw disk on macOS) unless it is a regular file and
// AllowFile is set. The device safety rules are applied separately (CheckDevice).
func OpenTarget(path string, o TargetOptions) (*Target, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && o.AllowFile:
		return openFileTarget(path, o, true)
	case err != nil:
		return nil, fmt.Errorf("opening target: %w", err)
	case st.Mode().IsRegular():
		if !o.AllowFile {
			return nil, fmt.Errorf("%s is a regular file, not a disk device: pass --allow-file to write the image into it", path)
		}
		return openFileTarget(path, o, false)
	case st.Mode()&fs.ModeDevice == 0:
		return nil, fmt.Errorf("%s is not a disk device or a regular file", path)
	}
	t := &Target{Path: path}
	if t.f, t.direct, err = openDevice(path); err != nil {
		return nil, err
	}
	t.rw = t.f
	if t.direct {
		if t.rw, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			t.f.Close()
			return nil, fmt.Errorf("opening target: %w", err)
		}
	}
	if t.Size, err = deviceSize(t.f); err != nil {
		t.Close()
		return nil, fmt.Errorf("reading the size of %s: %w", path, err)
	}
	return t, nil
}

func openFileTarget(path string, o TargetOptions, create bool) (*Target, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	// A new file is private: the image holds the join token.
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening target: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening target: %w", err)
	}
	size := st.Size()
	if size < o.MinSize {
		if err := f.Truncate(o.MinSize); err != nil {
			f.Close()
			return nil, fmt.Errorf("extending %s to the image size: %w", path, err)
		}
		size = o.MinSize
	}
	return &Target{Path: path, Size: size, Regular: true, f: f, rw: f}, nil
}

// WriteAt writes p at off: directly when p, off and len(p) are aligned
// and the target was opened for direct I/O, through the page cache
// otherwise.
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	if t.direct && isAligned(p, off) {
		return t.f.WriteAt(p, off)
	}
	return t.rw.WriteAt(p, off)
}

func isAligned(p []byte, off int64) bool {
	return off%alignment == 0 && len(p)%alignment == 0 && len(p) > 0 &&
		uintptr(unsafe.Pointer(&p[0]))%alignment == 0
}

// ReadAt reads len(p) bytes at off: directly from the medium when the
// target was opened for direct I/O and p and off are aligned, through the
// page cache otherwise (call Sync and dropCache first to read what is on
// the medium).
func (t *Target) ReadAt(p []byte, off int64) (int, error) {
	if t.direct && isAligned(p, off) {
		return t.f.ReadAt(p, off)
	}
	return t.rw.ReadAt(p, off)
}

// Sync flushes written data to the medium.
func (t *Target) Sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", t.Path, err)
	}
	if t.rw != t.f {
		if err := t.rw.Sync(); err != nil {
			return fmt.Errorf("syncing %s: %w", t.Path, err)
		}
	}
	return nil
}

// Close closes the target. On Linux it first asks the kernel to re-read a
// device's partition table, so the new partitions appear.
func (t *Target) Close() error {
	if t.rw != t.f {
		t.rw.Close()
	}
	if !t.Regular && !t.readOnly {
		rereadPartitions(t.f)
	}
	return t.f.Close()
}

// dropCache asks the OS to forget cached pages of the target, so that a
// read-back reads the medium and not memory.
func (t *Target) dropCache() { dropCache(t.rw, t.Regular) }

// alignedBuffer returns a buffer of n bytes whose start is aligned for
// direct I/O.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+alignment)
	skip := (alignment - int(uintptr(unsafe.Pointer(&b[0]))%alignment)) % alignment
	return b[skip : skip+n : skip+n]
}

// Package initramfs builds the cpio archive `imgbake netboot` appends to a
// node's initramfs: the netboot /init (built from netboot/initrd) and the
// kernel modules it needs, taken from the node's own disk.
//
// The kernel unpacks an initramfs made of several archives one after the
// other (Documentation/driver-api/early-userspace/buffer-format.rst): each
// may be compressed or not, zero bytes between them are skipped, an
// uncompressed archive must start 4-byte aligned, and a later file
// replaces an earlier one of the same name. So the node's own initramfs,
// zero padding and this archive, in that order, give the node our /init.
package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"strings"
)

// cpio mode bits.
const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChar = 0o020000
)

// Writer writes an uncompressed "newc" (070701) cpio archive.
type Writer struct {
	w    io.Writer
	n    int64
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1, dirs: map[string]bool{}} }

func (w *Writer) write(b []byte) {
	if w.err != nil {
		return
	}
	n, err := w.w.Write(b)
	w.n += int64(n)
	w.err = err
}

func (w *Writer) pad() {
	if r := w.n % 4; r != 0 {
		w.write(make([]byte, 4-r))
	}
}

func (w *Writer) entry(name string, mode uint32, major, minor uint32, data []byte) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		name = "."
	}
	w.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	// Times are 0: the archive is the same for the same inputs.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, major, minor, len(name)+1, 0)
	w.write([]byte(hdr))
	w.write(append([]byte(name), 0))
	w.pad()
	w.write(data)
	w.pad()
}

// MkdirAll adds name and its parents as directories (mode 0755).
func (w *Writer) MkdirAll(name string) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" || w.dirs[name] {
		return
	}
	w.MkdirAll(path.Dir(name))
	w.dirs[name] = true
	w.entry(name, modeDir|0o755, 0, 0, nil)
}

// WriteFile adds a regular file with permission bits perm, and its parent
// directories.
func (w *Writer) WriteFile(name string, perm uint32, data []byte) {
	w.MkdirAll(path.Dir(path.Clean("/" + name)))
	w.entry(name, modeReg|perm&0o7777, 0, 0, data)
}

// CharDevice adds a character device node.
func (w *Writer) CharDevice(name string, perm, major, minor uint32) {
	w.MkdirAll(path.Dir(path.Clean("/" + name)))
	w.entry(name, modeChar|perm&0o7777, major, minor, nil)
}

// Close writes the TRAILER!!! entry and pads the archive to a multiple of
// 512 bytes, as cpio(1) does. It does not close the underlying writer.
func (w *Writer) Close() error {
	w.entry("TRAILER!!!", 0, 0, 0, nil)
	if r := w.n % 512; r != 0 {
		w.write(make([]byte, 512-r))
	}
	return w.err
}

// Concat is a node's initramfs followed by an addition archive, readable
// at any offset (the TFTP server reads blocks).
type Concat struct {
	orig     io.ReaderAt
	origSize int64
	pad      int64
	add      []byte
}

// NewConcat appends add to the origSize bytes of orig, with the zero
// padding that starts add 4-byte aligned. orig may be nil (origSize 0).
func NewConcat(orig io.ReaderAt, origSize int64, add []byte) *Concat {
	return &Concat{orig: orig, origSize: origSize, pad: (4 - origSize%4) % 4, add: add}
}

// Size is the total size.
func (c *Concat) Size() int64 { return c.origSize + c.pad + int64(len(c.add)) }

// ReadAt implements io.ReaderAt.
func (c *Concat) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset")
	}
	n := 0
	for len(p) > 0 {
		switch {
		case off < c.origSize:
			m := min(int64(len(p)), c.origSize-off)
			k, err := c.orig.ReadAt(p[:m], off)
			n += k
			if k < int(m) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			p, off = p[m:], off+m
		case off < c.origSize+c.pad:
			m := min(int64(len(p)), c.origSize+c.pad-off)
			clear(p[:m])
			n += int(m)
			p, off = p[m:], off+m
		default:
			a := off - c.origSize - c.pad
			if a >= int64(len(c.add)) {
				return n, io.EOF
			}
			k := copy(p, c.add[a:])
			n += k
			p, off = p[k:], off+int64(k)
		}
	}
	return n, nil
}

// Bytes returns the whole concatenation (for tests and small files).
func (c *Concat) Bytes() ([]byte, error) {
	var b bytes.Buffer
	_, err := io.Copy(&b, io.NewSectionReader(c, 0, c.Size()))
	return b.Bytes(), err
}

package ext4

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
)

// Stat returns information about the file at name, following a final symlink.
func (f *FS) Stat(name string) (*FileInfo, error) {
	in, _, err := f.resolve(name, true)
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", name, err)
	}
	return f.info(cleanName(name), in), nil
}

// Lstat is Stat without following a final symlink.
func (f *FS) Lstat(name string) (*FileInfo, error) {
	in, _, err := f.resolve(name, false)
	if err != nil {
		return nil, fmt.Errorf("lstat %s: %w", name, err)
	}
	return f.info(cleanName(name), in), nil
}

// ReadFile returns the whole content of a regular file.
func (f *FS) ReadFile(name string) ([]byte, error) {
	fl, err := f.Open(name)
	if err != nil {
		return nil, err
	}
	if fl.Size() > f.Size() {
		return nil, fmt.Errorf("reading %s: %d bytes is larger than the filesystem; use Open: %w", name, fl.Size(), ErrCorrupt)
	}
	buf := make([]byte, fl.Size())
	if _, err := fl.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return buf, nil
}

// Readlink returns the target of the symlink at name.
func (f *FS) Readlink(name string) (string, error) {
	in, _, err := f.resolve(name, false)
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", name, err)
	}
	if !in.isLink() {
		return "", fmt.Errorf("readlink %s: not a symlink: %w", name, fs.ErrInvalid)
	}
	t, err := f.readLink(in)
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", name, err)
	}
	return t, nil
}

// ReadDir returns the entries of a directory sorted by name, without "." and "..".
func (f *FS) ReadDir(name string) ([]DirEntry, error) {
	in, _, err := f.resolve(name, true)
	if err != nil {
		return nil, fmt.Errorf("reading directory %s: %w", name, err)
	}
	ents, err := f.readDir(in)
	if err != nil {
		return nil, fmt.Errorf("reading directory %s: %w", name, err)
	}
	return ents, nil
}

func (f *FS) readDir(in *inode) ([]DirEntry, error) {
	var out []DirEntry
	err := f.scanDir(in, func(_ int, _ uint64, d dirent) bool {
		if n := string(d.name); n != "." && n != ".." {
			out = append(out, DirEntry{Name: n, Ino: d.ino, Type: d.ft})
		}
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// Walk calls fn for root and everything below it in lexical order, without following
// symlinks. Returning fs.SkipDir from fn for a directory skips its contents.
func (f *FS) Walk(root string, fn func(path string, fi *FileInfo, err error) error) error {
	fi, err := f.Lstat(root)
	if err != nil {
		return fn(root, nil, err)
	}
	err = f.walk(root, fi, fn, map[uint32]bool{})
	if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
}

func (f *FS) walk(p string, fi *FileInfo, fn func(string, *FileInfo, error) error, seen map[uint32]bool) error {
	if err := fn(p, fi, nil); err != nil || !fi.IsDir() {
		if errors.Is(err, fs.SkipDir) && fi.IsDir() {
			return nil
		}
		return err
	}
	if seen[fi.Ino] { // every directory has one parent: a second visit is a loop or corruption
		return fn(p, fi, fmt.Errorf("directory inode %d reached twice: %w", fi.Ino, ErrCorrupt))
	}
	seen[fi.Ino] = true
	in, err := f.getInode(fi.Ino)
	if err != nil {
		return fn(p, fi, err)
	}
	ents, err := f.readDir(in)
	if err != nil {
		return fn(p, fi, err)
	}
	for _, e := range ents {
		child := path.Join(p, e.Name)
		cin, err := f.getInode(e.Ino)
		if err != nil {
			if err := fn(child, nil, err); err != nil && !errors.Is(err, fs.SkipDir) {
				return err
			}
			continue
		}
		if err := f.walk(child, f.info(e.Name, cin), fn, seen); err != nil {
			return err
		}
	}
	return nil
}

// File is an open regular file (or symlink target) for reading.
type File struct {
	f    *FS
	size int64
	exts []extent
	pos  int64
}

// Open opens a regular file for reading.
func (f *FS) Open(name string) (*File, error) {
	in, _, err := f.resolve(name, true)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	if in.isDir() {
		return nil, fmt.Errorf("opening %s: %w", name, ErrIsDir)
	}
	if in.size() < 0 {
		return nil, fmt.Errorf("opening %s: negative size: %w", name, ErrCorrupt)
	}
	exts, _, err := f.fileMap(in)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	return &File{f: f, size: in.size(), exts: exts}, nil
}

// Size returns the file size in bytes.
func (fl *File) Size() int64 { return fl.size }

// Close releases the file.
func (fl *File) Close() error { return nil }

// Read reads sequentially.
func (fl *File) Read(p []byte) (int, error) {
	n, err := fl.ReadAt(p, fl.pos)
	fl.pos += int64(n)
	return n, err
}

// ReadAt reads len(p) bytes from offset off; holes and unwritten extents read as zeros.
func (fl *File) ReadAt(p []byte, off int64) (int, error) {
	if off >= fl.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > fl.size-off {
		p = p[:fl.size-off]
	}
	if err := fl.f.readExtents(fl.exts, p, off); err != nil {
		return 0, err
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

func (f *FS) readData(in *inode, p []byte, off int64) error {
	exts, _, err := f.fileMap(in)
	if err != nil {
		return err
	}
	return f.readExtents(exts, p, off)
}

// readExtents fills p with file bytes from offset off using the sorted extent list.
func (f *FS) readExtents(exts []extent, p []byte, off int64) error {
	clear(p)
	end := off + int64(len(p))
	i := sort.Search(len(exts), func(i int) bool {
		return (int64(exts[i].lblk)+int64(exts[i].n))*f.bs > off
	})
	for ; i < len(exts); i++ {
		e := exts[i]
		es, ee := int64(e.lblk)*f.bs, (int64(e.lblk)+int64(e.n))*f.bs
		if es >= end {
			break
		}
		lo, hi := max(es, off), min(ee, end)
		if lo >= hi || e.uninit {
			continue
		}
		if err := f.readAt(p[lo-off:hi-off], int64(e.pblk)*f.bs+(lo-es)); err != nil {
			return fmt.Errorf("reading file data: %w", err)
		}
	}
	return nil
}

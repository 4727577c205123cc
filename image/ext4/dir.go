package ext4

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
)

const rootIno = 2

// dirent is one parsed directory entry inside a block.
type dirent struct {
	off, recLen int
	ino         uint32
	name        []byte
	ft          uint8
}

func (f *FS) hasFiletype() bool { return f.hasIncompat(incompatFiletype) }

// parseBlock returns the entries of a directory block (including unused ones, ino 0).
func (f *FS) parseBlock(b []byte) ([]dirent, error) {
	var out []dirent
	for off := 0; off < len(b); {
		if off+8 > len(b) {
			return nil, fmt.Errorf("directory entry at %d: truncated: %w", off, ErrCorrupt)
		}
		rl := int(le16(b, off+4))
		if rl == 0 && len(b) == 65536 {
			rl = 65536
		}
		if off == len(b)-12 && hasLeafTail(b) { // metadata_csum tail, whatever filetype says
			out = append(out, dirent{off: off, recLen: 12})
			break
		}
		nl := int(b[off+6])
		ft := b[off+7]
		if !f.hasFiletype() {
			nl |= int(ft) << 8
			ft = 0
		}
		if rl < 8 || rl%4 != 0 || off+rl > len(b) || 8+nl > rl {
			return nil, fmt.Errorf("directory entry at %d: bad record length %d: %w", off, rl, ErrCorrupt)
		}
		out = append(out, dirent{off: off, recLen: rl, ino: le32(b, off), name: b[off+8 : off+8+nl], ft: ft})
		off += rl
	}
	return out, nil
}

// dirMap returns the logical-to-physical block map of a directory.
func (f *FS) dirMap(in *inode) ([]uint64, error) {
	exts, _, err := f.fileMap(in)
	if err != nil {
		return nil, err
	}
	n := uint64((in.size() + f.bs - 1) / f.bs)
	mapped := uint64(0)
	for _, e := range exts {
		mapped += uint64(e.n)
	}
	if in.size() < 0 || n > mapped {
		return nil, fmt.Errorf("directory inode %d: size %d beyond its %d blocks: %w", in.ino, in.size(), mapped, ErrCorrupt)
	}
	blocks := make([]uint64, n)
	for _, e := range exts {
		for i := uint32(0); i < e.n; i++ {
			if l := uint64(e.lblk) + uint64(i); l < n {
				blocks[l] = e.pblk + uint64(i)
			}
		}
	}
	for l, p := range blocks {
		if p == 0 {
			return nil, fmt.Errorf("directory inode %d has a hole at block %d: %w", in.ino, l, ErrCorrupt)
		}
	}
	return blocks, nil
}

// scanDir calls fn for each live entry (ino != 0) of a directory, in on-disk order.
// fn returns false to stop.
func (f *FS) scanDir(in *inode, fn func(lblk int, pblk uint64, d dirent) bool) error {
	if !in.isDir() {
		return ErrNotDir
	}
	blocks, err := f.dirMap(in)
	if err != nil {
		return err
	}
	for l, p := range blocks {
		b, err := f.readBlock(p)
		if err != nil {
			return err
		}
		ents, err := f.parseBlock(b)
		if err != nil {
			return fmt.Errorf("reading directory inode %d block %d: %w", in.ino, l, err)
		}
		for _, d := range ents {
			if d.ino == 0 {
				continue
			}
			if !fn(l, p, d) {
				return nil
			}
		}
	}
	return nil
}

// lookup finds name in directory in; ok is false when it is not there.
func (f *FS) lookup(in *inode, name string) (ino uint32, ok bool, err error) {
	if in.isDir() && in.flags()&flIndex != 0 && f.hasCompat(compatDirIndex) {
		if ino, ok, err := f.dxLookup(in, name); err == nil {
			return ino, ok, nil
		}
		// a damaged index: fall back to reading every block, as the kernel would fail to
	}
	err = f.scanDir(in, func(_ int, _ uint64, d dirent) bool {
		if string(d.name) == name {
			ino, ok = d.ino, true
			return false
		}
		return true
	})
	return ino, ok, err
}

func splitPath(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("path %q is not absolute: %w", p, fs.ErrInvalid)
	}
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out, nil
}

// resolve walks p from the root. Symlinks in intermediate components are followed; the last
// one only when followLast. It returns the inode and its parent directory inode.
func (f *FS) resolve(p string, followLast bool) (in, parent *inode, err error) {
	comps, err := splitPath(p)
	if err != nil {
		return nil, nil, err
	}
	cur, err := f.getInode(rootIno)
	if err != nil {
		return nil, nil, err
	}
	par := cur
	var stack []*inode // directories above cur, for ".."
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		if !cur.isDir() {
			return nil, nil, fmt.Errorf("resolving %s: %w", p, ErrNotDir)
		}
		if c == ".." {
			if len(stack) > 0 {
				cur = stack[len(stack)-1]
				stack = stack[:len(stack)-1]
			}
			par = cur
			if len(stack) > 0 {
				par = stack[len(stack)-1]
			}
			continue
		}
		ino, ok, err := f.lookup(cur, c)
		if err != nil {
			return nil, nil, fmt.Errorf("resolving %s: %w", p, err)
		}
		if !ok {
			return nil, nil, fmt.Errorf("resolving %s: %w", p, fs.ErrNotExist)
		}
		next, err := f.getInode(ino)
		if err != nil {
			return nil, nil, fmt.Errorf("resolving %s: %w", p, err)
		}
		if next.isLink() && (len(comps) > 0 || followLast) {
			links++
			if links > maxSymlinks {
				return nil, nil, fmt.Errorf("resolving %s: too many levels of symbolic links: %w", p, fs.ErrInvalid)
			}
			target, err := f.readLink(next)
			if err != nil {
				return nil, nil, fmt.Errorf("resolving %s: %w", p, err)
			}
			tc := strings.Split(target, "/")
			if strings.HasPrefix(target, "/") {
				root, err := f.getInode(rootIno)
				if err != nil {
					return nil, nil, err
				}
				cur, stack = root, nil
			}
			var rest []string
			for _, x := range tc {
				if x != "" && x != "." {
					rest = append(rest, x)
				}
			}
			comps = append(rest, comps...)
			continue
		}
		stack = append(stack, cur)
		par = cur
		cur = next
	}
	return cur, par, nil
}

// resolveParent returns the directory that holds the last component of p and that name.
func (f *FS) resolveParent(p string) (*inode, string, error) {
	comps, err := splitPath(p)
	if err != nil {
		return nil, "", err
	}
	if len(comps) == 0 {
		return nil, "", fmt.Errorf("%s: the root directory cannot be changed this way: %w", p, fs.ErrInvalid)
	}
	base := comps[len(comps)-1]
	if base == ".." {
		return nil, "", fmt.Errorf("%s: last component may not be \"..\": %w", p, fs.ErrInvalid)
	}
	if len(base) > 255 {
		return nil, "", fmt.Errorf("%s: name longer than 255 bytes: %w", p, fs.ErrInvalid)
	}
	dir, _, err := f.resolve("/"+strings.Join(comps[:len(comps)-1], "/"), true)
	if err != nil {
		return nil, "", err
	}
	if !dir.isDir() {
		return nil, "", fmt.Errorf("%s: parent: %w", p, ErrNotDir)
	}
	return dir, base, nil
}

func cleanName(p string) string { return path.Base(path.Clean(p)) }

// readLink returns a symlink's target.
func (f *FS) readLink(in *inode) (string, error) {
	n := in.size()
	if n > f.bs || n < 0 {
		return "", fmt.Errorf("symlink inode %d: bad size %d: %w", in.ino, n, ErrCorrupt)
	}
	if f.isFastSymlink(in) {
		return string(in.b[iBlock : iBlock+int(n)]), nil
	}
	buf := make([]byte, n)
	if err := f.readData(in, buf, 0); err != nil {
		return "", err
	}
	return string(buf), nil
}

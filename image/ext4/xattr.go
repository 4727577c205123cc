package ext4

import (
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

const xattrMagic = 0xEA020000

// xattr is one extended attribute: name index (1 user., 4 trusted., 6 security., 7 system.
// ...) and the rest of the name.
type xattr struct {
	index uint8
	name  string
	value []byte
}

var xattrPrefixes = [...]struct {
	index  uint8
	prefix string
}{
	{2, "system.posix_acl_access"}, {3, "system.posix_acl_default"}, {8, "system.richacl"},
	{1, "user."}, {4, "trusted."}, {6, "security."}, {7, "system."},
}

func (x xattr) fullName() string {
	for _, p := range xattrPrefixes {
		if p.index == x.index {
			return p.prefix + x.name
		}
	}
	return fmt.Sprintf("unknown%d.%s", x.index, x.name)
}

func splitXattrName(full string) (uint8, string, error) {
	for _, p := range xattrPrefixes {
		if p.index == 2 || p.index == 3 || p.index == 8 {
			if full == p.prefix {
				return p.index, "", nil
			}
			continue
		}
		if strings.HasPrefix(full, p.prefix) && len(full) > len(p.prefix) {
			return p.index, full[len(p.prefix):], nil
		}
	}
	return 0, "", fmt.Errorf("xattr name %q: unknown namespace (use user., trusted., security. or system.): %w", full, fs.ErrInvalid)
}

func (in *inode) ibodyStart() int {
	if len(in.b) <= 128 {
		return len(in.b)
	}
	return 128 + int(le16(in.b, iExtraIsize))
}

// parseXattrEntries reads entries from b starting at off; values are at base+e_value_offs.
func parseXattrEntries(b []byte, off, base int) ([]xattr, error) {
	var out []xattr
	for off+4 <= len(b) && le32(b, off) != 0 {
		if off+16 > len(b) {
			return nil, fmt.Errorf("xattr entry truncated: %w", ErrCorrupt)
		}
		nl, idx := int(b[off]), b[off+1]
		vo, vinum, vs := int(le16(b, off+2)), le32(b, off+4), int(le32(b, off+8))
		if off+16+nl > len(b) {
			return nil, fmt.Errorf("xattr name truncated: %w", ErrCorrupt)
		}
		if vinum != 0 {
			return nil, fmt.Errorf("xattr values in inodes (ea_inode): %w", ErrUnsupported)
		}
		if base+vo+vs > len(b) || vo < 0 {
			return nil, fmt.Errorf("xattr value out of range: %w", ErrCorrupt)
		}
		out = append(out, xattr{index: idx, name: string(b[off+16 : off+16+nl]),
			value: append([]byte(nil), b[base+vo:base+vo+vs]...)})
		off += (16 + nl + 3) &^ 3
	}
	return out, nil
}

// readXattrs returns the in-inode and block attributes of an inode.
func (f *FS) readXattrs(in *inode) (ibody, block []xattr, err error) {
	if s := in.ibodyStart(); f.inodeSize > 128 && s+4 <= f.inodeSize && le32(in.b, s) == xattrMagic {
		ibody, err = parseXattrEntries(in.b, s+4, s+4)
		if err != nil {
			return nil, nil, fmt.Errorf("reading xattrs of inode %d: %w", in.ino, err)
		}
	}
	if acl := in.fileACL(); acl != 0 {
		b, err := f.readBlock(acl)
		if err != nil {
			return nil, nil, err
		}
		if le32(b, 0) != xattrMagic {
			return nil, nil, fmt.Errorf("reading xattr block %d of inode %d: bad magic: %w", acl, in.ino, ErrCorrupt)
		}
		block, err = parseXattrEntries(b, 32, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("reading xattr block %d of inode %d: %w", acl, in.ino, err)
		}
	}
	return ibody, block, nil
}

// ListXattrs returns all extended attributes of name (not following a final symlink).
func (f *FS) ListXattrs(name string) (map[string][]byte, error) {
	in, _, err := f.resolve(name, false)
	if err != nil {
		return nil, fmt.Errorf("listing xattrs of %s: %w", name, err)
	}
	a, b, err := f.readXattrs(in)
	if err != nil {
		return nil, fmt.Errorf("listing xattrs of %s: %w", name, err)
	}
	out := map[string][]byte{}
	for _, x := range append(a, b...) {
		out[x.fullName()] = x.value
	}
	return out, nil
}

// Getxattr returns one extended attribute of name (not following a final symlink);
// fs.ErrNotExist when it is not set.
func (f *FS) Getxattr(name, attr string) ([]byte, error) {
	m, err := f.ListXattrs(name)
	if err != nil {
		return nil, err
	}
	v, ok := m[attr]
	if !ok {
		return nil, fmt.Errorf("getting xattr %s of %s: %w", attr, name, fs.ErrNotExist)
	}
	return v, nil
}

func xattrEntryHash(x xattr) uint32 {
	var h uint32
	for _, c := range []byte(x.name) {
		h = h<<5 ^ h>>27 ^ uint32(c)
	}
	v := x.value
	for i := 0; i < len(v); i += 4 {
		var w [4]byte
		copy(w[:], v[i:])
		h = h<<16 ^ h>>16 ^ le32(w[:], 0)
	}
	return h
}

func entrySize(x xattr) int { return (16 + len(x.name) + 3) &^ 3 }
func valueSize(x xattr) int { return (len(x.value) + 3) &^ 3 }

// layoutXattrs writes entries into region b (entries from off, values from the end
// backwards, value offsets relative to base). It reports false if they do not fit.
func layoutXattrs(b []byte, off, base int, xs []xattr) bool {
	need := off + 4
	for _, x := range xs {
		need += entrySize(x) + valueSize(x)
	}
	if need > len(b) {
		return false
	}
	clear(b[off:])
	vend := len(b)
	for _, x := range xs {
		vs := valueSize(x)
		vo := vend - vs
		if len(x.value) == 0 {
			vo = base
		} else {
			copy(b[vo:], x.value)
			vend = vo
		}
		b[off] = byte(len(x.name))
		b[off+1] = x.index
		put16(b, off+2, uint16(vo-base))
		put32(b, off+4, 0)
		put32(b, off+8, uint32(len(x.value)))
		put32(b, off+12, xattrEntryHash(x))
		copy(b[off+16:], x.name)
		off += entrySize(x)
	}
	return true
}

func sortXattrs(xs []xattr) {
	sort.Slice(xs, func(i, j int) bool {
		a, b := xs[i], xs[j]
		if a.index != b.index {
			return a.index < b.index
		}
		if len(a.name) != len(b.name) {
			return len(a.name) < len(b.name)
		}
		return a.name < b.name
	})
}

// writeXattrs stores xs for the inode: in the inode body as far as they fit, the rest in
// an xattr block (copy-on-write when the old block is shared). The inode is not written.
func (f *FS) writeXattrs(in *inode, xs []xattr) error {
	sortXattrs(xs)
	var ibody, block []xattr
	s := in.ibodyStart()
	room := f.inodeSize - s - 4
	used := 4
	for _, x := range xs {
		if room > 0 && used+entrySize(x)+valueSize(x) <= room {
			ibody = append(ibody, x)
			used += entrySize(x) + valueSize(x)
		} else {
			block = append(block, x)
		}
	}
	if f.inodeSize > 128 && s+4 <= f.inodeSize {
		clear(in.b[s:])
		if len(ibody) > 0 {
			put32(in.b, s, xattrMagic)
			layoutXattrs(in.b[s:], 4, 4, ibody)
		}
	}
	old := in.fileACL()
	if len(block) == 0 {
		return f.dropXattrBlock(in)
	}
	b := make([]byte, f.bs)
	put32(b, 0, xattrMagic)
	put32(b, 4, 1)
	put32(b, 8, 1)
	if !layoutXattrs(b, 32, 0, block) {
		return fmt.Errorf("xattrs of inode %d do not fit in one block: %w", in.ino, ErrNoSpace)
	}
	var h uint32
	for off := 32; le32(b, off) != 0; off += (16 + int(b[off]) + 3) &^ 3 {
		h = h<<16 ^ h>>16 ^ le32(b, off+12)
	}
	put32(b, 12, h)
	blk := old
	if old != 0 {
		ob, err := f.readBlock(old)
		if err != nil {
			return err
		}
		if le32(ob, 4) > 1 {
			if err := f.dropXattrBlock(in); err != nil {
				return err
			}
			blk = 0
		}
	}
	if blk == 0 {
		runs, err := f.allocBlocks(f.inodeGoal(in.ino), 1)
		if err != nil {
			return err
		}
		blk = runs[0].start
		in.addBlocks(f, 1)
		in.setFileACL(blk)
	}
	if f.metaCsum {
		var nb [8]byte
		put64(nb[:], 0, blk)
		put32(b, 16, crc32c(crc32c(f.csumSeed, nb[:]), b))
	}
	f.markDirty(blk, b)
	return nil
}

// dropXattrBlock detaches the inode's xattr block, freeing it when no one else uses it.
func (f *FS) dropXattrBlock(in *inode) error {
	acl := in.fileACL()
	if acl == 0 {
		return nil
	}
	b, err := f.readBlock(acl)
	if err != nil {
		return err
	}
	if rc := le32(b, 4); rc > 1 {
		nb := append([]byte(nil), b...)
		put32(nb, 4, rc-1)
		if f.metaCsum {
			put32(nb, 16, 0)
			var k [8]byte
			put64(k[:], 0, acl)
			put32(nb, 16, crc32c(crc32c(f.csumSeed, k[:]), nb))
		}
		f.markDirty(acl, nb)
	} else if err := f.freeBlocks(acl, 1); err != nil {
		return err
	}
	in.setFileACL(0)
	in.addBlocks(f, -1)
	return nil
}

// inodeGoal is a block near the inode's group, for allocations belonging to it.
func (f *FS) inodeGoal(ino uint32) uint64 {
	return f.groupStart((ino - 1) / f.ipg)
}

package ext4

import "fmt"

// AllocatedRanges returns the byte ranges (relative to the filesystem start, sorted and
// merged) in use: boot area, superblocks, descriptors, reserved GDT, bitmaps, whole inode
// tables and every allocated block, per the (in-memory, possibly unsynced) block bitmaps.
func (f *FS) AllocatedRanges() ([]Range, error) {
	if f.closed {
		return nil, fmt.Errorf("ext4: filesystem is closed")
	}
	var out []Range
	add := func(off, n int64) {
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len >= off {
			if e := off + n; e > out[k-1].Off+out[k-1].Len {
				out[k-1].Len = e - out[k-1].Off
			}
			return
		}
		out = append(out, Range{off, n})
	}
	add(0, 2048) // boot sector and primary superblock
	for g := uint32(0); g < f.groups; g++ {
		b, cached := f.bbm[g]
		if !cached {
			var err error
			if b, err = f.blockBitmap(g); err != nil {
				return nil, fmt.Errorf("listing allocated ranges: %w", err)
			}
			delete(f.bbm, g) // do not keep every bitmap of a large filesystem
		}
		start, n := f.groupStart(g), f.groupLen(g)
		for i := uint64(0); i < n; {
			if i%8 == 0 && i+8 <= n && b.data[i/8] == 0 {
				i += 8
				continue
			}
			if !b.get(i) {
				i++
				continue
			}
			j := i
			for j < n && b.get(j) {
				j++
			}
			add(int64(start+i)*f.bs, int64(j-i)*f.bs)
			i = j
		}
	}
	return out, nil
}

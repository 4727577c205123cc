package fat

import (
	"fmt"
	"io"
	"io/fs"
)

// File is a file of a FAT filesystem read in place: ReadAt reads its
// clusters straight from the device, so a file of any size costs only its
// extent list in memory.
type File struct {
	r       io.ReaderAt
	size    int64
	extents []extent
}

// extent is a run of contiguous clusters: file bytes [fileOff,
// fileOff+len) are at device offset devOff.
type extent struct {
	fileOff, devOff, len int64
}

// Open returns the file p for reading in place; fs.ErrNotExist if missing.
// The File reads the device as it is when read: a change to the
// filesystem after Open is not seen consistently.
func (f *FS) Open(p string) (*File, error) {
	d, name, err := f.walk(p, false)
	if err != nil {
		return nil, err
	}
	e, ok := d.find(name)
	if !ok || e.IsDir {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	cs, err := f.chain(e.clus)
	if err != nil {
		return nil, err
	}
	cl := f.ClusterSize()
	if int64(len(cs))*cl < e.Size {
		return nil, fmt.Errorf("%s: %w: file shorter than its size", p, ErrCorrupt)
	}
	file := &File{r: f.r, size: e.Size}
	for i := int64(0); i*cl < e.Size; i++ {
		off := f.clusterOff(cs[i])
		n := min(cl, e.Size-i*cl)
		if k := len(file.extents) - 1; k >= 0 && file.extents[k].devOff+file.extents[k].len == off {
			file.extents[k].len += n
			continue
		}
		file.extents = append(file.extents, extent{fileOff: i * cl, devOff: off, len: n})
	}
	return file, nil
}

// Size returns the file size in bytes.
func (f *File) Size() int64 { return f.size }

// ReadAt implements io.ReaderAt.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("fat: negative offset %d", off)
	}
	n := 0
	for n < len(p) && off < f.size {
		e := f.extentAt(off)
		k := min(int64(len(p)-n), e.fileOff+e.len-off)
		m, err := f.r.ReadAt(p[n:n+int(k)], e.devOff+off-e.fileOff)
		n += m
		off += int64(m)
		if err != nil {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// extentAt returns the extent holding file offset off (0 <= off < size).
func (f *File) extentAt(off int64) extent {
	lo, hi := 0, len(f.extents)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if f.extents[mid].fileOff <= off {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return f.extents[lo]
}

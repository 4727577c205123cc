package image

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/imgbake/imgbake/internal/progress"
)

// cloneFile makes dst (empty, open for writing) a copy of src: a reflink
// (FICLONE) where the filesystem offers it, else a copy of only the data
// ranges (SEEK_DATA/SEEK_HOLE with copy_file_range), so holes stay holes.
func cloneFile(dst, src *os.File, size int64, bar *progress.Bar) error {
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err == nil {
		bar.Add(size)
		return nil
	}
	var off int64
	for off < size {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			bar.Add(size - off) // only a hole remains: it counts as copied
			break
		}
		if err != nil {
			return copyPlain(dst, src, size, bar)
		}
		bar.Add(data - off) // the hole skipped before this data
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("finding holes: %w", err)
		}
		hole = min(hole, size)
		for data < hole {
			in, out := data, data
			n, err := unix.CopyFileRange(int(src.Fd()), &in, int(dst.Fd()), &out, int(hole-data), 0)
			if err != nil || n == 0 {
				if data == 0 && off == 0 {
					return copyPlain(dst, src, size, bar)
				}
				return fmt.Errorf("copying data: %w", err)
			}
			data += int64(n)
			bar.Add(int64(n))
		}
		off = hole
	}
	return dst.Truncate(size)
}

// copyPlain copies src into dst byte by byte, leaving holes for zeros.
func copyPlain(dst, src *os.File, size int64, bar *progress.Bar) error {
	if err := dst.Truncate(0); err != nil {
		return err
	}
	sw := &sparseWriter{f: dst}
	if _, err := io.CopyBuffer(sw, progress.NewReader(io.NewSectionReader(src, 0, size), bar), make([]byte, 1<<20)); err != nil {
		return err
	}
	return sw.finish()
}

// nextData returns the data region of f that starts at or after off: its
// start and end (the next hole). ok is false when only a hole remains. A
// filesystem without SEEK_DATA reports everything from off as data.
func nextData(f *os.File, off, size int64) (start, end int64, ok bool) {
	data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return 0, 0, false
	}
	if err != nil {
		return off, size, true
	}
	hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
	if err != nil {
		return data, size, true
	}
	return min(data, size), min(hole, size), data < size
}

//go:build !linux

package image

import (
	"context"
	"io"
	"os"

	"github.com/imgbake/imgbake/internal/progress"
)

// cloneFile copies src into the empty file dst, leaving holes for zeros.
func cloneFile(_ context.Context, dst, src *os.File, size int64, bar *progress.Bar) error {
	sw := &sparseWriter{f: dst}
	if _, err := io.CopyBuffer(sw, progress.NewReader(io.NewSectionReader(src, 0, size), bar), make([]byte, 1<<20)); err != nil {
		return err
	}
	return sw.finish()
}

// nextData reports everything from off as data: no SEEK_DATA here.
func nextData(f *os.File, off, size int64) (start, end int64, ok bool) {
	return off, size, off < size
}

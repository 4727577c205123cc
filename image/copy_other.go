//go:build !linux

package image

import (
	"context"
	"os"

	"github.com/imgbake/imgbake/internal/progress"
)

// cloneFile copies src into the empty file dst, leaving holes for zeros.
func cloneFile(ctx context.Context, dst, src *os.File, size int64, bar *progress.Bar) error {
	return copyPlain(ctx, dst, src, size, bar)
}

// nextData reports everything from off as data: no SEEK_DATA here.
func nextData(f *os.File, off, size int64) (start, end int64, ok bool) {
	return off, size, off < size
}

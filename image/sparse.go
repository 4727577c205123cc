package image

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/imgbake/imgbake/internal/progress"
)

// sparseChunk is the granularity of hole detection: all-zero runs of at least
// this many aligned bytes are skipped instead of written.
const sparseChunk = 4096

// isZero reports whether p holds only zero bytes.
func isZero(p []byte) bool {
	for len(p) >= 32 {
		if binary.LittleEndian.Uint64(p)|binary.LittleEndian.Uint64(p[8:])|
			binary.LittleEndian.Uint64(p[16:])|binary.LittleEndian.Uint64(p[24:]) != 0 {
			return false
		}
		p = p[32:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// writeAtSparse writes p at off in w, skipping aligned all-zero 4 KiB chunks
// so that the file keeps holes there. The file must have been truncated to
// its final size beforehand (skipped chunks read back as zeros).
func writeAtSparse(w io.WriterAt, p []byte, off int64) error {
	for len(p) > 0 {
		// First chunk up to the next 4 KiB boundary of the file offset.
		n := sparseChunk - int(off%sparseChunk)
		if n > len(p) {
			n = len(p)
		}
		// Extend over following chunks of the same kind (zero or data).
		zero := isZero(p[:n])
		for n < len(p) {
			m := min(sparseChunk, len(p)-n)
			if isZero(p[n:n+m]) != zero {
				break
			}
			n += m
		}
		if !zero {
			if _, err := w.WriteAt(p[:n], off); err != nil {
				return err
			}
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// sparseAt is an io.WriterAt over a file sized beforehand that leaves
// holes for zero chunks.
type sparseAt struct{ f *os.File }

func (s sparseAt) WriteAt(p []byte, off int64) (int, error) {
	if err := writeAtSparse(s.f, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// sparseWriter is an io.Writer over a file that leaves holes for zero
// chunks. Call finish to set the final size.
type sparseWriter struct {
	f   *os.File
	off int64
}

func (s *sparseWriter) Write(p []byte) (int, error) {
	if err := writeAtSparse(s.f, p, s.off); err != nil {
		return 0, err
	}
	s.off += int64(len(p))
	return len(p), nil
}

// finish truncates the file to the number of bytes written, which creates
// a trailing hole where the last chunks were zero.
func (s *sparseWriter) finish() error {
	if err := s.f.Truncate(s.off); err != nil {
		return fmt.Errorf("setting size of %s: %w", s.f.Name(), err)
	}
	return nil
}

// copyPlain copies the first size bytes of src into dst, leaving holes for
// zeros, where the filesystem can neither clone nor copy_file_range. It
// stops with ctx's error once ctx is done (reads fail then).
func copyPlain(ctx context.Context, dst, src *os.File, size int64, bar *progress.Bar) error {
	if err := dst.Truncate(0); err != nil {
		return err
	}
	sw := &sparseWriter{f: dst}
	r := progress.NewReader(io.NewSectionReader(ctxReaderAt{ctx, src}, 0, size), bar)
	if _, err := io.CopyBuffer(sw, r, make([]byte, 1<<20)); err != nil {
		return err
	}
	return sw.finish()
}

// Package flash writes imgbake images to SD cards, USB disks and files:
// only the ranges the image's .bmap maps (the whole image when there is no
// .bmap), streaming from .xz/.zst/.gz/.zip without a temporary file, then syncs
// and reads every written range back to compare checksums. It also finds
// candidate devices and applies the safety rules that keep the disk the
// system runs from, mounted disks and internal disks from being overwritten.
package flash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imgbake/imgbake/image/compression"
)

// Source is an image to flash: a raw image file or a compressed one that is
// decompressed as a stream.
type Source struct {
	// Path is the image file's path.
	Path string
	// Compression is the file's format, detected from its magic bytes:
	// compression.Raw, or xz, zst, gz or zip.
	Compression compression.Format
	// Size is the uncompressed size in bytes, or -1 when it is not known
	// before decompressing (compressed images; the .bmap gives it).
	Size int64

	file *os.File
}

// OpenSource opens the image at path for reading.
func OpenSource(path string) (*Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening image: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("opening image: %s is not a regular file", path)
	}
	format, err := compression.DetectFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading image: %w", err)
	}
	s := &Source{Path: path, Size: st.Size(), Compression: format, file: f}
	if format != compression.Raw {
		s.Size = -1
	}
	return s, nil
}

// Close closes the image file.
func (s *Source) Close() error { return s.file.Close() }

// ReaderAt returns random access to a raw image, or nil for a compressed one.
func (s *Source) ReaderAt() io.ReaderAt {
	if s.Compression != compression.Raw {
		return nil
	}
	return s.file
}

// Stream returns the image's uncompressed bytes from the start. Closing the
// stream stops the decompression.
func (s *Source) Stream(ctx context.Context) (io.ReadCloser, error) {
	return compression.OpenFile(ctx, s.Path, s.Compression)
}

// BmapPathFor returns the .bmap file that belongs to the image at path
// (out/k5.img.bmap for out/k5.img, out/k5.img.xz and out/k5.img.zst), or ""
// when there is none.
func BmapPathFor(path string) string { return SidecarFor(path, ".bmap") }

// SidecarFor returns the existing file named after the image at path with
// ext appended (".bmap", ".manifest.json"), trying the uncompressed image's
// name for a compressed image, or "" when there is none.
func SidecarFor(path, ext string) string {
	for _, c := range sidecars(path, ext) {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return ""
}

// sidecars lists the candidate names: a compressed image's .bmap and
// manifest are named after the uncompressed image.
func sidecars(path, ext string) []string {
	out := []string{path + ext}
	if f := compression.FromName(path); f != compression.Raw {
		out = append(out, strings.TrimSuffix(path, f.Ext())+ext)
	}
	return out
}

// errShort reports an image that ended before the size its .bmap gives.
var errShort = errors.New("image is shorter than its .bmap says")

// Package flash writes imgbake images to SD cards, USB disks and files:
// only the ranges the image's .bmap maps (the whole image when there is no
// .bmap), streaming from .xz/.zst/.gz without a temporary file, then syncs
// and reads every written range back to compare checksums. It also finds
// candidate devices and applies the safety rules that keep the disk the
// system runs from, mounted disks and internal disks from being overwritten.
package flash

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Source is an image to flash: a raw image file or a compressed one that is
// decompressed as a stream.
type Source struct {
	// Path is the image file's path.
	Path string
	// Compression is "", "xz", "zst" or "gz", detected from the file's
	// magic bytes.
	Compression string
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
	head := make([]byte, 8)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		f.Close()
		return nil, fmt.Errorf("reading image: %w", err)
	}
	s := &Source{Path: path, Size: st.Size(), file: f}
	magics := []struct {
		name  string
		magic []byte
	}{
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0}},
		{"zst", []byte{0x28, 0xb5, 0x2f, 0xfd}},
		{"gz", []byte{0x1f, 0x8b}},
	}
	for _, m := range magics {
		if bytes.HasPrefix(head[:n], m.magic) {
			s.Compression = m.name
			s.Size = -1
		}
	}
	return s, nil
}

// Close closes the image file.
func (s *Source) Close() error { return s.file.Close() }

// ReaderAt returns random access to a raw image, or nil for a compressed one.
func (s *Source) ReaderAt() io.ReaderAt {
	if s.Compression != "" {
		return nil
	}
	return s.file
}

// Stream returns the image's uncompressed bytes from the start. xz images
// are decompressed by the xz program when it is installed (several times
// faster, multi-threaded), by a pure-Go decoder otherwise. Closing the
// stream stops the decompression.
func (s *Source) Stream(ctx context.Context) (io.ReadCloser, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return nil, fmt.Errorf("opening image: %w", err)
	}
	var r io.Reader = bufio.NewReaderSize(f, 1<<20)
	switch s.Compression {
	case "":
		return f, nil
	case "xz":
		if prog, err := exec.LookPath("xz"); err == nil {
			f.Close()
			return startProgram(ctx, prog, "-dc", "-T0", "--", s.Path)
		}
		xr, err := xz.NewReader(r)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading xz image %s: %w", s.Path, err)
		}
		return readCloser{Reader: xr, close: f.Close}, nil
	case "zst":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading zstd image %s: %w", s.Path, err)
		}
		return readCloser{Reader: zr, close: func() error { zr.Close(); return f.Close() }}, nil
	case "gz":
		gr, err := gzip.NewReader(r)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading gzip image %s: %w", s.Path, err)
		}
		return readCloser{Reader: gr, close: f.Close}, nil
	}
	f.Close()
	return nil, fmt.Errorf("reading image: unknown compression %q", s.Compression)
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// programReader reads a decompressor's stdout and reports its exit status
// at the end of the stream, so a truncated or corrupt file is an error and
// not a short image.
type programReader struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *bytes.Buffer
	done   bool
}

func startProgram(ctx context.Context, prog string, args ...string) (io.ReadCloser, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", prog, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", prog, err)
	}
	return &programReader{cmd: cmd, out: out, stderr: &stderr}, nil
}

func (p *programReader) Read(b []byte) (int, error) {
	n, err := p.out.Read(b)
	if err == io.EOF && !p.done {
		p.done = true
		if werr := p.cmd.Wait(); werr != nil {
			return n, fmt.Errorf("decompressing: %s: %w", strings.TrimSpace(p.stderr.String()), werr)
		}
	}
	return n, err
}

func (p *programReader) Close() error {
	if p.done {
		return nil
	}
	p.done = true
	p.out.Close()
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
	}
	p.cmd.Wait()
	return nil
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
	for _, suf := range []string{".xz", ".zst", ".gz"} {
		if base, ok := strings.CutSuffix(path, suf); ok {
			out = append(out, base+ext)
		}
	}
	return out
}

// errShort reports an image that ended before the size its .bmap gives.
var errShort = errors.New("image is shorter than its .bmap says")

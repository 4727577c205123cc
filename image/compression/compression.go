// Package compression is imgbake's one home for compressed images and
// files: the names of the formats (the file extensions: xz, zst, gz, zip),
// their detection from the first bytes, the readers that decompress them,
// and the xz program's compressor (XZProgramCompressor). Base images,
// flashed images and kernel modules all go through it.
package compression

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Format names a compression format by its usual file extension.
type Format string

// The formats imgbake reads. The names are the file extensions without
// the dot, as `--compress` takes them.
const (
	Raw  Format = "raw" // not compressed
	XZ   Format = "xz"
	Zstd Format = "zst"
	Gzip Format = "gz"
	Zip  Format = "zip"
)

// Ext is the format's file name extension with its dot ("" for Raw).
func (f Format) Ext() string {
	if f == Raw {
		return ""
	}
	return "." + string(f)
}

// magics are the first bytes of each format.
var magics = []struct {
	f     Format
	magic []byte
}{
	{XZ, []byte{0xfd, '7', 'z', 'X', 'Z', 0}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{Gzip, []byte{0x1f, 0x8b}},
	{Zip, []byte("PK\x03\x04")},
}

// ErrTruncated reports compressed data that ends before its end marker: a
// download cut short.
var ErrTruncated = errors.New("the compressed data ends early")

// Checked reports whether data of format f that starts with head carries
// a checksum of its content, so that decompressing it detects corruption:
// false for a zstd frame without a content checksum (zstd --no-check) and
// an xz stream with check type None (xz -C none). Gzip and zip always
// carry a CRC32; raw data carries nothing (its sha256 is the only check).
func Checked(f Format, head []byte) bool {
	switch f {
	case Zstd:
		// Frame header descriptor, bit 2: Content_Checksum_flag (RFC 8878, 3.1.1.1.1).
		return len(head) > 4 && head[4]&0x04 != 0
	case XZ:
		// Stream flags: the second byte is the check type (xz-file-format 2.1.1.2).
		return len(head) > 7 && head[7]&0x0f != 0
	case Gzip, Zip:
		return true
	}
	return false
}

// HeadSize is how many first bytes Detect needs.
const HeadSize = 8

// Detect names the format of data that starts with head (HeadSize bytes,
// or fewer for a short file). The content decides, not the file name.
func Detect(head []byte) Format {
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.f
		}
	}
	return Raw
}

// DetectFile reads the first bytes of r and names its format.
func DetectFile(r io.ReaderAt) (Format, error) {
	head := make([]byte, HeadSize)
	n, err := r.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return Raw, err
	}
	return Detect(head[:n]), nil
}

// FromName names the format of a file from its name's extension: Raw for
// any other extension.
func FromName(name string) Format {
	ext := strings.TrimPrefix(filepath.Ext(name), ".")
	for _, m := range magics {
		if ext == string(m.f) {
			return m.f
		}
	}
	return Raw
}

// NewReader decompresses the xz, zst or gz stream r (Raw returns r as it
// is). Close releases the decoder; it does not close r. Errors from a
// truncated or corrupt stream come from Read.
func NewReader(f Format, r io.Reader) (io.ReadCloser, error) {
	switch f {
	case Raw:
		return io.NopCloser(r), nil
	case XZ:
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("reading xz data: %w", err)
		}
		return io.NopCloser(xr), nil
	case Zstd:
		// Images are big: allow the largest windows zstd --long writes.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			return nil, fmt.Errorf("reading zstd data: %w", err)
		}
		return readCloser{Reader: zr, close: func() error { zr.Close(); return nil }}, nil
	case Gzip:
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("reading gzip data: %w", err)
		}
		return gr, nil
	case Zip:
		return nil, fmt.Errorf("a zip archive is not a stream: use OpenZipImage")
	}
	return nil, fmt.Errorf("unknown compression %q", f)
}

// OpenZipImage opens the one .img file of the zip archive r (size bytes)
// and returns its data, its name and its uncompressed size. An archive
// holding no .img or several is refused with its list of files.
func OpenZipImage(r io.ReaderAt, size int64) (io.ReadCloser, string, int64, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, "", 0, fmt.Errorf("reading zip archive: %w (the file is truncated or corrupt)", err)
	}
	zr.RegisterDecompressor(zip.Deflate, func(r io.Reader) io.ReadCloser { return flate.NewReader(r) })
	var imgs, names []string
	var img *zip.File
	for _, zf := range zr.File {
		names = append(names, zf.Name)
		if !zf.FileInfo().IsDir() && strings.EqualFold(filepath.Ext(zf.Name), ".img") {
			imgs = append(imgs, zf.Name)
			img = zf
		}
	}
	sort.Strings(names)
	if len(imgs) != 1 {
		return nil, "", 0, fmt.Errorf("zip archive must hold exactly one .img file, it holds %d (%s): unpack it and pass the image file",
			len(imgs), strings.Join(names, ", "))
	}
	rc, err := img.Open()
	if err != nil {
		return nil, "", 0, fmt.Errorf("opening %s in zip archive: %w", img.Name, err)
	}
	return rc, img.Name, int64(img.UncompressedSize64), nil
}

// OpenFile returns the decompressed bytes of the file at path, whose format
// is f, from the start. xz is decompressed by the xz program when it is
// installed (several times faster, multi-threaded), by the pure-Go decoder
// otherwise. Closing the stream stops the decompression; a truncated or
// corrupt file is an error from Read, never a short stream.
func OpenFile(ctx context.Context, path string, f Format) (io.ReadCloser, error) {
	if f == XZ {
		if prog, err := exec.LookPath("xz"); err == nil {
			return startProgram(ctx, prog, "-dc", "-T0", "--", path)
		}
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if f == Zip {
		fi, err := file.Stat()
		if err != nil {
			file.Close()
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		rc, _, _, err := OpenZipImage(file, fi.Size())
		if err != nil {
			file.Close()
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		return readCloser{Reader: rc, close: func() error { rc.Close(); return file.Close() }}, nil
	}
	if f == Raw {
		return file, nil
	}
	dr, err := NewReader(f, bufio.NewReaderSize(file, 1<<20))
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return readCloser{Reader: dr, close: func() error { dr.Close(); return file.Close() }}, nil
}

// Decompress decodes data of format f whole, refusing output larger than
// limit bytes.
func Decompress(f Format, data []byte, limit int64) ([]byte, error) {
	r, err := NewReader(f, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return out, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// programReader reads a decompressor's stdout and reports its exit status
// at the end of the stream, so a truncated or corrupt file is an error and
// not a short stream.
type programReader struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *bytes.Buffer
	done   bool
}

// NewXZProgramReader decodes the .xz data of r with the xz program, on
// every CPU (-T0): several times faster than the Go decoder. It returns
// nil, nil when xz is not installed. A truncated stream is an error
// wrapping ErrTruncated.
func NewXZProgramReader(ctx context.Context, r io.Reader) (io.ReadCloser, error) {
	prog, err := exec.LookPath("xz")
	if err != nil {
		return nil, nil
	}
	return startProgramStdin(ctx, r, prog, "-dc", "-T0")
}

// XZProgramCompressor returns a function that compresses a chunk into one
// .xz stream with the xz program, or nil when xz is not installed (looked
// up on $PATH at each call). The stream is what `xz -6 -T1` makes: preset
// 6 (8 MiB dictionary), a CRC64 check, single-threaded so one block; each
// call runs one xz process, which takes about 94 MiB. The program's LZMA2
// encoder makes files about 13% smaller than the pure-Go one's. Its output
// is the same on every run for a given xz version (single-threaded xz is
// deterministic; XZ_OPT and XZ_DEFAULTS are not passed to it), but another
// xz version may compress differently. When ctx ends, xz is killed and
// waited for, and the function returns ctx's error.
func XZProgramCompressor() func(ctx context.Context, p []byte) ([]byte, error) {
	prog, err := exec.LookPath("xz")
	if err != nil {
		return nil
	}
	env := xzEnv()
	return func(ctx context.Context, p []byte) ([]byte, error) {
		return runXZ(ctx, prog, env, p)
	}
}

// runXZ compresses p with the xz program prog run with environment env.
func runXZ(ctx context.Context, prog string, env []string, p []byte) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, "-z", "-c", "-6", "-T1", "--check=crc64")
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(p)
	out := bytes.NewBuffer(make([]byte, 0, len(p)/4))
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("compressing with %s: %w: %s", prog, err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// xzEnv is this process's environment without the variables that change
// what xz makes (XZ_OPT, XZ_DEFAULTS: options read before the command
// line's), so that the output depends only on the input and xz's version.
func xzEnv() []string {
	env := []string{} // not nil: nil would pass on the whole environment
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XZ_OPT=") && !strings.HasPrefix(kv, "XZ_DEFAULTS=") {
			env = append(env, kv)
		}
	}
	return env
}

func startProgram(ctx context.Context, prog string, args ...string) (io.ReadCloser, error) {
	return startProgramStdin(ctx, nil, prog, args...)
}

// startProgramStdin starts prog with stdin (nil = none) and returns its
// stdout.
func startProgramStdin(ctx context.Context, stdin io.Reader, prog string, args ...string) (io.ReadCloser, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdin = stdin
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
			msg := strings.TrimSpace(p.stderr.String())
			if strings.Contains(msg, "Unexpected end of input") { // xz's word for it
				return n, fmt.Errorf("decompressing: %s: %w: %w", msg, ErrTruncated, werr)
			}
			return n, fmt.Errorf("decompressing: %s: %w", msg, werr)
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

package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgbake/imgbake/image/compression"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/internal/progress"
)

// PrepareOptions tune PrepareBase.
type PrepareOptions struct {
	// Progress receives progress bars when it is a terminal; nil = none.
	Progress io.Writer
	// Log receives what PrepareBase does; nil = silent.
	Log *slog.Logger
	// SHA256, when set, is the hex sha256 the input file must have (as its
	// publisher lists it): anything else is refused as a corrupt download.
	// Without it, an input compressed without a checksum of its own
	// (zstd --no-check, xz -C none) is used with a warning that it cannot
	// be verified.
	SHA256 string
}

// ErrSHA256Mismatch is in PrepareBase's error when the input's sha256 is
// not PrepareOptions.SHA256.
var ErrSHA256Mismatch = errors.New("the download is corrupt or not the file you meant")

// Base is a raw (decompressed) base image ready to be copied.
type Base struct {
	// Path is the raw image: the input itself for a raw .img, else the
	// decompressed copy in the cache. It is never modified.
	Path string `json:"path"`
	// Input is the file PrepareBase was given (compressed or not).
	Input string `json:"input"`
	// InputSHA256 is the hex sha256 of the input file as given (compressed
	// or not).
	InputSHA256 string `json:"input_sha256"`
	// Size is the size of the raw image in bytes.
	Size int64 `json:"size"`
	// Format is the input's format: raw, xz, zst, gz or zip.
	Format compression.Format `json:"format"`
	// cells are the checksums of the image's cells (see cellSums), which
	// Build reuses for the cells a node leaves unchanged; nil = unknown.
	cells *cellSums
}

// PrepareBase makes input usable as a base image. A raw image is used in
// place (opened read-only, never modified). A .xz, .gz, .zip or .zst image is
// decompressed once into cacheDir, under the sha256 of the input's content,
// and later calls reuse that copy. The format is recognised from the
// content, not the file name. The checksums of the image's 1 MiB cells,
// which every build from this base reuses, are computed once and cached in
// cacheDir too.
func PrepareBase(ctx context.Context, input, cacheDir string, o PrepareOptions) (*Base, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if cacheDir != "" {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("creating cache directory: %w", err)
		}
		unlock, err := lockDir(cacheDir, o.Log, true)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	b, err := prepareBase(ctx, input, cacheDir, o)
	if err != nil {
		return nil, err
	}
	if err := b.attachCells(ctx, cacheDir, o); err != nil {
		return nil, err
	}
	if err := b.checkAllocation(ctx, cacheDir, o); err != nil {
		return nil, err
	}
	return b, nil
}

func prepareBase(ctx context.Context, input, cacheDir string, o PrepareOptions) (_ *Base, err error) {
	log := o.Log
	f, err := os.Open(input)
	if err != nil {
		return nil, fmt.Errorf("opening base image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening base image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("base image %s is not a regular file", input)
	}
	format, err := compression.DetectFile(f)
	if err != nil {
		return nil, fmt.Errorf("reading base image: %w", err)
	}

	sum, remember, err := inputSHA256(ctx, f, fi, input, cacheDir, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil { // a base that fails leaves nothing in the cache
			remember()
		}
	}()
	head := make([]byte, compression.HeadSize)
	n, _ := f.ReadAt(head, 0)
	if err := verifyInput(input, sum, format, head[:n], o); err != nil {
		return nil, err
	}

	if format == compression.Raw {
		abs, err := filepath.Abs(input)
		if err != nil {
			return nil, err
		}
		return &Base{Path: abs, Input: input, InputSHA256: sum, Size: fi.Size(), Format: format}, nil
	}
	if cacheDir == "" {
		return nil, errors.New("decompressing base image: no cache directory given")
	}
	cached := filepath.Join(cacheDir, sum+".img")
	if ci, err := os.Stat(cached); err == nil {
		log.Info("using cached base image", "input", input, "cache", cached)
		return &Base{Path: cached, Input: input, InputSHA256: sum, Size: ci.Size(), Format: format}, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	log.Info("decompressing base image", "input", input, "format", format, "cache", cached)
	start := time.Now()
	size, cells, err := decompressToCache(ctx, f, fi.Size(), format, cached, o)
	if err != nil {
		if errors.Is(err, compression.ErrTruncated) {
			return nil, fmt.Errorf("decompressing %s: this looks like a truncated download: the %s data of its %d bytes ends early; download it again (%w)",
				input, format, fi.Size(), err)
		}
		return nil, fmt.Errorf("decompressing %s: %w", input, err)
	}
	log.Debug("decompressed base image", "took", time.Since(start), "size", size)
	return &Base{Path: cached, Input: input, InputSHA256: sum, Size: size, Format: format, cells: cells}, nil
}

// inputSHA256 returns the sha256 of the input file f: the one remembered
// in cacheDir when f is the same file, unchanged, as when it was hashed
// (see fileIdentity), else hashed now. remember records a sum just
// computed; call it once the base is known to be good.
func inputSHA256(ctx context.Context, f *os.File, fi os.FileInfo, input, cacheDir string, o PrepareOptions) (sum string, remember func(), err error) {
	remember = func() {}
	id, known := identityOf(fi)
	if known && cacheDir != "" {
		if sum := rememberedSHA256(cacheDir, id); sum != "" {
			o.Log.Debug("base image unchanged since it was hashed: reusing its sha256", "input", input, "sha256", sum)
			return sum, remember, nil
		}
	}
	start := time.Now()
	bar := progress.New(o.Progress, "hashing "+filepath.Base(input), fi.Size())
	h := sha256.New()
	if _, err := io.Copy(progress.NewWriter(h, bar), io.NewSectionReader(ctxReaderAt{ctx, f}, 0, fi.Size())); err != nil {
		return "", nil, fmt.Errorf("hashing base image: %w", err)
	}
	bar.Done()
	sum = hex.EncodeToString(h.Sum(nil))
	o.Log.Debug("hashed base image", "took", time.Since(start), "size", fi.Size())
	if known && cacheDir != "" {
		remember = func() { rememberSHA256(cacheDir, f, id, start, sum, o.Log) }
	}
	return sum, remember, nil
}

// checkAllocation makes sure, once per base (a stamp in cacheDir records
// it), that the root filesystem's block bitmaps mark every block its files
// use: a build allocates from them, and a block wrongly marked free would
// be given to a new file over an existing one. A base Inspect cannot read
// is left to Inspect to explain.
func (b *Base) checkAllocation(ctx context.Context, cacheDir string, o PrepareOptions) error {
	stamp := ""
	if cacheDir != "" {
		stamp = filepath.Join(cacheDir, fmt.Sprintf("%s-%d.allocation-checked", b.InputSHA256, b.Size))
		if _, err := os.Stat(stamp); err == nil {
			return nil
		}
	}
	f, err := os.Open(b.Path)
	if err != nil {
		return fmt.Errorf("opening base image: %w", err)
	}
	defer f.Close()
	info, err := InspectReader(f, b.Size)
	if err != nil {
		return nil
	}
	rp, _ := info.Partition(info.RootPartition)
	root, err := ext4.Open(f, rp.Start, rp.Size, &ext4.Options{ReadOnly: true})
	if err != nil {
		return nil
	}
	defer root.Close()
	start := time.Now()
	if err := root.CheckAllocation(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("the base image's root filesystem (partition %d) is inconsistent: %w; run e2fsck -fy on a copy of the base image and build from the copy", rp.Number, err)
	}
	o.Log.Debug("checked the base's block allocation", "took", time.Since(start))
	if stamp != "" {
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			o.Log.Warn("cannot record the base's allocation check", "error", err)
		}
	}
	return nil
}

// verifyInput compares the input's sha256 with the one the user gave, or
// warns when nothing can verify it: compressed without a checksum, so a
// corrupt download would decompress to a corrupt image without an error.
func verifyInput(input, sum string, format compression.Format, head []byte, o PrepareOptions) error {
	if o.SHA256 != "" {
		if !strings.EqualFold(strings.TrimSpace(o.SHA256), sum) {
			return fmt.Errorf("base image %s has sha256 %s, not the expected %s: %w; download it again",
				input, sum, o.SHA256, ErrSHA256Mismatch)
		}
		return nil
	}
	if format != compression.Raw && !compression.Checked(format, head) {
		o.Log.Warn("the base image cannot be verified: it was compressed without a checksum (zstd --no-check or xz -C none), so a corrupt download would go unnoticed; compare its sha256 with the one its publisher lists and give it as base-sha256: in the cluster file (or --base-sha256)",
			"input", input, "sha256", sum)
	}
	return nil
}

// decompressToCache decompresses f into a temporary file in the directory
// of dst, then renames it to dst, and returns the image's size and the
// checksums of its cells, computed from the bytes as they are decompressed.
// On error nothing is left behind.
func decompressToCache(ctx context.Context, f *os.File, size int64, format compression.Format, dst string, o PrepareOptions) (n int64, cells *cellSums, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(dst), tempPattern(dst, ""))
	if err != nil {
		return 0, nil, fmt.Errorf("creating cache file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var ch *cellHasher
	switch format {
	case compression.XZ:
		n, ch, err = decompressXZ(ctx, f, size, tmp, o)
	case compression.Zip:
		n, ch, err = decompressZip(ctx, f, size, tmp, o)
	default:
		n, ch, err = decompressStream(ctx, f, size, format, tmp, o)
	}
	if err != nil {
		return 0, nil, err
	}
	if cells, err = ch.finish(ctx, tmp, n); err != nil {
		return 0, nil, fmt.Errorf("checksumming base image: %w", err)
	}
	// The cache copy is the source of every image built from this base: make
	// sure it is on disk before it gets its final name.
	syncStart := time.Now()
	if err := tmp.Sync(); err != nil {
		return 0, nil, fmt.Errorf("writing cache file: %w", err)
	}
	o.Log.Debug("synced cache file", "took", time.Since(syncStart))
	if err := tmp.Chmod(0o444); err != nil {
		return 0, nil, fmt.Errorf("writing cache file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, nil, fmt.Errorf("writing cache file: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return 0, nil, fmt.Errorf("storing cache file: %w", err)
	}
	return n, cells, nil
}

// decompressXZ decodes an .xz file with the xz program on every CPU when
// it is installed; else it decodes the blocks of a multi-block file in
// parallel in Go, falling back to the streaming reader for single-block
// files and layouts the parallel decoder does not handle.
func decompressXZ(ctx context.Context, f *os.File, size int64, out *os.File, o PrepareOptions) (int64, *cellHasher, error) {
	bar := progress.New(o.Progress, "decompressing", size)
	r, err := compression.NewXZProgramReader(ctx, progress.NewReader(io.NewSectionReader(f, 0, size), bar))
	if err != nil {
		return 0, nil, err
	}
	if r != nil {
		o.Log.Debug("decompressing with the xz program, on every CPU")
		defer bar.Done()
		defer r.Close()
		return copySparse(ctx, out, r)
	}
	start := func(total int64) (*progress.Bar, error) {
		if err := out.Truncate(total); err != nil {
			return nil, fmt.Errorf("writing cache file: %w", err)
		}
		return progress.New(o.Progress, "decompressing", total), nil
	}
	ch := newCellHasher(sparseAt{out})
	n, err := compression.DecodeXZBlocks(ctx, f, size, ch, start)
	if !errors.Is(err, compression.ErrXZSequential) {
		return n, ch, err
	}
	if err := out.Truncate(0); err != nil {
		return 0, nil, fmt.Errorf("writing cache file: %w", err)
	}
	return decompressStream(ctx, f, size, compression.XZ, out, o)
}

// decompressStream decodes a gz, zst or xz stream into out, leaving holes
// for zero runs.
func decompressStream(ctx context.Context, f *os.File, size int64, format compression.Format, out *os.File, o PrepareOptions) (int64, *cellHasher, error) {
	bar := progress.New(o.Progress, "decompressing", size)
	defer bar.Done()
	in := bufio.NewReaderSize(progress.NewReader(io.NewSectionReader(f, 0, size), bar), 1<<20)
	r, err := compression.NewReader(format, in)
	if err != nil {
		return 0, nil, err
	}
	defer r.Close()
	return copySparse(ctx, out, r)
}

// copySparse copies r into the empty file out, leaving holes for zero
// runs, and hashes its cells on the way.
func copySparse(ctx context.Context, out *os.File, r io.Reader) (int64, *cellHasher, error) {
	ch := newCellHasher(sparseAt{out})
	buf := make([]byte, cellSize)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
		// Whole cells at a time where the reader allows, so that a cell of
		// zeros is known without hashing it.
		n, err := fill(r, buf)
		if n > 0 {
			if _, werr := ch.WriteAt(buf[:n], off); werr != nil {
				return 0, nil, fmt.Errorf("writing cache file: %w", werr)
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, nil, fmt.Errorf("%w: %w", compression.ErrTruncated, err)
			}
			return 0, nil, fmt.Errorf("%w (the file is truncated or corrupt)", err)
		}
	}
	// Zeros at the end were not written: the size makes them a hole.
	if err := out.Truncate(off); err != nil {
		return 0, nil, fmt.Errorf("writing cache file: %w", err)
	}
	return off, ch, nil
}

// fill reads from r until buf is full or r fails, and returns r's own
// error (io.EOF at the end; io.ReadFull would turn a reader's
// io.ErrUnexpectedEOF, a truncated stream, into a short last read).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// decompressZip extracts the one .img file of a zip archive.
func decompressZip(ctx context.Context, f *os.File, size int64, out *os.File, o PrepareOptions) (int64, *cellHasher, error) {
	rc, name, usize, err := compression.OpenZipImage(f, size)
	if err != nil {
		return 0, nil, err
	}
	defer rc.Close()
	bar := progress.New(o.Progress, "decompressing", usize)
	defer bar.Done()
	n, ch, err := copySparse(ctx, out, progress.NewReader(rc, bar))
	if err != nil {
		return 0, nil, fmt.Errorf("extracting %s: %w", name, err)
	}
	return n, ch, nil
}

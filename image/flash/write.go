package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/internal/progress"
)

// chunkSize is the size of one write: large enough that the device and the
// kernel see big sequential requests, small enough to keep the pipeline of
// buffers (reading/decompressing overlaps writing) in a few tens of MiB.
const chunkSize = 4 << 20

// buffers is the number of chunk buffers in flight between the reader and
// the writer.
const buffers = 4

// Options control Write.
type Options struct {
	// Map is the image's block map; only its ranges are written. Nil
	// writes the whole image.
	Map *bmap.Map
	// NoVerify skips reading back the written ranges.
	NoVerify bool
	// Progress, if set, is called with the number of bytes just written,
	// and then with the number of bytes just read back.
	Progress func(phase string, n int64)
	// Log receives debug messages; nil is silent.
	Log *slog.Logger
}

// Result describes a finished write.
type Result struct {
	// Bytes is the number of bytes written.
	Bytes int64
	// ImageSize is the image's uncompressed size.
	ImageSize int64
	// Checks are the written ranges (the image's mapped ranges, or 4 MiB
	// pieces of a whole image) with the sha256 of the bytes written.
	Checks []Check
	// WriteTime is the time spent writing and syncing; VerifyTime the time
	// reading back (zero with NoVerify).
	WriteTime, VerifyTime time.Duration
	// Verified is true when every written range was read back and matched.
	Verified bool
}

// IncompleteError reports a write that stopped part way (an interrupt, a
// device error): the target holds part of the image and will not boot.
type IncompleteError struct {
	Path    string
	Written int64 // bytes written before the stop
	Err     error
}

// Error says what happened and that the card must be flashed again.
func (e *IncompleteError) Error() string {
	what, cause := "failed", ": "+e.Err.Error()
	if errors.Is(e.Err, context.Canceled) {
		what, cause = "was interrupted", ""
	}
	return fmt.Sprintf("writing %s %s after %s: it now holds an incomplete image that will not boot; flash it again before use%s",
		e.Path, what, progress.Bytes(e.Written), cause)
}

// Unwrap returns the cause (context.Canceled for an interrupt).
func (e *IncompleteError) Unwrap() error { return e.Err }

// MismatchError reports a target whose bytes differ from the image.
type MismatchError struct {
	Path string
	// Offset is the first differing byte when Exact, else the start of
	// the first range whose checksum differs.
	Offset int64
	Exact  bool
}

// Error names the target and the offset.
func (e *MismatchError) Error() string {
	if e.Exact {
		return fmt.Sprintf("%s differs from the image at byte offset %d (0x%x)", e.Path, e.Offset, e.Offset)
	}
	return fmt.Sprintf("%s differs from the image in the range starting at byte offset %d (0x%x)", e.Path, e.Offset, e.Offset)
}

type chunk struct {
	off int64
	buf []byte // full buffer, returned to the pool
	n   int
}

// Write writes the image src to the target dst: the ranges of o.Map, or
// the whole image without a map. Reading (and decompressing) runs in
// parallel with writing. It then syncs and, unless o.NoVerify, reads back
// every written range and compares its sha256 with the image's.
//
// A range whose image bytes do not match the checksum in the .bmap stops
// the write (the image or .bmap is corrupt). A cancelled ctx or a write
// error returns an *IncompleteError; a read-back mismatch a *MismatchError.
func Write(ctx context.Context, src *Source, dst *Target, o Options) (*Result, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := &Result{ImageSize: src.Size}
	var checks []Check
	if o.Map != nil {
		checks = ChecksFromBmap(o.Map)
		res.ImageSize = o.Map.ImageSize
		if src.Size >= 0 && src.Size != o.Map.ImageSize {
			return nil, fmt.Errorf("image %s is %d bytes but its .bmap says %d: the .bmap belongs to another image; rebuild it or flash with --no-bmap",
				src.Path, src.Size, o.Map.ImageSize)
		}
	}
	if res.ImageSize > dst.Size {
		return nil, fmt.Errorf("%s (%s) is smaller than the image (%s): use a larger card", dst.Path,
			progress.Bytes(dst.Size), progress.Bytes(res.ImageSize))
	}
	start := time.Now()
	w := &writer{src: src, dst: dst, o: o, log: log, checks: checks, whole: o.Map == nil}
	if err := w.run(ctx); err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = errors.Join(err, cerr)
		}
		if ctx.Err() != nil || w.written > 0 {
			return nil, &IncompleteError{Path: dst.Path, Written: w.written, Err: err}
		}
		return nil, err
	}
	if err := dst.Sync(); err != nil {
		return nil, &IncompleteError{Path: dst.Path, Written: w.written, Err: err}
	}
	res.Bytes, res.Checks = w.written, w.checks
	if src.Size < 0 && w.whole {
		res.ImageSize = w.size
	}
	res.WriteTime = time.Since(start)
	log.Debug("wrote image", "target", dst.Path, "bytes", w.written, "ranges", len(w.checks), "time", res.WriteTime)
	if o.NoVerify {
		return res, nil
	}
	start = time.Now()
	dst.dropCache()
	vo := VerifyOptions{Source: src, Name: dst.Path, Compare: true}
	if o.Progress != nil {
		vo.Progress = func(n int64) { o.Progress("verify", n) }
	}
	if err := Verify(ctx, dst, res.Checks, vo); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading %s back was interrupted: the image was written and synced but not checked; check it with imgbake verify: %w", dst.Path, err)
		}
		return nil, err
	}
	res.VerifyTime, res.Verified = time.Since(start), true
	return res, nil
}

// writer is the state of one Write.
type writer struct {
	src    *Source
	dst    *Target
	o      Options
	log    *slog.Logger
	checks []Check // with a map: its ranges; whole image: appended per chunk
	whole  bool
	size   int64 // whole image: bytes read so far

	written int64 // owned by the write goroutine until run returns

	// hashing state of the reader
	cur  int // index into checks of the range being hashed
	hash hash.Hash
}

func (w *writer) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	free := make(chan []byte, buffers)
	for range buffers {
		free <- alignedBuffer(chunkSize)
	}
	full := make(chan chunk, buffers)
	g.Go(func() error {
		defer close(full)
		return w.read(gctx, free, full)
	})
	g.Go(func() error { return w.write(gctx, free, full) })
	return g.Wait()
}

func (w *writer) write(ctx context.Context, free chan<- []byte, full <-chan chunk) error {
	for c := range full {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !w.dst.Regular && c.off+int64(c.n) > w.dst.Size {
			return fmt.Errorf("%s (%s) is smaller than the image: use a larger card", w.dst.Path, progress.Bytes(w.dst.Size))
		}
		if _, err := w.dst.WriteAt(c.buf[:c.n], c.off); err != nil {
			return fmt.Errorf("writing %s at offset %d: %w", w.dst.Path, c.off, err)
		}
		w.written += int64(c.n)
		if w.o.Progress != nil {
			w.o.Progress("write", int64(c.n))
		}
		free <- c.buf
	}
	return nil
}

// read fills buffers from the image and passes them to the writer.
func (w *writer) read(ctx context.Context, free chan []byte, full chan<- chunk) error {
	next := func(off int64, max int, fill func([]byte) (int, error)) (int, error) {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		n, err := fill(buf[:max])
		if n == 0 {
			free <- buf
			return 0, err
		}
		if herr := w.hashChunk(off, buf[:n]); herr != nil {
			return n, herr
		}
		select {
		case full <- chunk{off: off, buf: buf, n: n}:
		case <-ctx.Done():
			return n, ctx.Err()
		}
		return n, err
	}
	if ra := w.src.ReaderAt(); ra != nil {
		if w.whole {
			w.checks = wholeChecks(w.src.Size)
		}
		return w.readAt(ra, next)
	}
	r, err := w.src.Stream(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	if w.whole {
		return w.readWholeStream(r, next)
	}
	return w.readStream(r, next)
}

// nextFunc takes a free buffer, fills up to max bytes of it with fill, and
// passes the filled part (image offset off) to the writer.
type nextFunc func(off int64, max int, fill func([]byte) (int, error)) (int, error)

func (w *writer) readAt(ra io.ReaderAt, next nextFunc) error {
	for _, e := range extents(w.checks) {
		for off := e.off; off < e.end; off += chunkSize {
			_, err := next(off, int(min(chunkSize, e.end-off)), func(b []byte) (int, error) {
				if n, err := ra.ReadAt(b, off); n < len(b) {
					return 0, streamErr(w.src, off, err)
				}
				return len(b), nil
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *writer) readStream(r io.Reader, next nextFunc) error {
	var pos int64
	skip := make([]byte, 1<<20)
	for _, e := range extents(w.checks) {
		for pos < e.off {
			n := int(min(int64(len(skip)), e.off-pos))
			if _, err := io.ReadFull(r, skip[:n]); err != nil {
				return streamErr(w.src, pos, err)
			}
			pos += int64(n)
		}
		for off := e.off; off < e.end; off += chunkSize {
			_, err := next(off, int(min(chunkSize, e.end-off)), func(b []byte) (int, error) {
				if _, err := io.ReadFull(r, b); err != nil {
					return 0, streamErr(w.src, off, err)
				}
				return len(b), nil
			})
			if err != nil {
				return err
			}
			pos = min(off+chunkSize, e.end)
		}
	}
	return nil
}

func streamErr(src *Source, off int64, err error) error {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("reading %s: %w (it ends before offset %d); re-download or rebuild it", src.Path, errShort, off)
	}
	return fmt.Errorf("reading %s at offset %d: %w", src.Path, off, err)
}

// readWholeStream writes a compressed image without a map: every byte,
// until the end of the stream. Each chunk becomes one check.
func (w *writer) readWholeStream(r io.Reader, next nextFunc) error {
	for {
		n, err := next(w.size, chunkSize, func(b []byte) (int, error) {
			n, err := io.ReadFull(r, b)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return n, err
		})
		w.size += int64(n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s at offset %d: %w", w.src.Path, w.size, err)
		}
	}
}

// wholeChecks splits an image of size bytes into chunk-sized checks.
func wholeChecks(size int64) []Check {
	var out []Check
	for off := int64(0); off < size; off += chunkSize {
		out = append(out, Check{Offset: off, Length: min(chunkSize, size-off)})
	}
	return out
}

// hashChunk feeds the bytes of a chunk that fall into checked ranges to
// their hashes, and checks each range's sum against the .bmap's when the
// range is complete.
func (w *writer) hashChunk(off int64, b []byte) error {
	if w.whole && w.src.ReaderAt() == nil {
		// A whole stream of unknown size: each chunk is its own check.
		w.checks = append(w.checks, Check{Offset: off, Length: int64(len(b))})
	}
	end := off + int64(len(b))
	for w.cur < len(w.checks) {
		c := &w.checks[w.cur]
		lo, hi := max(off, c.Offset), min(end, c.End())
		if lo >= end {
			return nil
		}
		if w.hash == nil {
			w.hash = sha256.New()
		}
		if hi > lo {
			w.hash.Write(b[lo-off : hi-off])
		}
		if hi < c.End() {
			return nil
		}
		sum := hex.EncodeToString(w.hash.Sum(nil))
		w.hash = nil
		if c.SHA256 != "" && c.SHA256 != sum {
			return fmt.Errorf("image %s does not match its .bmap at byte offset %d (length %d): the image or the .bmap is corrupt; rebuild or re-download both",
				w.src.Path, c.Offset, c.Length)
		}
		c.SHA256 = sum
		w.cur++
	}
	return nil
}

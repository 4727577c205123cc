package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sync/errgroup"

	"github.com/imgbake/imgbake/image/compression"
	"github.com/imgbake/imgbake/internal/progress"
)

// Compressed images are cut into chunks compressed in parallel, each into
// its own .xz stream or zstd frame; xz, zstd, bmaptool and imgbake decode
// the concatenation as one file. An all-zero chunk (most of an image, and
// every hole) is compressed once and its bytes repeated, so holes are
// never read nor compressed.
const (
	// xz -T0 -6 cuts its input into 24 MiB blocks (3x its 8 MiB
	// dictionary). With the xz program, 24 MiB chunks make the same blocks
	// and so a file of the same size as xz -T0 -6 (297.92 MB for both on
	// bench/build.sh's base); 32 MiB chunks make it 0.4% smaller (296.62 MB)
	// in no more time, with fewer xz processes started.
	xzChunk   = 32 << 20
	zstdChunk = 8 << 20
	// cancelStep bounds the input a chunk compressor takes between two
	// checks for cancellation, so that Ctrl-C stops it within a second.
	cancelStep = 1 << 20
)

// chunkCompressor compresses one chunk; it stops when ctx ends.
type chunkCompressor func(ctx context.Context, p []byte) ([]byte, error)

// compressImage compresses the first size bytes of img into out (xz or
// zst) and returns the hex sha256 of the compressed file. out is closed.
func compressImage(ctx context.Context, img *os.File, size int64, format string, out *os.File, bar *progress.Bar) (string, error) {
	defer bar.Done()
	h := sha256.New()
	w := io.MultiWriter(out, h)
	var err error
	switch format {
	case "xz":
		err = compressChunks(ctx, img, size, xzChunk, xzCompressor(), w, bar)
	case "zst":
		err = compressChunks(ctx, img, size, zstdChunk, zstdCompressor(), w, bar)
	default:
		err = fmt.Errorf("unknown compression %q", format)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// compressChunks compresses chunk-sized pieces of img on every core and
// writes the results in order. The bar counts each piece when it is
// compressed.
func compressChunks(ctx context.Context, img *os.File, size, chunk int64, compress chunkCompressor, w io.Writer, bar *progress.Bar) error {
	n := int((size + chunk - 1) / chunk)
	workers := runtime.GOMAXPROCS(0)
	results := make([]chan []byte, n)
	for i := range results {
		results[i] = make(chan []byte, 1)
	}
	g, gctx := errgroup.WithContext(ctx)
	sem := make(chan struct{}, workers+1) // bounds chunks held in memory
	// busy bounds the chunks being compressed to one per CPU: a compressor
	// may run a program, which GOMAXPROCS does not hold back.
	busy := make(chan struct{}, workers)
	limited := func(p []byte) ([]byte, error) {
		select {
		case busy <- struct{}{}:
		case <-gctx.Done():
			return nil, gctx.Err()
		}
		defer func() { <-busy }()
		return compress(gctx, p)
	}
	zeroChunk := sync.OnceValues(func() ([]byte, error) { return limited(make([]byte, chunk)) })
	g.Go(func() error {
		for i := range n {
			select {
			case sem <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			g.Go(func() error {
				off := int64(i) * chunk
				length := min(chunk, size-off)
				var stream []byte
				var err error
				if start, _, ok := nextData(img, off, size); (!ok || start >= off+length) && length == chunk {
					stream, err = zeroChunk() // a hole: nothing to read
				} else {
					buf := make([]byte, length)
					if _, err := img.ReadAt(buf, off); err != nil {
						return fmt.Errorf("reading image: %w", err)
					}
					if length == chunk && isZero(buf) {
						stream, err = zeroChunk()
					} else {
						stream, err = limited(buf)
					}
				}
				if err != nil {
					return err
				}
				bar.Add(length)
				results[i] <- stream
				return nil
			})
		}
		return nil
	})
	g.Go(func() error {
		for i := range n {
			select {
			case b := <-results[i]:
				if _, err := w.Write(b); err != nil {
					return fmt.Errorf("writing compressed image: %w", err)
				}
				<-sem
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

// xzCompressor returns the xz program's chunk compressor when xz is
// installed, else xzCompress. On bench/build.sh's base the program's file
// is as small as xz -T0 -6's and takes about as long (296.6 MB in 171 to
// 185 s, xz -T0 -6 297.9 MB in 171 to 176 s, 2 CPUs); the Go encoder's is
// 15% larger (341.9 MB) in 159 s. Either makes the same bytes on every run
// on one machine; the program's depend on its version, so machines with
// different xz versions (or one without xz) may make different .xz files,
// and manifests, which record their sha256, of the same raw image.
func xzCompressor() chunkCompressor {
	if c := compression.XZProgramCompressor(); c != nil {
		return c
	}
	return xzCompress
}

// xzCompress compresses p into one .xz stream with a CRC64 check, with the
// pure-Go encoder.
func xzCompress(ctx context.Context, p []byte) ([]byte, error) {
	var out bytes.Buffer
	zw, err := xz.WriterConfig{CheckSum: xz.CRC64}.NewWriter(&out)
	if err != nil {
		return nil, err
	}
	for len(p) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k := min(len(p), cancelStep)
		if _, err := zw.Write(p[:k]); err != nil {
			return nil, err
		}
		p = p[k:]
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// zstdCompressor compresses a chunk into one zstd frame (level 3, with a
// content checksum and the chunk's size), cancelStep bytes at a time so
// that it stops soon after ctx ends, as xzCompress does. Each chunk being
// compressed takes an encoder of its own (single-threaded: the chunks are
// compressed in parallel); they are kept for the next chunks.
func zstdCompressor() chunkCompressor {
	var (
		mu   sync.Mutex
		free []*zstd.Encoder
	)
	return func(ctx context.Context, p []byte) ([]byte, error) {
		mu.Lock()
		var enc *zstd.Encoder
		if n := len(free); n > 0 {
			enc, free = free[n-1], free[:n-1]
		}
		mu.Unlock()
		if enc == nil {
			var err error
			if enc, err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true)); err != nil {
				return nil, err
			}
		}
		out := bytes.NewBuffer(make([]byte, 0, len(p)/4))
		enc.ResetContentSize(out, int64(len(p)))
		for len(p) > 0 {
			if err := ctx.Err(); err != nil {
				return nil, err // enc is dropped mid-frame
			}
			k := min(len(p), cancelStep)
			if _, err := enc.Write(p[:k]); err != nil {
				return nil, err
			}
			p = p[k:]
		}
		if err := enc.Close(); err != nil {
			return nil, err
		}
		mu.Lock()
		free = append(free, enc)
		mu.Unlock()
		return out.Bytes(), nil
	}
}

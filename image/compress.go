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

	"github.com/imgbake/imgbake/internal/progress"
)

// xzChunk is the size of the pieces compressed in parallel. Each becomes
// its own .xz stream; xz, bmaptool and this package's reader decode the
// concatenation as one file.
const xzChunk = 32 << 20

// compressImage compresses the first size bytes of img into out (xz or
// zst) and returns the hex sha256 of the compressed file. out is closed.
func compressImage(ctx context.Context, img *os.File, size int64, format string, out *os.File, bar *progress.Bar) (string, error) {
	defer bar.Done()
	h := sha256.New()
	w := io.MultiWriter(out, h)
	var err error
	switch format {
	case "xz":
		err = compressXZ(ctx, img, size, w, bar)
	case "zst":
		err = compressZstd(img, size, w, bar)
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

func compressZstd(img *os.File, size int64, w io.Writer, bar *progress.Bar) error {
	zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithEncoderCRC(true))
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(zw, progress.NewReader(io.NewSectionReader(img, 0, size), bar), make([]byte, 1<<20)); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

// compressXZ compresses xzChunk-sized pieces in parallel and writes the
// resulting streams in order.
func compressXZ(ctx context.Context, img *os.File, size int64, w io.Writer, bar *progress.Bar) error {
	n := int((size + xzChunk - 1) / xzChunk)
	workers := runtime.GOMAXPROCS(0)
	results := make([]chan []byte, n)
	for i := range results {
		results[i] = make(chan []byte, 1)
	}
	g, gctx := errgroup.WithContext(ctx)
	sem := make(chan struct{}, workers+1) // bounds chunks held in memory
	// Images are mostly unused space: compress an all-zero chunk once.
	zeroStream := sync.OnceValues(func() ([]byte, error) { return xzCompress(make([]byte, xzChunk)) })
	g.Go(func() error {
		for i := range n {
			select {
			case sem <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			g.Go(func() error {
				off := int64(i) * xzChunk
				buf := make([]byte, min(xzChunk, size-off))
				if _, err := img.ReadAt(buf, off); err != nil {
					return err
				}
				var stream []byte
				var err error
				if len(buf) == xzChunk && isZero(buf) {
					stream, err = zeroStream()
				} else {
					stream, err = xzCompress(buf)
				}
				if err != nil {
					return err
				}
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
					return err
				}
				bar.Add(min(xzChunk, size-int64(i)*xzChunk))
				<-sem
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

// xzCompress compresses p into one .xz stream with a CRC64 check.
func xzCompress(p []byte) ([]byte, error) {
	var out bytes.Buffer
	zw, err := xz.WriterConfig{CheckSum: xz.CRC64}.NewWriter(&out)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(p); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

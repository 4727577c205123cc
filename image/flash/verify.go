package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sync/errgroup"
)

// VerifyOptions control Verify.
type VerifyOptions struct {
	// Source, if set, is the image: on a mismatch it is compared byte by
	// byte with the target to report the exact first bad offset.
	Source *Source
	// Name is the target's name in errors.
	Name string
	// Progress, if set, is called with the number of bytes just read.
	Progress func(n int64)
	// Compare compares the bytes read with the image's own bytes instead
	// of hashing them, when Source is a raw image: a stronger check that
	// costs a memory compare instead of a sha256 per byte. Write uses it
	// for the read-back, after checking the image against the .bmap's
	// checksums while writing.
	Compare bool
}

// Verify reads every range of checks from r and compares its sha256 (or,
// with o.Compare and a raw o.Source, its bytes). The first range that
// differs gives a *MismatchError, with the exact offset of the first
// differing byte when o.Source is set.
func Verify(ctx context.Context, r io.ReaderAt, checks []Check, o VerifyOptions) error {
	type piece struct {
		check int // index into checks
		off   int64
		buf   []byte
		n     int
		last  bool // last piece of its check
	}
	var img io.ReaderAt
	if o.Compare && o.Source != nil {
		img = o.Source.ReaderAt()
	}
	var imgBuf []byte
	if img != nil {
		imgBuf = make([]byte, chunkSize)
	}
	free := make(chan []byte, buffers)
	for range buffers {
		free <- alignedBuffer(chunkSize)
	}
	full := make(chan piece, buffers)
	bad := -1
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // reader
		defer close(full)
		for i, c := range checks {
			for off := c.Offset; off < c.End(); off += chunkSize {
				var buf []byte
				select {
				case buf = <-free:
				case <-gctx.Done():
					return gctx.Err()
				}
				n := int(min(chunkSize, c.End()-off))
				if got, err := r.ReadAt(buf[:n], off); got < n {
					return fmt.Errorf("reading %s at offset %d: %w", o.Name, off+int64(got), orEOF(err))
				}
				select {
				case full <- piece{check: i, off: off, buf: buf, n: n, last: off+int64(n) >= c.End()}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	g.Go(func() error { // hasher or comparer
		h := sha256.New()
		for p := range full {
			if img != nil {
				if _, err := img.ReadAt(imgBuf[:p.n], p.off); err != nil {
					return fmt.Errorf("reading %s at offset %d: %w", o.Source.Path, p.off, err)
				}
				if !bytes.Equal(imgBuf[:p.n], p.buf[:p.n]) {
					bad = p.check
					return errMismatch
				}
			} else {
				h.Write(p.buf[:p.n])
			}
			free <- p.buf
			if o.Progress != nil {
				o.Progress(int64(p.n))
			}
			if !p.last || img != nil {
				continue
			}
			sum := hex.EncodeToString(h.Sum(nil))
			h.Reset()
			if want := checks[p.check].SHA256; want != "" && sum != want {
				bad = p.check
				return errMismatch
			}
		}
		return nil
	})
	err := g.Wait()
	if bad < 0 {
		return err
	}
	c := checks[bad]
	e := &MismatchError{Path: o.Name, Offset: c.Offset}
	if o.Source != nil {
		off, ferr := firstDiff(ctx, o.Source, r, c)
		if ferr != nil {
			return fmt.Errorf("%w (looking for the exact offset: %v)", e, ferr)
		}
		if off >= 0 {
			e.Offset, e.Exact = off, true
		}
	}
	return e
}

var errMismatch = errors.New("checksum mismatch")

func orEOF(err error) error {
	if err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

// firstDiff compares the bytes of range c of the image src and of r, and
// returns the offset of the first byte that differs, or -1.
func firstDiff(ctx context.Context, src *Source, r io.ReaderAt, c Check) (int64, error) {
	img := src.ReaderAt()
	if img == nil {
		stream, err := src.Stream(ctx)
		if err != nil {
			return -1, err
		}
		defer stream.Close()
		if _, err := io.CopyN(io.Discard, stream, c.Offset); err != nil {
			return -1, fmt.Errorf("reading %s: %w", src.Path, err)
		}
		img = &streamAt{r: stream, pos: c.Offset}
	}
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := c.Offset; off < c.End(); off += int64(len(a)) {
		n := int(min(int64(len(a)), c.End()-off))
		if _, err := img.ReadAt(a[:n], off); err != nil {
			return -1, fmt.Errorf("reading %s: %w", src.Path, err)
		}
		if _, err := r.ReadAt(b[:n], off); err != nil {
			return -1, fmt.Errorf("reading target: %w", err)
		}
		for i := range n {
			if a[i] != b[i] {
				return off + int64(i), nil
			}
		}
		if err := ctx.Err(); err != nil {
			return -1, err
		}
	}
	return -1, nil
}

// streamAt serves sequential ReadAt calls from a stream.
type streamAt struct {
	r   io.Reader
	pos int64
}

func (s *streamAt) ReadAt(p []byte, off int64) (int, error) {
	if off != s.pos {
		return 0, fmt.Errorf("internal error: non-sequential read at %d, stream at %d", off, s.pos)
	}
	n, err := io.ReadFull(s.r, p)
	s.pos += int64(n)
	return n, err
}

// OpenReadOnly opens a device or image file for verifying, dropping its
// cached pages so that a card is read from the medium.
func OpenReadOnly(path string) (*Target, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	t := &Target{Path: path, Regular: st.Mode().IsRegular(), f: f, rw: f, Size: st.Size(), readOnly: true}
	if !t.Regular {
		if t.Size, err = deviceSize(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("reading the size of %s: %w", path, err)
		}
	}
	t.dropCache()
	return t, nil
}

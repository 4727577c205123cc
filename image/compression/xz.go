package compression

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"runtime"

	"github.com/ulikunitz/xz/lzma"
	"golang.org/x/sync/errgroup"

	"github.com/imgbake/imgbake/internal/progress"
)

// The .xz container, as specified in "The .xz File Format" 1.1.0
// (https://tukaani.org/xz/xz-file-format.txt). Multi-threaded xz (xz -T0,
// the default since xz 5.4) cuts the data into independent blocks and
// records each block's sizes in the index at the end of the stream, so the
// blocks can be decoded in parallel and written at their offsets.

const (
	xzHeaderSize  = 12
	xzFilterLZMA2 = 0x21
)

// ErrXZSequential is returned by DecodeXZBlocks for an .xz file it cannot
// decode block by block (one block, or a layout the parallel decoder does
// not handle): decode it with NewReader instead.
var ErrXZSequential = errors.New("xz layout not supported by the parallel decoder")

// xzBlock is one block as listed in a stream's index.
type xzBlock struct {
	off      int64 // file offset of the block header
	unpadded int64 // header + compressed data + check, without padding
	size     int64 // uncompressed size
	outOff   int64 // offset of the block's data in the decompressed output
	check    byte  // check type of the block's stream
}

// xzCheckSize returns the size of the check field for check type id.
func xzCheckSize(id byte) int {
	if id == 0 {
		return 0
	}
	return 4 << ((id - 1) / 3)
}

// xzVarint decodes a multibyte integer from p, returning it and its length.
func xzVarint(p []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(p) && i < 9; i++ {
		b := p[i]
		if b == 0 && i > 0 {
			return 0, 0, errors.New("xz: non-minimal integer encoding")
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("xz: truncated integer")
}

// xzIndex reads the stream footers and indexes of the .xz file r (size
// bytes) from its end and returns every block in file order.
func xzIndex(r io.ReaderAt, size int64) ([]xzBlock, error) {
	var streams [][]xzBlock
	pos := size
	var buf [xzHeaderSize]byte
	for pos > 0 {
		// Stream padding: groups of four zero bytes between streams.
		for pos >= 4 {
			if _, err := r.ReadAt(buf[:4], pos-4); err != nil {
				return nil, err
			}
			if binary.LittleEndian.Uint32(buf[:4]) != 0 {
				break
			}
			pos -= 4
		}
		if pos < 2*xzHeaderSize {
			return nil, errors.New("xz: file too short for a stream header and footer")
		}
		blocks, start, err := xzStream(r, pos)
		if err != nil {
			return nil, err
		}
		streams = append(streams, blocks)
		pos = start
	}
	var all []xzBlock
	var out int64
	for i := len(streams) - 1; i >= 0; i-- {
		for _, b := range streams[i] {
			b.outOff = out
			out += b.size
			all = append(all, b)
		}
	}
	return all, nil
}

// xzStream parses the stream that ends at file offset end and returns its
// blocks and the offset where the stream starts.
func xzStream(r io.ReaderAt, end int64) ([]xzBlock, int64, error) {
	var foot [xzHeaderSize]byte
	if _, err := r.ReadAt(foot[:], end-xzHeaderSize); err != nil {
		return nil, 0, err
	}
	if foot[10] != 'Y' || foot[11] != 'Z' {
		return nil, 0, fmt.Errorf("xz: no stream footer at the end: %w", ErrTruncated)
	}
	if crc32.ChecksumIEEE(foot[4:10]) != binary.LittleEndian.Uint32(foot[:4]) {
		return nil, 0, errors.New("xz: stream footer checksum mismatch (the file is corrupt)")
	}
	check := foot[9] & 0x0f
	if foot[8] != 0 || foot[9]&0xf0 != 0 {
		return nil, 0, ErrXZSequential
	}
	indexSize := (int64(binary.LittleEndian.Uint32(foot[4:8])) + 1) * 4
	indexOff := end - xzHeaderSize - indexSize
	if indexOff < xzHeaderSize {
		return nil, 0, errors.New("xz: index size points before the start of the file (the file is corrupt)")
	}
	idx := make([]byte, indexSize)
	if _, err := r.ReadAt(idx, indexOff); err != nil {
		return nil, 0, err
	}
	recs, err := xzParseIndex(idx)
	if err != nil {
		return nil, 0, err
	}
	var total int64
	for _, rc := range recs {
		total += (rc[0] + 3) &^ 3
	}
	start := indexOff - total - xzHeaderSize
	if start < 0 {
		return nil, 0, errors.New("xz: index lists more data than the file holds (the file is corrupt)")
	}
	var head [xzHeaderSize]byte
	if _, err := r.ReadAt(head[:], start); err != nil {
		return nil, 0, err
	}
	if !bytes.Equal(head[:6], []byte{0xfd, '7', 'z', 'X', 'Z', 0}) ||
		crc32.ChecksumIEEE(head[6:8]) != binary.LittleEndian.Uint32(head[8:12]) ||
		!bytes.Equal(head[6:8], foot[8:10]) {
		return nil, 0, errors.New("xz: stream header does not match its footer (the file is corrupt)")
	}
	blocks := make([]xzBlock, len(recs))
	off := start + xzHeaderSize
	for i, rc := range recs {
		blocks[i] = xzBlock{off: off, unpadded: rc[0], size: rc[1], check: check}
		off += (rc[0] + 3) &^ 3
	}
	return blocks, start, nil
}

// xzParseIndex returns the (unpadded size, uncompressed size) records of
// an index, verifying its padding and CRC32.
func xzParseIndex(idx []byte) ([][2]int64, error) {
	bad := errors.New("xz: malformed index (the file is corrupt)")
	n := len(idx)
	if n < 8 || idx[0] != 0 {
		return nil, bad
	}
	if crc32.ChecksumIEEE(idx[:n-4]) != binary.LittleEndian.Uint32(idx[n-4:]) {
		return nil, errors.New("xz: index checksum mismatch (the file is corrupt)")
	}
	p := 1
	count, k, err := xzVarint(idx[p : n-4])
	if err != nil || count > uint64(n) {
		return nil, bad
	}
	p += k
	recs := make([][2]int64, 0, count)
	for range count {
		var rec [2]int64
		for j := range rec {
			v, k, err := xzVarint(idx[p : n-4])
			if err != nil || v > 1<<62 {
				return nil, bad
			}
			rec[j] = int64(v)
			p += k
		}
		recs = append(recs, rec)
	}
	for ; p < n-4; p++ {
		if idx[p] != 0 || n-4-p >= 4 {
			return nil, bad
		}
	}
	return recs, nil
}

// DecodeXZBlocks decodes the .xz file r (size bytes) into out, several
// blocks at a time, verifying every block's check, and returns the
// decompressed size. Before the first write it calls start with that size,
// which sizes out and returns the progress bar to count decompressed bytes
// on: out may then skip writing zeros (a file truncated to the size reads
// as zeros, so a sparse writer keeps holes there). A file of one block, or
// of a layout the parallel decoder does not handle, gives ErrXZSequential
// before anything is written, or after start when a block turns out to use
// such a layout (then the caller starts over).
func DecodeXZBlocks(ctx context.Context, r io.ReaderAt, size int64, out io.WriterAt, start func(total int64) (*progress.Bar, error)) (int64, error) {
	blocks, err := xzIndex(r, size)
	if err != nil {
		return 0, err
	}
	if len(blocks) < 2 {
		return 0, ErrXZSequential
	}
	last := blocks[len(blocks)-1]
	total := last.outOff + last.size
	bar, err := start(total)
	if err != nil {
		return 0, err
	}
	defer bar.Done()
	if err := xzDecodeParallel(ctx, r, blocks, out, bar); err != nil {
		return 0, err
	}
	return total, nil
}

// xzDecodeParallel decodes the blocks of the .xz file r into out (already
// truncated to the total size), several blocks at a time.
func xzDecodeParallel(ctx context.Context, r io.ReaderAt, blocks []xzBlock, out io.WriterAt, bar *progress.Bar) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range blocks {
		if gctx.Err() != nil {
			break
		}
		b := blocks[i]
		g.Go(func() error {
			if err := xzDecodeBlock(gctx, r, b, out, bar); err != nil {
				return fmt.Errorf("xz block %d (at byte %d): %w", i, b.off, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// xzBlockHeader parses a block header and returns its size, the LZMA2
// dictionary size and the sizes it records (-1 when absent).
func xzBlockHeader(r io.ReaderAt, off int64) (hsize int, dict int, csize, usize int64, err error) {
	var first [1]byte
	if _, err := r.ReadAt(first[:], off); err != nil {
		return 0, 0, 0, 0, err
	}
	if first[0] == 0 {
		return 0, 0, 0, 0, errors.New("index found where a block header belongs (the file is corrupt)")
	}
	hsize = (int(first[0]) + 1) * 4
	h := make([]byte, hsize)
	if _, err := r.ReadAt(h, off); err != nil {
		return 0, 0, 0, 0, err
	}
	if crc32.ChecksumIEEE(h[:hsize-4]) != binary.LittleEndian.Uint32(h[hsize-4:]) {
		return 0, 0, 0, 0, errors.New("block header checksum mismatch (the file is corrupt)")
	}
	flags := h[1]
	if flags&0x3c != 0 || flags&3 != 0 {
		return 0, 0, 0, 0, ErrXZSequential // reserved bits, or more than one filter
	}
	p, body := 2, h[:hsize-4]
	csize, usize = -1, -1
	for _, f := range []struct {
		bit byte
		v   *int64
	}{{0x40, &csize}, {0x80, &usize}} {
		if flags&f.bit != 0 {
			v, k, err := xzVarint(body[p:])
			if err != nil {
				return 0, 0, 0, 0, err
			}
			*f.v, p = int64(v), p+k
		}
	}
	if p+3 > len(body) || body[p] != xzFilterLZMA2 || body[p+1] != 1 {
		return 0, 0, 0, 0, ErrXZSequential
	}
	bits := body[p+2] & 0x3f
	if bits > 40 {
		return 0, 0, 0, 0, errors.New("invalid LZMA2 dictionary size")
	}
	d := int64(0xffffffff)
	if bits < 40 {
		d = int64(2|bits&1) << (bits/2 + 11)
	}
	return hsize, int(min(max(d, lzma.MinDictCap), lzma.MaxDictCap)), csize, usize, nil
}

// newXZCheck returns the hash for check type id, or nil for none.
func newXZCheck(id byte) (hash.Hash, error) {
	switch id {
	case 0:
		return nil, nil
	case 1:
		return crc32.NewIEEE(), nil
	case 4:
		return crc64.New(crc64.MakeTable(crc64.ECMA)), nil
	case 10:
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("unsupported check type %#x", id)
}

// xzDecodeBlock decodes one block and writes it at its output offset.
func xzDecodeBlock(ctx context.Context, r io.ReaderAt, b xzBlock, out io.WriterAt, bar *progress.Bar) error {
	hsize, dict, csize, usize, err := xzBlockHeader(r, b.off)
	if err != nil {
		return err
	}
	csz := b.unpadded - int64(hsize) - int64(xzCheckSize(b.check))
	if csz <= 0 || (csize >= 0 && csize != csz) || (usize >= 0 && usize != b.size) {
		return errors.New("block sizes disagree with the index (the file is corrupt)")
	}
	padded := (csz + 3) &^ 3
	data := make([]byte, padded+int64(xzCheckSize(b.check)))
	if _, err := r.ReadAt(data, b.off+int64(hsize)); err != nil {
		return fmt.Errorf("reading compressed data: %w", err)
	}
	if !bytes.Equal(data[csz:padded], make([]byte, padded-csz)) {
		return errors.New("non-zero block padding (the file is corrupt)")
	}
	sum, err := newXZCheck(b.check)
	if err != nil {
		return err
	}
	lr, err := lzma.Reader2Config{DictCap: min(dict, int(max(b.size, lzma.MinDictCap)))}.NewReader2(bytes.NewReader(data[:csz]))
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var done int64
	for done < b.size {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n, err := io.ReadFull(lr, buf[:min(int64(len(buf)), b.size-done)])
		if err != nil {
			return fmt.Errorf("decompressing: %w (the file is corrupt)", err)
		}
		if sum != nil {
			sum.Write(buf[:n])
		}
		if _, err := out.WriteAt(buf[:n], b.outOff+done); err != nil {
			return fmt.Errorf("writing decompressed data: %w", err)
		}
		done += int64(n)
		bar.Add(int64(n))
	}
	if n, err := lr.Read(buf[:1]); n != 0 || err != io.EOF {
		return errors.New("block holds more data than the index says (the file is corrupt)")
	}
	if sum != nil {
		var got []byte
		switch h := sum.(type) { // the CRCs are stored little-endian
		case hash.Hash32:
			got = binary.LittleEndian.AppendUint32(nil, h.Sum32())
		case hash.Hash64:
			got = binary.LittleEndian.AppendUint64(nil, h.Sum64())
		default:
			got = sum.Sum(nil)
		}
		if !bytes.Equal(got, data[padded:]) {
			return errors.New("block check mismatch: the decompressed data is corrupt")
		}
	}
	return nil
}

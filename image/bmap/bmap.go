// Package bmap reads and writes block maps in the format of bmap-tools
// (bmaptool, format version 2.0): an XML file listing the blocks of a disk
// image that hold data, with a checksum per range of blocks and one for the
// bmap file itself. A flasher writes only the listed blocks; everything else
// on the target is left as it is.
//
// Format reference: bmap-tools docs/README.md ("The bmap file format") and
// bmaptools/BmapCreate.py / BmapCopy.py, which this package interoperates
// with in both directions.
package bmap

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sort"

	"golang.org/x/sync/errgroup"
)

// Version is the bmap file format version this package writes.
const Version = "2.0"

// DefaultBlockSize is the block size of the maps imgbake writes, the same as
// bmaptool's.
const DefaultBlockSize = 4096

// Map is a parsed or computed block map.
type Map struct {
	// ImageSize is the size of the image in bytes. The last block may be
	// partial: its checksum covers only the bytes up to ImageSize.
	ImageSize int64
	// BlockSize is the size of one block in bytes.
	BlockSize int
	// ChecksumType names the hash of the range checksums and of the file
	// checksum: "sha256" (all maps this package writes) or "sha1" (old
	// bmaptool files).
	ChecksumType string
	// Ranges are the mapped block ranges, sorted and not overlapping.
	Ranges []Range
}

// Range is an inclusive range of mapped blocks.
type Range struct {
	First, Last int64 // block numbers, inclusive
	// SHA256 is the hex checksum of the range's bytes (clipped to the image
	// size), of type Map.ChecksumType; empty when the file gave none.
	SHA256 string
}

// ByteRange is a range of bytes of an image, such as a filesystem's
// allocated extent.
type ByteRange struct {
	Offset, Length int64
}

// End returns the offset just past the range.
func (r ByteRange) End() int64 { return r.Offset + r.Length }

// BlocksCount returns the number of blocks in the image, counting a partial
// last block.
func (m *Map) BlocksCount() int64 {
	bs := int64(m.BlockSize)
	return (m.ImageSize + bs - 1) / bs
}

// MappedBlocks returns the number of blocks covered by the ranges.
func (m *Map) MappedBlocks() int64 {
	var n int64
	for _, r := range m.Ranges {
		n += r.Last - r.First + 1
	}
	return n
}

// MappedBytes returns the number of image bytes covered by the ranges
// (the last block clipped to the image size).
func (m *Map) MappedBytes() int64 {
	var n int64
	for _, r := range m.Ranges {
		n += m.ByteRange(r).Length
	}
	return n
}

// ByteRange returns the bytes of the image that r covers, clipped to the
// image size.
func (m *Map) ByteRange(r Range) ByteRange {
	bs := int64(m.BlockSize)
	off := r.First * bs
	end := min((r.Last+1)*bs, m.ImageSize)
	return ByteRange{Offset: off, Length: end - off}
}

// ByteRanges returns the byte ranges of all mapped ranges, in order.
func (m *Map) ByteRanges() []ByteRange {
	out := make([]ByteRange, len(m.Ranges))
	for i, r := range m.Ranges {
		out[i] = m.ByteRange(r)
	}
	return out
}

// NewHash returns a new hash of the map's checksum type.
func (m *Map) NewHash() (hash.Hash, error) {
	return newHash(m.ChecksumType)
}

func newHash(typ string) (hash.Hash, error) {
	switch typ {
	case "sha256", "":
		return sha256.New(), nil
	case "sha1":
		return sha1.New(), nil
	}
	return nil, fmt.Errorf("unsupported bmap checksum type %q (re-create the bmap with a current bmaptool create, which uses sha256)", typ)
}

// Whole returns a map that covers the entire image as one range, without a
// checksum: what a flasher writes when an image has no .bmap.
func Whole(imageSize int64, blockSize int) *Map {
	m := &Map{ImageSize: imageSize, BlockSize: blockSize, ChecksumType: "sha256"}
	if n := m.BlocksCount(); n > 0 {
		m.Ranges = []Range{{First: 0, Last: n - 1}}
	}
	return m
}

// BlockRanges turns byte ranges into sorted, merged, inclusive block ranges
// of the given block size, clipped to an image of imageSize bytes. A block
// is mapped when any of its bytes is in a range. Ranges that touch or overlap
// after rounding are merged.
func BlockRanges(byteRanges []ByteRange, imageSize int64, blockSize int) []Range {
	bs := int64(blockSize)
	var rs []Range
	for _, br := range byteRanges {
		end := min(br.End(), imageSize)
		if br.Length <= 0 || br.Offset < 0 || br.Offset >= end {
			continue
		}
		rs = append(rs, Range{First: br.Offset / bs, Last: (end - 1) / bs})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].First < rs[j].First })
	var out []Range
	for _, r := range rs {
		if n := len(out); n > 0 && r.First <= out[n-1].Last+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// FromRanges computes the block map of the image img of imageSize bytes
// whose data lies in byteRanges (for example the partition table, the FAT
// and its allocated clusters, and the ext4 allocated blocks), reading the
// mapped ranges (in parallel; img must allow concurrent ReadAt, as
// *os.File does) to compute their sha256 checksums. blockSize 0 means
// DefaultBlockSize.
func FromRanges(img io.ReaderAt, imageSize int64, blockSize int, byteRanges []ByteRange) (*Map, error) {
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	if blockSize < 512 || blockSize&(blockSize-1) != 0 {
		return nil, fmt.Errorf("computing bmap: block size %d is not a power of two >= 512", blockSize)
	}
	m := &Map{ImageSize: imageSize, BlockSize: blockSize, ChecksumType: "sha256"}
	m.Ranges = BlockRanges(byteRanges, imageSize, blockSize)
	// Ranges are hashed in parallel, one buffer per worker.
	work := make(chan int)
	g, ctx := errgroup.WithContext(context.Background())
	for range runtime.GOMAXPROCS(0) {
		g.Go(func() error {
			buf := make([]byte, 1<<20)
			for i := range work {
				sum, err := m.checksum(img, m.Ranges[i], buf)
				if err != nil {
					return fmt.Errorf("computing bmap: %w", err)
				}
				m.Ranges[i].SHA256 = sum
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for i := range m.Ranges {
			select {
			case work <- i:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return m, nil
}

// Checksum reads the bytes of r from img and returns their hex checksum of
// the map's checksum type.
func (m *Map) Checksum(img io.ReaderAt, r Range) (string, error) {
	return m.checksum(img, r, make([]byte, 1<<20))
}

func (m *Map) checksum(img io.ReaderAt, r Range, buf []byte) (string, error) {
	h, err := m.NewHash()
	if err != nil {
		return "", err
	}
	br := m.ByteRange(r)
	sr := io.NewSectionReader(img, br.Offset, br.Length)
	n, err := io.CopyBuffer(h, sr, buf)
	if err != nil {
		return "", fmt.Errorf("reading blocks %d-%d: %w", r.First, r.Last, err)
	}
	if n != br.Length {
		return "", fmt.Errorf("reading blocks %d-%d: image ends at %d, before the range's end %d",
			r.First, r.Last, br.Offset+n, br.End())
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/imgbake/imgbake/internal/tempfile"
)

// cellSize is the granularity of the block maps Build writes: every mapped
// range is one aligned cell (or the part of it before the image's end), so
// that a node's range checksums are the base's except for the cells the
// node's writers changed. 1 MiB keeps a node's rehash small (a scattered
// metadata write costs one cell) and the maps short (one range per MiB of
// data).
const cellSize = 1 << 20

// cellSums are the sha256 checksums of every cell of an image, the last
// one clipped to the image's size.
type cellSums struct {
	size int64
	sums [][32]byte
}

func numCells(size int64) int { return int((size + cellSize - 1) / cellSize) }

// cellEnd returns the end of cell c in an image of size bytes.
func cellEnd(c int, size int64) int64 { return min(int64(c+1)*cellSize, size) }

// zeroCellSum is the checksum of a whole cell of zeros (a hole).
var zeroCellSum = sync.OnceValue(func() [32]byte { return sha256.Sum256(make([]byte, cellSize)) })

// hashCells computes the checksums of the cells idx of the first size bytes
// of f into out, in parallel. Cells that lie in a hole of f are not read.
func hashCells(ctx context.Context, f *os.File, size int64, idx []int, out [][32]byte, bar *progress.Bar) error {
	work := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	for range min(runtime.GOMAXPROCS(0), max(len(idx), 1)) {
		g.Go(func() error {
			buf := make([]byte, cellSize)
			for c := range work {
				off, end := int64(c)*cellSize, cellEnd(c, size)
				if start, _, ok := nextData(f, off, size); (!ok || start >= end) && end-off == cellSize {
					out[c] = zeroCellSum()
					bar.Add(end - off)
					continue
				}
				n, err := f.ReadAt(buf[:end-off], off)
				if err != nil && !(errors.Is(err, io.EOF) && int64(n) == end-off) {
					return fmt.Errorf("reading image at %d: %w", off, err)
				}
				out[c] = sha256.Sum256(buf[:n])
				bar.Add(end - off)
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for _, c := range idx {
			select {
			case work <- c:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

// computeCells hashes every cell of the image at path.
func computeCells(ctx context.Context, path string, bar *progress.Bar) (*cellSums, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	cs := &cellSums{size: fi.Size(), sums: make([][32]byte, numCells(fi.Size()))}
	idx := make([]int, len(cs.sums))
	for i := range idx {
		idx[i] = i
	}
	if err := hashCells(ctx, f, cs.size, idx, cs.sums, bar); err != nil {
		return nil, err
	}
	return cs, nil
}

// cellsMagic starts a cell checksum cache file; the cell size and the
// image size follow on the same line, then the checksums, 32 bytes each.
const cellsMagic = "imgbake-cells 1"

// loadCells reads a cache file written by saveCells for an image of size
// bytes; it fails on any other file.
func loadCells(path string, size int64) (*cellSums, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var magic1, magic2 string
	var cell, sz int64
	if _, err := fmt.Fscanf(r, "%s %s %d %d\n", &magic1, &magic2, &cell, &sz); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if magic1+" "+magic2 != cellsMagic || cell != cellSize || sz != size {
		return nil, fmt.Errorf("reading %s: not a cell checksum file for this image", path)
	}
	cs := &cellSums{size: size, sums: make([][32]byte, numCells(size))}
	for i := range cs.sums {
		if _, err := io.ReadFull(r, cs.sums[i][:]); err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("reading %s: trailing data", path)
	}
	return cs, nil
}

// saveCells writes cs to path under a temporary name, then renames it
// (tempfile.WriteFile), so that a reader finds the old file, the new one or
// none, never part of one.
func saveCells(path string, cs *cellSums) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%s %d %d\n", cellsMagic, cellSize, cs.size)
	for _, s := range cs.sums {
		buf.Write(s[:])
	}
	return tempfile.WriteFile(path, buf.Bytes(), 0o644)
}

// attachCells gives b the checksums of its cells: from the cache file in
// cacheDir named by the base's identity (its input's sha256 and its size),
// else computed once and stored there. Without a cache directory they are
// computed and kept in memory only.
func (b *Base) attachCells(ctx context.Context, cacheDir string, o PrepareOptions) error {
	var path string
	if cacheDir != "" {
		path = filepath.Join(cacheDir, fmt.Sprintf("%s-%d.cells", b.InputSHA256, b.Size))
		if cs, err := loadCells(path, b.Size); err == nil {
			b.cells = cs
			return nil
		}
	}
	if b.cells != nil { // computed while decompressing
		b.saveCells(path, cacheDir, o)
		return nil
	}
	start := time.Now()
	bar := progress.New(o.Progress, "checksumming base", b.Size)
	cs, err := computeCells(ctx, b.Path, bar)
	bar.Done()
	o.Log.Debug("computed the base's cell checksums", "took", time.Since(start))
	if err != nil {
		return fmt.Errorf("checksumming base image: %w", err)
	}
	if cs.size != b.Size {
		return fmt.Errorf("checksumming base image: %s is %d bytes, expected %d: it changed while in use", b.Path, cs.size, b.Size)
	}
	b.cells = cs
	b.saveCells(path, cacheDir, o)
	return nil
}

// saveCells stores b's cell checksums at path in cacheDir ("" = nowhere).
func (b *Base) saveCells(path, cacheDir string, o PrepareOptions) {
	if path == "" {
		return
	}
	if err := os.MkdirAll(cacheDir, 0o755); err == nil {
		if err := saveCells(path, b.cells); err != nil {
			o.Log.Warn("cannot cache the base's checksums", "error", err)
		}
	}
}

// trackedFile is the image Build writes: the writers (partition table,
// ext4, FAT) reach it through WriteAt, which records the cells they
// changed.
type trackedFile struct {
	*os.File
	mu    sync.Mutex
	dirty map[int]bool
}

func newTrackedFile(f *os.File) *trackedFile { return &trackedFile{File: f, dirty: map[int]bool{}} }

// WriteAt writes p at off and marks the cells it covers as changed.
func (t *trackedFile) WriteAt(p []byte, off int64) (int, error) {
	if len(p) > 0 {
		t.mu.Lock()
		for c := int(off / cellSize); int64(c)*cellSize < off+int64(len(p)); c++ {
			t.dirty[c] = true
		}
		t.mu.Unlock()
	}
	return t.File.WriteAt(p, off)
}

// blockMap returns the block map of the image img (size bytes): one range
// per cell that holds allocated data, with its checksum taken from the
// base's cells when the cell is unchanged and computed otherwise.
func blockMap(ctx context.Context, img *trackedFile, size int64, base *cellSums, pw io.Writer, log *slog.Logger) (*bmap.Map, error) {
	ranges, err := AllocatedRanges(img, size)
	if err != nil {
		return nil, fmt.Errorf("listing allocated ranges: %w", err)
	}
	var mapped []int
	for _, r := range ranges {
		first, last := int(r.Offset/cellSize), int((min(r.End(), size)-1)/cellSize)
		if n := len(mapped); n > 0 && mapped[n-1] >= first {
			first = mapped[n-1] + 1
		}
		for c := first; c <= last; c++ {
			mapped = append(mapped, c)
		}
	}
	sums := make([][32]byte, numCells(size))
	var todo []int
	for _, c := range mapped {
		if base != nil && c < len(base.sums) && cellEnd(c, base.size) == cellEnd(c, size) && !img.dirty[c] {
			sums[c] = base.sums[c]
			continue
		}
		todo = append(todo, c)
	}
	var n int64
	for _, c := range todo {
		n += cellEnd(c, size) - int64(c)*cellSize
	}
	bar := progress.New(pw, "checksumming", n)
	err = hashCells(ctx, img.File, size, todo, sums, bar)
	bar.Done()
	if err != nil {
		return nil, fmt.Errorf("computing bmap: %w", err)
	}
	log.Debug("computed block map", "cells", len(mapped), "rehashed_cells", len(todo), "rehashed_bytes", n)
	bs := int64(bmap.DefaultBlockSize)
	m := &bmap.Map{ImageSize: size, BlockSize: int(bs), ChecksumType: "sha256"}
	for _, c := range mapped {
		m.Ranges = append(m.Ranges, bmap.Range{First: int64(c) * cellSize / bs, Last: (cellEnd(c, size) - 1) / bs,
			SHA256: hex.EncodeToString(sums[c][:])})
	}
	return m, nil
}

package image

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

// TestCellHasherFromWrites: the cells of an image written piece by piece
// (like the blocks of an .xz file, whose boundaries are not cell
// boundaries) are hashed from the bytes as they are written; a cell whose
// bytes do not come in order (a block boundary cuts it and the later block
// came first) is read back. The blocks are written last first, and the
// file given to finish holds zeros, so a cell read back shows it.
func TestCellHasherFromWrites(t *testing.T) {
	size := int64(10<<20 + 12345)
	data := fixture.CompressibleData(int(size))
	const block = 3<<20 + 4097 // not cell-aligned
	var starts []int64
	cut := map[int]bool{}
	for start := int64(0); start < size; start += block {
		starts = append(starts, start)
		if start%cellSize != 0 {
			cut[int(start/cellSize)] = true
		}
	}
	writeBlock := func(ch *cellHasher, start int64) {
		for off, end := start, min(start+block, size); off < end; off += 65536 {
			if _, err := ch.WriteAt(data[off:min(off+65536, end)], off); err != nil {
				t.Error(err)
			}
		}
	}
	file := func(content []byte) *os.File {
		f, err := os.Create(filepath.Join(t.TempDir(), "img"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if _, err := f.Write(content); err != nil {
			t.Fatal(err)
		}
		return f
	}
	ch := newCellHasher(discardAt{})
	for i := len(starts) - 1; i >= 0; i-- {
		writeBlock(ch, starts[i])
	}
	cs, err := ch.finish(context.Background(), file(make([]byte, size)), size)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.sums) != numCells(size) {
		t.Fatalf("%d cells, want %d", len(cs.sums), numCells(size))
	}
	for c := range cs.sums {
		want := sha256.Sum256(data[int64(c)*cellSize : cellEnd(c, size)])
		if cut[c] {
			want = sha256.Sum256(make([]byte, cellEnd(c, size)-int64(c)*cellSize))
		}
		if cs.sums[c] != want {
			t.Errorf("cell %d (cut by a block boundary: %v): not the checksum of the bytes written", c, cut[c])
		}
	}
	if len(cut) == 0 || len(cut) >= numCells(size)/2 {
		t.Fatalf("test layout: %d cut cells", len(cut))
	}

	// Blocks written at once by several goroutines: every checksum is
	// that of the image.
	ch = newCellHasher(discardAt{})
	var wg sync.WaitGroup
	for _, s := range starts {
		wg.Go(func() { writeBlock(ch, s) })
	}
	wg.Wait()
	if cs, err = ch.finish(context.Background(), file(data), size); err != nil {
		t.Fatal(err)
	}
	for c := range cs.sums {
		if cs.sums[c] != sha256.Sum256(data[int64(c)*cellSize:cellEnd(c, size)]) {
			t.Errorf("concurrent writers: cell %d: wrong checksum", c)
		}
	}
}

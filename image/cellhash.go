package image

import (
	"context"
	"crypto/sha256"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/imgbake/imgbake/internal/progress"
)

// cellHasher computes the checksums of an image's cells from the bytes
// written to it, as they are written: decompressing a base computes its
// cells without reading the image back. Writes may come from several
// goroutines in any order (the blocks of an .xz file); each cell is hashed
// while its bytes arrive in order from its start, and a cell whose bytes
// arrive otherwise (one that straddles two .xz blocks) is read back from
// the file by finish.
type cellHasher struct {
	w    io.WriterAt // where the bytes go
	mu   sync.Mutex
	open map[int]*cellState
	done map[int][32]byte
	bad  map[int]bool
}

// cellState is a cell being hashed: next is the offset in the cell of the
// byte expected next; busy is set while one goroutine hashes into h.
type cellState struct {
	h    hash.Hash
	next int64
	busy bool
}

func newCellHasher(w io.WriterAt) *cellHasher {
	return &cellHasher{w: w, open: map[int]*cellState{}, done: map[int][32]byte{}, bad: map[int]bool{}}
}

// WriteAt writes p at off to the underlying writer, then hashes it into
// the cells it covers.
func (c *cellHasher) WriteAt(p []byte, off int64) (int, error) {
	n, err := c.w.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	for len(p) > 0 {
		cell := int(off / cellSize)
		in := off - int64(cell)*cellSize
		k := min(int64(len(p)), cellSize-in)
		c.add(cell, in, p[:k])
		p, off = p[k:], off+k
	}
	return n, nil
}

// add hashes seg, found at offset in of cell.
func (c *cellHasher) add(cell int, in int64, seg []byte) {
	c.mu.Lock()
	if c.bad[cell] {
		c.mu.Unlock()
		return
	}
	if _, ok := c.done[cell]; ok {
		c.fail(cell) // written twice
		c.mu.Unlock()
		return
	}
	st := c.open[cell]
	if st == nil && in == 0 && len(seg) == cellSize && isZero(seg) {
		c.done[cell] = zeroCellSum() // a whole cell of zeros, in one write
		c.mu.Unlock()
		return
	}
	if st == nil && in == 0 {
		st = &cellState{h: sha256.New()}
		c.open[cell] = st
	}
	if st == nil || st.busy || st.next != in {
		c.fail(cell)
		c.mu.Unlock()
		return
	}
	st.busy = true
	c.mu.Unlock()
	st.h.Write(seg)
	c.mu.Lock()
	st.busy = false
	st.next += int64(len(seg))
	if st.next == cellSize && c.open[cell] == st {
		var sum [32]byte
		st.h.Sum(sum[:0])
		c.done[cell] = sum
		delete(c.open, cell)
	}
	c.mu.Unlock()
}

// fail gives up hashing cell from the writes (mu held).
func (c *cellHasher) fail(cell int) {
	c.bad[cell] = true
	delete(c.open, cell)
	delete(c.done, cell)
}

// finish returns the checksums of the cells of f, size bytes, now complete:
// those hashed as they were written, and the others read back from f.
func (c *cellHasher) finish(ctx context.Context, f *os.File, size int64) (*cellSums, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := &cellSums{size: size, sums: make([][32]byte, numCells(size))}
	var todo []int
	for i := range cs.sums {
		if sum, ok := c.done[i]; ok && cellEnd(i, size) == int64(i+1)*cellSize {
			cs.sums[i] = sum
			continue
		}
		// The last cell, clipped to size, is complete when all its bytes came.
		if st := c.open[i]; st != nil && !st.busy && int64(i)*cellSize+st.next == cellEnd(i, size) && cellEnd(i, size) == size {
			st.h.Sum(cs.sums[i][:0])
			continue
		}
		todo = append(todo, i)
	}
	if err := hashCells(ctx, f, size, todo, cs.sums, progress.New(nil, "", 0)); err != nil {
		return nil, err
	}
	return cs, nil
}

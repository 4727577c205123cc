package ext4

import (
	"fmt"
	"sort"
)

// dxFrame is one index block on the path from the htree root to a leaf.
type dxFrame struct {
	pblk     uint64
	b        []byte
	root     bool
	countOff int
	idx      int // chosen entry
}

func (fr *dxFrame) count() int         { return int(le16(fr.b, fr.countOff+2)) }
func (fr *dxFrame) limit() int         { return int(le16(fr.b, fr.countOff)) }
func (fr *dxFrame) hash(i int) uint32  { return le32(fr.b, fr.countOff+8*i) }
func (fr *dxFrame) block(i int) uint32 { return le32(fr.b, fr.countOff+8*i+4) }
func (fr *dxFrame) setCount(n int)     { put16(fr.b, fr.countOff+2, uint16(n)) }
func (fr *dxFrame) entry(i int) []byte { return fr.b[fr.countOff+8*i : fr.countOff+8*i+8] }
func (f *FS) dxLimit(countOff int) int {
	n := (int(f.bs) - countOff) / 8
	if f.metaCsum {
		n--
	}
	return n
}

// sealDx sets the dx_tail checksum of an index block.
func (f *FS) sealDx(dir *inode, b []byte, root bool) {
	if !f.metaCsum {
		return
	}
	co := 8
	if root {
		co = 24 + int(b[24+5])
	}
	limit, count := int(le16(b, co)), int(le16(b, co+2))
	t := co + limit*8
	if t+8 > len(b) {
		return
	}
	put32(b, t, 0)
	c := crc32c(dir.seed(f), b[:co+count*8])
	put32(b, t+4, 0)
	put32(b, t+4, crc32c(c, b[t:t+8]))
}

func (f *FS) dxHashVersion(root []byte) uint8 {
	v := root[24+4]
	if v <= hashTea && f.unsigned {
		v += 3
	}
	return v
}

// dxProbe walks from the root to the leaf that should hold hash h.
func (f *FS) dxProbe(blocks []uint64, h uint32) ([]*dxFrame, error) {
	if len(blocks) < 2 {
		return nil, fmt.Errorf("htree directory with %d blocks: %w", len(blocks), ErrCorrupt)
	}
	rb, err := f.readBlock(blocks[0])
	if err != nil {
		return nil, err
	}
	levels := int(rb[24+6])
	if rb[24+5] != 8 || levels > 1 && !f.hasIncompat(incompatLargedir) || levels > 2 {
		return nil, fmt.Errorf("bad htree root: %w", ErrCorrupt)
	}
	frames := []*dxFrame{{pblk: blocks[0], b: rb, root: true, countOff: 32}}
	for {
		fr := frames[len(frames)-1]
		n := fr.count()
		if n == 0 || n > fr.limit() || fr.limit() > (len(fr.b)-fr.countOff)/8 {
			return nil, fmt.Errorf("bad htree index count: %w", ErrCorrupt)
		}
		fr.idx = sort.Search(n, func(i int) bool { return i > 0 && fr.hash(i) > h }) - 1
		if len(frames) > levels {
			return frames, nil
		}
		l := fr.block(fr.idx)
		if int(l) >= len(blocks) {
			return nil, fmt.Errorf("htree points past the directory end: %w", ErrCorrupt)
		}
		nb, err := f.readBlock(blocks[l])
		if err != nil {
			return nil, err
		}
		frames = append(frames, &dxFrame{pblk: blocks[l], b: nb, countOff: 8})
	}
}

type leafEnt struct {
	name string
	ino  uint32
	ft   uint8
	hash uint32
}

// dxInsert adds an entry to an htree directory, splitting a full leaf and growing the
// index (up to two levels) as needed.
func (f *FS) dxInsert(dir *inode, name string, ino uint32, ft uint8) error {
	for attempt := 0; attempt < 6; attempt++ {
		blocks, err := f.dirMap(dir)
		if err != nil {
			return err
		}
		if len(blocks) < 2 {
			return fmt.Errorf("htree directory with %d blocks: %w", len(blocks), ErrCorrupt)
		}
		rb, err := f.readBlock(blocks[0])
		if err != nil {
			return err
		}
		ver := f.dxHashVersion(rb)
		h := dirHash([]byte(name), ver, f.hashSeed)
		frames, err := f.dxProbe(blocks, h)
		if err != nil {
			return err
		}
		last := frames[len(frames)-1]
		leafL := last.block(last.idx)
		if int(leafL) >= len(blocks) || leafL == 0 {
			return fmt.Errorf("htree points past the directory end: %w", ErrCorrupt)
		}
		lb, err := f.readBlock(blocks[leafL])
		if err != nil {
			return err
		}
		ok, err := f.insertInBlock(lb, name, ino, ft)
		if err != nil {
			return err
		}
		if ok {
			f.sealLeaf(dir, lb)
			f.markDirty(blocks[leafL], lb)
			return nil
		}
		if last.count() >= last.limit() {
			if err := f.dxGrowIndex(dir, frames); err != nil {
				return err
			}
			continue
		}
		if err := f.dxSplitLeaf(dir, last, blocks[leafL], lb, ver); err != nil {
			return err
		}
	}
	return fmt.Errorf("inserting %q into htree: no room after splitting: %w", name, ErrNoSpace)
}

// dxSplitLeaf moves the upper half (by hash) of a full leaf into a new block and indexes it.
func (f *FS) dxSplitLeaf(dir *inode, fr *dxFrame, pblk uint64, lb []byte, ver uint8) error {
	ents, err := f.parseBlock(lb)
	if err != nil {
		return err
	}
	var live []leafEnt
	for _, e := range ents {
		if e.ino != 0 {
			live = append(live, leafEnt{string(e.name), e.ino, e.ft, dirHash(e.name, ver, f.hashSeed)})
		}
	}
	if len(live) < 2 {
		return fmt.Errorf("htree leaf too full to split: %w", ErrCorrupt)
	}
	sort.SliceStable(live, func(i, j int) bool {
		if live[i].hash != live[j].hash {
			return live[i].hash < live[j].hash
		}
		return live[i].name < live[j].name
	})
	total := 0
	for _, e := range live {
		total += recLen(len(e.name))
	}
	k, acc := 0, 0
	for k < len(live)-1 && acc+recLen(len(live[k].name)) <= total/2 {
		acc += recLen(len(live[k].name))
		k++
	}
	if k == 0 {
		k = 1
	}
	// prefer a split point between different hashes
	best := -1
	for d := 0; d < len(live) && best < 0; d++ {
		for _, c := range []int{k + d, k - d} {
			if c >= 1 && c < len(live) && live[c].hash != live[c-1].hash {
				best = c
				break
			}
		}
	}
	split := live[k].hash
	if best >= 0 {
		k, split = best, live[best].hash
	} else {
		split |= 1 // hash collision continues in the next block
	}
	newL, newP, err := f.appendDirBlock(dir)
	if err != nil {
		return err
	}
	lo, hi := f.emptyLeaf(dir), f.emptyLeaf(dir)
	f.fillLeaf(lo, live[:k])
	f.fillLeaf(hi, live[k:])
	f.sealLeaf(dir, lo)
	f.sealLeaf(dir, hi)
	copy(lb, lo)
	f.markDirty(pblk, lb)
	f.markDirty(newP, hi)
	// index entry after the chosen one
	f.insertDxEntry(dir, fr, split, newL)
	return nil
}

// insertDxEntry adds the index entry (hash, logical block) right after the
// entry fr points at, then reseals and writes back fr's node.
func (f *FS) insertDxEntry(dir *inode, fr *dxFrame, hash, blk uint32) {
	n := fr.count()
	at := fr.idx + 1
	copy(fr.b[fr.countOff+8*(at+1):fr.countOff+8*(n+1)], fr.b[fr.countOff+8*at:fr.countOff+8*n])
	put32(fr.b, fr.countOff+8*at, hash)
	put32(fr.b, fr.countOff+8*at+4, blk)
	fr.setCount(n + 1)
	f.sealDx(dir, fr.b, fr.root)
	f.markDirty(fr.pblk, fr.b)
}

// fillLeaf packs entries into an empty leaf block.
func (f *FS) fillLeaf(b []byte, ents []leafEnt) {
	end := len(b) - f.dirTail()
	off := 0
	for i, e := range ents {
		rl := recLen(len(e.name))
		if i == len(ents)-1 {
			rl = end - off
		}
		f.putDirent(b, off, rl, e.ino, e.name, e.ft)
		off += rl
	}
}

// dxGrowIndex makes room in the last (full) index block of frames: a full root gains a level,
// a full second-level node is split in two.
func (f *FS) dxGrowIndex(dir *inode, frames []*dxFrame) error {
	last := frames[len(frames)-1]
	if last.root {
		_, np, err := f.appendDirBlock(dir)
		if err != nil {
			return err
		}
		blocks, err := f.dirMap(dir)
		if err != nil {
			return err
		}
		nl := uint32(len(blocks) - 1)
		nb := f.newDxNode(last, 0, last.count())
		f.sealDx(dir, nb, false)
		f.markDirty(np, nb)
		put32(last.b, last.countOff+4, nl)
		last.setCount(1)
		last.b[24+6] = 1
		f.sealDx(dir, last.b, true)
		f.markDirty(last.pblk, last.b)
		return nil
	}
	parent := frames[len(frames)-2]
	if parent.count() >= parent.limit() || len(frames) > 2 {
		return fmt.Errorf("directory index is full (more than two htree levels needs largedir): %w", ErrNoSpace)
	}
	nl, np, err := f.appendDirBlock(dir)
	if err != nil {
		return err
	}
	n := last.count()
	half := n / 2
	nb := f.newDxNode(last, half, n)
	f.sealDx(dir, nb, false)
	f.markDirty(np, nb)
	splitHash := last.hash(half)
	last.setCount(half)
	f.sealDx(dir, last.b, false)
	f.markDirty(last.pblk, last.b)
	f.insertDxEntry(dir, parent, splitHash, nl)
	return nil
}

// newDxNode builds an index node holding entries [from, to) of fr.
func (f *FS) newDxNode(fr *dxFrame, from, to int) []byte {
	b := make([]byte, f.bs)
	put16(b, 4, uint16(f.bs))
	put16(b, 8, uint16(f.dxLimit(8)))
	put16(b, 10, uint16(to-from))
	for i := from; i < to; i++ {
		copy(b[8+8*(i-from):], fr.entry(i))
	}
	put32(b, 8+4, fr.block(from)) // first entry: only the block counts
	put16(b, 8, uint16(f.dxLimit(8)))
	put16(b, 10, uint16(to-from))
	return b
}

// dxLookup finds name through the htree index: only the leaf (and hash-collision
// continuation leaves) that can hold its hash are read.
func (f *FS) dxLookup(dir *inode, name string) (uint32, bool, error) {
	blocks, err := f.dirMap(dir)
	if err != nil || len(blocks) == 0 {
		return 0, false, fmt.Errorf("htree lookup: %w", ErrCorrupt)
	}
	rb, err := f.readBlock(blocks[0])
	if err != nil {
		return 0, false, err
	}
	h := dirHash([]byte(name), f.dxHashVersion(rb), f.hashSeed)
	frames, err := f.dxProbe(blocks, h)
	if err != nil {
		return 0, false, err
	}
	last := frames[len(frames)-1]
	for i := last.idx; i < last.count(); i++ {
		if i > last.idx && last.hash(i) != h|1 {
			break // the next leaf only continues this hash if its index has the collision bit
		}
		l := last.block(i)
		if int(l) >= len(blocks) {
			return 0, false, fmt.Errorf("htree points past the directory end: %w", ErrCorrupt)
		}
		b, err := f.readBlock(blocks[l])
		if err != nil {
			return 0, false, err
		}
		ents, err := f.parseBlock(b)
		if err != nil {
			return 0, false, err
		}
		for _, e := range ents {
			if e.ino != 0 && string(e.name) == name {
				return e.ino, true, nil
			}
		}
	}
	return 0, false, nil
}

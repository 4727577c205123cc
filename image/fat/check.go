package fat

import (
	"bytes"
	"fmt"
	"strings"
)

// Check verifies the filesystem's structure the way fsck.vfat -n does for
// what an edit relies on, and returns an error wrapping ErrCorrupt naming
// the first damage found: FAT copies that differ, FAT entries pointing
// outside the partition, cluster chains that loop, cross or are shorter
// than their file, directory entries with impossible names or clusters,
// and allocated clusters no file owns. An edit of a filesystem that passes
// Check keeps it consistent.
func (f *FS) Check() error {
	if err := f.checkCopies(); err != nil {
		return err
	}
	for c := uint32(2); c < uint32(len(f.fat)); c++ {
		v := f.fat[c]
		if v != 0 && !f.isEOC(v) && v != f.eoc()-8 && (v < 2 || v >= uint32(len(f.fat))) {
			return fmt.Errorf("%w: FAT entry of cluster %d points to cluster %d, outside the partition", ErrCorrupt, c, v)
		}
	}
	owner := make([]string, len(f.fat))
	claim := func(path string, start uint32) ([]uint32, error) {
		cs, err := f.chain(start)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: bad cluster chain", ErrCorrupt, path)
		}
		for _, c := range cs {
			if f.fat[c] == 0 {
				return nil, fmt.Errorf("%w: %s uses cluster %d, which the FAT marks free", ErrCorrupt, path, c)
			}
			if owner[c] != "" {
				return nil, fmt.Errorf("%w: %s and %s share cluster %d", ErrCorrupt, owner[c], path, c)
			}
			owner[c] = path
		}
		return cs, nil
	}
	root, err := f.rootDir()
	if err != nil {
		return fmt.Errorf("reading the root directory: %w", err)
	}
	if f.typ == 32 {
		if _, err := claim("/", f.rootClus); err != nil {
			return err
		}
	}
	if err := f.checkDir("/", root, claim, 0); err != nil {
		return err
	}
	for c := uint32(2); c < uint32(len(f.fat)); c++ {
		if v := f.fat[c]; v != 0 && v != f.eoc()-8 && owner[c] == "" {
			return fmt.Errorf("%w: cluster %d is allocated but belongs to no file", ErrCorrupt, c)
		}
	}
	return nil
}

// checkCopies compares every copy of the FAT with the first.
func (f *FS) checkCopies() error {
	first := make([]byte, f.fatSize*f.bps)
	if _, err := f.r.ReadAt(first, f.fatOff(0)); err != nil {
		return fmt.Errorf("reading FAT: %w", err)
	}
	other := make([]byte, len(first))
	for i := int64(1); i < f.nfats; i++ {
		if _, err := f.r.ReadAt(other, f.fatOff(i)); err != nil {
			return fmt.Errorf("reading FAT copy %d: %w", i+1, err)
		}
		if !bytes.Equal(first, other) {
			return fmt.Errorf("%w: the %d copies of the FAT differ", ErrCorrupt, f.nfats)
		}
	}
	return nil
}

// maxDepth bounds directory nesting, as a directory loop would otherwise
// never end (a loop also shows as a shared cluster).
const maxDepth = 32

// checkDir checks the entries of directory d (at path p) and, recursively,
// its subdirectories.
func (f *FS) checkDir(p string, d *dir, claim func(string, uint32) ([]uint32, error), depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: directories nested deeper than %d at %s", ErrCorrupt, maxDepth, p)
	}
	for i := 0; i*entSize < len(d.data); i++ {
		e := d.data[i*entSize:][:entSize]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xe5 || e[11]&0x3f == attrLFN || e[11]&attrVolume != 0 && e[11]&attrDir == 0 {
			continue
		}
		if e[11]&0xc0 != 0 || e[11]&attrVolume != 0 {
			return fmt.Errorf("%w: %s: directory entry %d has invalid attributes %#x", ErrCorrupt, p, i, e[11])
		}
		for j, c := range e[:11] {
			if c < 0x20 && !(j == 0 && c == 0x05) || strings.IndexByte("\"*+,/:;<=>?\\[]|", c) >= 0 {
				return fmt.Errorf("%w: %s: directory entry %d has an invalid name %q", ErrCorrupt, p, i, e[:11])
			}
		}
	}
	for _, e := range d.entries() {
		sub := strings.TrimSuffix(p, "/") + "/" + e.Name
		if e.clus == 0 {
			if e.IsDir || e.Size != 0 {
				return fmt.Errorf("%w: %s has no clusters", ErrCorrupt, sub)
			}
			continue
		}
		if e.clus < 2 || e.clus >= uint32(len(f.fat)) {
			return fmt.Errorf("%w: %s starts at cluster %d, outside the partition", ErrCorrupt, sub, e.clus)
		}
		cs, err := claim(sub, e.clus)
		if err != nil {
			return err
		}
		if !e.IsDir {
			if want := (e.Size + f.ClusterSize() - 1) / f.ClusterSize(); int64(len(cs)) != want {
				return fmt.Errorf("%w: %s is %d bytes but has %d clusters", ErrCorrupt, sub, e.Size, len(cs))
			}
			continue
		}
		sd, err := f.loadDir(e.clus)
		if err != nil {
			return err
		}
		if err := f.checkDir(sub, sd, claim, depth+1); err != nil {
			return err
		}
	}
	return nil
}

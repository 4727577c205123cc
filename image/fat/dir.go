package fat

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"strings"
	"time"
	"unicode/utf16"
)

const (
	attrReadOnly = 0x01
	attrVolume   = 0x08
	attrDir      = 0x10
	attrArchive  = 0x20
	attrLFN      = 0x0f
	entSize      = 32
)

// DirEntry is one entry of a directory.
type DirEntry struct {
	Name  string // long name when there is one, else the 8.3 name
	IsDir bool
	Size  int64
	clus  uint32
	first int // slot index of the first (LFN) entry
	slot  int // slot index of the short entry
}

// dir is a directory's raw entries and where they live.
type dir struct {
	clus uint32 // first cluster; 0 = the FAT12/16 fixed root directory
	data []byte
}

func (f *FS) rootDir() (*dir, error) {
	if f.typ == 32 {
		return f.loadDir(f.rootClus)
	}
	d := &dir{data: make([]byte, f.rootEnts*entSize)}
	_, err := f.r.ReadAt(d.data, f.off+f.dataOff-int64(len(d.data)))
	return d, err
}

func (f *FS) loadDir(c uint32) (*dir, error) {
	cs, err := f.chain(c)
	if err != nil {
		return nil, err
	}
	d := &dir{clus: c, data: make([]byte, int64(len(cs))*f.ClusterSize())}
	for i, c := range cs {
		if _, err := f.r.ReadAt(d.data[int64(i)*f.ClusterSize():][:f.ClusterSize()], f.clusterOff(c)); err != nil {
			return nil, fmt.Errorf("reading directory: %w", err)
		}
	}
	return d, nil
}

func (f *FS) storeDir(d *dir) error {
	if d.clus == 0 && f.typ != 32 {
		_, err := f.w.WriteAt(d.data, f.off+f.dataOff-int64(len(d.data)))
		return err
	}
	cs, err := f.chain(d.clus)
	if err != nil {
		return err
	}
	for i, c := range cs {
		if _, err := f.w.WriteAt(d.data[int64(i)*f.ClusterSize():][:f.ClusterSize()], f.clusterOff(c)); err != nil {
			return fmt.Errorf("writing directory: %w", err)
		}
	}
	return nil
}

// entries lists the directory's live entries, long names resolved.
func (d *dir) entries() []DirEntry {
	var out []DirEntry
	var lfn []uint16
	lfnStart, lfnSum := -1, byte(0)
	for i := 0; i*entSize < len(d.data); i++ {
		e := d.data[i*entSize:][:entSize]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xe5 {
			lfn, lfnStart = nil, -1
			continue
		}
		if e[11]&0x3f == attrLFN {
			if e[0]&0x40 != 0 {
				lfn, lfnStart, lfnSum = nil, i, e[13]
			}
			var part []uint16
			for _, o := range []int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
				part = append(part, binary.LittleEndian.Uint16(e[o:]))
			}
			lfn = append(part, lfn...)
			continue
		}
		if e[11]&attrVolume != 0 {
			lfn, lfnStart = nil, -1
			continue
		}
		de := DirEntry{
			IsDir: e[11]&attrDir != 0,
			Size:  int64(binary.LittleEndian.Uint32(e[28:])),
			clus:  uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:])),
			first: i, slot: i,
			Name: shortName(e),
		}
		if lfnStart >= 0 && lfnSum == checksum(e[:11]) {
			de.first = lfnStart
			de.Name = decodeLFN(lfn)
		}
		lfn, lfnStart = nil, -1
		if de.Name != "." && de.Name != ".." {
			out = append(out, de)
		}
	}
	return out
}

func decodeLFN(u []uint16) string {
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}

// shortName renders an 8.3 entry name, applying the NT lower-case flags.
func shortName(e []byte) string {
	base := strings.TrimRight(string(e[0:8]), " ")
	ext := strings.TrimRight(string(e[8:11]), " ")
	if base != "" && base[0] == 0x05 {
		base = "\xe5" + base[1:]
	}
	if e[12]&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if e[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext == "" {
		return base
	}
	return base + "." + ext
}

func checksum(name []byte) byte {
	var s byte
	for _, c := range name {
		s = (s&1)<<7 + s>>1 + c
	}
	return s
}

func (d *dir) find(name string) (DirEntry, bool) {
	for _, e := range d.entries() {
		if strings.EqualFold(e.Name, name) {
			return e, true
		}
	}
	return DirEntry{}, false
}

// walk returns the directory holding the last element of p, and that
// element's name.
func (f *FS) walk(p string, create bool) (*dir, string, error) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) == 0 || parts[0] == "" {
		return nil, "", fmt.Errorf("%q: not a file path", p)
	}
	d, err := f.rootDir()
	if err != nil {
		return nil, "", err
	}
	for _, el := range parts[:len(parts)-1] {
		e, ok := d.find(el)
		if !ok && create {
			if e, err = f.mkdir(d, el); err != nil {
				return nil, "", err
			}
		} else if !ok {
			return nil, "", fmt.Errorf("%s: %w", p, fs.ErrNotExist)
		} else if !e.IsDir {
			return nil, "", fmt.Errorf("%s: %s is not a directory", p, el)
		}
		if d, err = f.loadDir(e.clus); err != nil {
			return nil, "", err
		}
	}
	return d, parts[len(parts)-1], nil
}

// ReadDir lists the directory p ("/" for the root).
func (f *FS) ReadDir(p string) ([]DirEntry, error) {
	if strings.Trim(p, "/") == "" {
		d, err := f.rootDir()
		if err != nil {
			return nil, err
		}
		return d.entries(), nil
	}
	d, name, err := f.walk(p, false)
	if err != nil {
		return nil, err
	}
	e, ok := d.find(name)
	if !ok || !e.IsDir {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	sub, err := f.loadDir(e.clus)
	if err != nil {
		return nil, err
	}
	return sub.entries(), nil
}

// ReadFile returns the content of the file p; fs.ErrNotExist if missing.
func (f *FS) ReadFile(p string) ([]byte, error) {
	file, err := f.Open(p)
	if err != nil {
		return nil, err
	}
	out := make([]byte, file.Size())
	if _, err := file.ReadAt(out, 0); err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return out, nil
}

// Exists reports whether p names a file or directory.
func (f *FS) Exists(p string) bool {
	d, name, err := f.walk(p, false)
	if err != nil {
		return false
	}
	_, ok := d.find(name)
	return ok
}

// WriteFile creates or replaces the file p with data, creating missing
// parent directories.
func (f *FS) WriteFile(p string, data []byte) error {
	if f.w == nil {
		return ErrReadOnly
	}
	d, name, err := f.walk(p, true)
	if err != nil {
		return err
	}
	n := (int64(len(data)) + f.ClusterSize() - 1) / f.ClusterSize()
	if e, ok := d.find(name); ok {
		if e.IsDir {
			return fmt.Errorf("%s: is a directory", p)
		}
		if err := f.free(e.clus); err != nil {
			return err
		}
		f.clearSlots(d, e)
	}
	var cs []uint32
	if n > 0 {
		if cs, err = f.alloc(int(n)); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	for i, c := range cs {
		chunk := data[int64(i)*f.ClusterSize() : min(int64(len(data)), int64(i+1)*f.ClusterSize())]
		if _, err := f.w.WriteAt(chunk, f.clusterOff(c)); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	first := uint32(0)
	if len(cs) > 0 {
		first = cs[0]
	}
	if err := f.addEntry(d, name, attrArchive, first, uint32(len(data))); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return f.Sync()
}

// MkdirAll creates the directory p and its missing parents.
func (f *FS) MkdirAll(p string) error {
	if f.w == nil {
		return ErrReadOnly
	}
	if strings.Trim(p, "/") == "" {
		return nil
	}
	d, name, err := f.walk(p, true)
	if err != nil {
		return err
	}
	if e, ok := d.find(name); ok {
		if !e.IsDir {
			return fmt.Errorf("%s: exists and is not a directory", p)
		}
		return nil
	}
	if _, err := f.mkdir(d, name); err != nil {
		return err
	}
	return f.Sync()
}

// Remove deletes the file p (or empty directory); a missing p is not an
// error.
func (f *FS) Remove(p string) error {
	if f.w == nil {
		return ErrReadOnly
	}
	d, name, err := f.walk(p, false)
	if err != nil {
		return nil
	}
	e, ok := d.find(name)
	if !ok {
		return nil
	}
	if e.IsDir {
		sub, err := f.loadDir(e.clus)
		if err != nil {
			return err
		}
		if len(sub.entries()) > 0 {
			return fmt.Errorf("removing %s: directory not empty", p)
		}
	}
	if err := f.free(e.clus); err != nil {
		return err
	}
	f.clearSlots(d, e)
	if err := f.storeDir(d); err != nil {
		return err
	}
	return f.Sync()
}

func (f *FS) clearSlots(d *dir, e DirEntry) {
	for i := e.first; i <= e.slot; i++ {
		d.data[i*entSize] = 0xe5
	}
}

// mkdir creates the subdirectory name in d with its "." and ".." entries.
func (f *FS) mkdir(d *dir, name string) (DirEntry, error) {
	cs, err := f.alloc(1)
	if err != nil {
		return DirEntry{}, fmt.Errorf("creating directory %s: %w", name, err)
	}
	blk := make([]byte, f.ClusterSize())
	parent := d.clus
	if parent == f.rootClus {
		parent = 0 // ".." of a root child points to cluster 0
	}
	f.putEntry(blk[0:], []byte(".          "), 0, attrDir, cs[0], 0)
	f.putEntry(blk[entSize:], []byte("..         "), 0, attrDir, parent, 0)
	if _, err := f.w.WriteAt(blk, f.clusterOff(cs[0])); err != nil {
		return DirEntry{}, err
	}
	if err := f.addEntry(d, name, attrDir, cs[0], 0); err != nil {
		return DirEntry{}, err
	}
	e, _ := d.find(name)
	return e, nil
}

// putEntry fills a 32-byte short entry stamped with f.now.
func (f *FS) putEntry(e []byte, name83 []byte, nt byte, attr byte, clus, size uint32) {
	clear(e[:entSize])
	copy(e[0:11], name83)
	e[11], e[12] = attr, nt
	date, tm := fatTime(f.now)
	binary.LittleEndian.PutUint16(e[14:], tm)
	binary.LittleEndian.PutUint16(e[16:], date)
	binary.LittleEndian.PutUint16(e[18:], date)
	binary.LittleEndian.PutUint16(e[20:], uint16(clus>>16))
	binary.LittleEndian.PutUint16(e[22:], tm)
	binary.LittleEndian.PutUint16(e[24:], date)
	binary.LittleEndian.PutUint16(e[26:], uint16(clus))
	binary.LittleEndian.PutUint32(e[28:], size)
}

// fatTime encodes t (taken as UTC, clamped to the FAT epoch 1980) as a FAT
// date and time.
func fatTime(t time.Time) (date, tm uint16) {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	return date, tm
}

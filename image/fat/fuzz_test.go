package fat

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
)

// overlayDisk is a partition whose writes go to an overlay of sectors over
// a shared base, so that each fuzz input costs only what it touches.
type overlayDisk struct {
	base []byte
	over map[int64][]byte
}

const osec = 512

func (d *overlayDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(d.base)) {
		return 0, errors.New("read outside the partition")
	}
	for n := 0; n < len(p); {
		s, o := (off+int64(n))/osec, (off+int64(n))%osec
		src := d.base[s*osec : (s+1)*osec]
		if b, ok := d.over[s]; ok {
			src = b
		}
		n += copy(p[n:], src[o:])
	}
	return len(p), nil
}

func (d *overlayDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(d.base)) {
		return 0, errors.New("write outside the partition")
	}
	for n := 0; n < len(p); {
		s, o := (off+int64(n))/osec, (off+int64(n))%osec
		b, ok := d.over[s]
		if !ok {
			b = bytes.Clone(d.base[s*osec : (s+1)*osec])
			d.over[s] = b
		}
		n += copy(b[o:], p[n:])
	}
	return len(p), nil
}

// fuzzHead is how many first bytes of a seed filesystem the fuzzer
// mutates: the boot sector, the FATs and the root directory of the FAT12
// seed; the boot sector, FSInfo and the start of the FATs of the others.
const fuzzHead = 4 << 10

// walkAll reads every directory and file of fsys, depth-first, and
// returns the files' contents by path.
func walkAll(fsys *FS) map[string][]byte {
	files := map[string][]byte{}
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		if depth > 8 {
			return
		}
		ents, err := fsys.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			p := path.Join(dir, e.Name)
			if e.IsDir {
				walk(p, depth+1)
				continue
			}
			if data, err := fsys.ReadFile(p); err == nil {
				files[p] = data
			}
		}
	}
	walk("/", 0)
	return files
}

// FuzzFAT opens a FAT filesystem from untrusted bytes (a base image's boot
// partition) and reads it whole: that must never panic or hang. A build
// edits only what passes Check: such a filesystem must take the edits a
// build makes, read them back through a fresh Open, and still pass Check,
// with every other file as it was.
func FuzzFAT(f *testing.F) {
	dir := f.TempDir()
	if _, err := exec.LookPath("mkfs.vfat"); err != nil {
		f.Skip("mkfs.vfat not installed (apt-get install dosfstools mtools)")
	}
	// The smallest of each FAT type, with one-sector clusters.
	kinds := []struct{ bits, size string }{{"12", "128K"}, {"16", "2200K"}, {"32", "33M"}}
	seeds := make([][]byte, len(kinds))
	for k, c := range kinds {
		img := filepath.Join(dir, "fat"+c.bits+".img")
		fixture.Run(f, "truncate", "-s", c.size, img)
		fixture.Run(f, "mkfs.vfat", "-F", c.bits, "-s", "1", "-r", "64", "-n", "BOOTFS", "-i", "12345678", img)
		src := filepath.Join(dir, "cmdline.txt")
		os.WriteFile(src, []byte("console=serial0,115200 root=PARTUUID=abcd-02 rootwait\n"), 0o644)
		fixture.Run(f, "mmd", "-i", img, "::/overlays")
		fixture.Run(f, "mcopy", "-i", img, src, "::/cmdline.txt")
		fixture.Run(f, "mcopy", "-i", img, src, "::/overlays/README.txt")
		data, err := os.ReadFile(img)
		if err != nil {
			f.Fatal(err)
		}
		seeds[k] = data
		f.Add(uint8(k), data[:fuzzHead])
	}
	now := time.Date(2024, 3, 15, 10, 20, 30, 0, time.UTC)
	payload := bytes.Repeat([]byte("cgroup_memory=1 cgroup_enable=memory "), 300) // several clusters
	f.Fuzz(func(t *testing.T, which uint8, head []byte) {
		base := seeds[int(which)%len(seeds)]
		if len(head) > fuzzHead {
			return
		}
		disk := &overlayDisk{base: base, over: map[int64][]byte{}}
		disk.WriteAt(head, 0)
		size := int64(len(base))
		fsys, err := Open(disk, 0, size, false, now)
		if err != nil {
			return
		}
		before := walkAll(fsys)
		if fsys.Check() != nil {
			return
		}
		if err := fsys.WriteFile("/cmdline.txt", payload); err != nil {
			if errors.Is(err, ErrNoSpace) {
				return
			}
			t.Fatalf("writing cmdline.txt on a filesystem that passed Check: %v", err)
		}
		if err := fsys.WriteFile("/firstboot/imgbake/node.txt", []byte("k5\n")); err != nil {
			if errors.Is(err, ErrNoSpace) {
				return
			}
			t.Fatalf("writing node.txt on a filesystem that passed Check: %v", err)
		}
		again, err := Open(disk, 0, size, true, now)
		if err != nil {
			t.Fatalf("filesystem unreadable after a successful edit: %v", err)
		}
		if got, err := again.ReadFile("/cmdline.txt"); err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("cmdline.txt after writing: %d bytes, %v", len(got), err)
		}
		if got, err := again.ReadFile("/firstboot/imgbake/node.txt"); err != nil || string(got) != "k5\n" {
			t.Fatalf("node.txt after writing: %q, %v", got, err)
		}
		if err := again.Check(); err != nil {
			t.Fatalf("edits left a damaged filesystem: %v", err)
		}
		after := walkAll(again)
		for p, data := range before {
			if strings.EqualFold(p, "/cmdline.txt") {
				continue
			}
			if !bytes.Equal(after[p], data) {
				t.Fatalf("%s changed: %d bytes -> %d", p, len(data), len(after[p]))
			}
		}
	})
}

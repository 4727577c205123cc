package fat

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
)

// mkfat makes a FAT image of sizeMiB with a few files copied in by mtools.
func mkfat(t *testing.T, sizeMiB int, fatBits string) string {
	t.Helper()
	fixture.NeedTools(t, "mkfs.vfat", "mcopy", "fsck.vfat")
	dir := t.TempDir()
	img := filepath.Join(dir, "boot.img")
	fixture.Run(t, "truncate", "-s", strconv.Itoa(sizeMiB)+"M", img)
	fixture.Run(t, "mkfs.vfat", "-F", fatBits, "-n", "bootfs", "-i", "12345678", img)
	os.WriteFile(filepath.Join(dir, "cmdline.txt"), []byte("console=serial0,115200 root=PARTUUID=abcd-02 rootwait\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "config.txt"), bytes.Repeat([]byte("# config line\n"), 1000), 0o644)
	os.WriteFile(filepath.Join(dir, "LongFileName.dat"), []byte("long"), 0o644)
	fixture.Run(t, "mcopy", "-i", img, filepath.Join(dir, "cmdline.txt"), filepath.Join(dir, "config.txt"), filepath.Join(dir, "LongFileName.dat"), "::/")
	fixture.Run(t, "mmd", "-i", img, "::/overlays")
	fixture.Run(t, "mcopy", "-i", img, filepath.Join(dir, "cmdline.txt"), "::/overlays/README")
	return img
}

func openRW(t *testing.T, img string) (*FS, *os.File) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	fsys, err := Open(f, 0, fi.Size(), false, time.Date(2024, 3, 15, 10, 20, 30, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return fsys, f
}

func TestEditFAT(t *testing.T) {
	for _, c := range []struct {
		bits string
		mib  int
		typ  string
	}{{"32", 64, "fat32"}, {"16", 32, "fat16"}, {"12", 4, "fat12"}} {
		t.Run(c.typ, func(t *testing.T) {
			img := mkfat(t, c.mib, c.bits)
			fsys, _ := openRW(t, img)
			if fsys.Type() != c.typ || fsys.Label() != "bootfs" {
				t.Fatalf("type %s label %q, want %s bootfs", fsys.Type(), fsys.Label(), c.typ)
			}
			got, err := fsys.ReadFile("/cmdline.txt")
			if err != nil || !strings.HasPrefix(string(got), "console=serial0") {
				t.Fatalf("ReadFile cmdline.txt = %q, %v", got, err)
			}
			if got, err := fsys.ReadFile("/longfilename.dat"); err != nil || string(got) != "long" {
				t.Fatalf("ReadFile by long name = %q, %v", got, err)
			}
			if _, err := fsys.ReadFile("/nope"); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("missing file: %v", err)
			}
			newCmd := "console=serial0,115200 root=PARTUUID=abcd-02 rootwait cgroup_memory=1 cgroup_enable=memory\n"
			big := bytes.Repeat([]byte("0123456789abcdef"), 5000) // several clusters
			steps := []error{
				fsys.WriteFile("/cmdline.txt", []byte(newCmd)),
				fsys.WriteFile("/user-data", []byte("#cloud-config\n")),
				fsys.WriteFile("/network-config", []byte("version: 2\n")),
				fsys.WriteFile("/ssh", nil),
				fsys.WriteFile("/Mixed.Case.Name.yaml", big),
				fsys.WriteFile("/firstboot/imgbake/node.txt", []byte("k5\n")),
				fsys.Remove("/LongFileName.dat"),
				fsys.MkdirAll("/a/b/c"),
			}
			for i, err := range steps {
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			// Many entries force a cluster-chain directory to grow.
			for i := range 60 {
				if err := fsys.WriteFile("/firstboot/file-with-long-name-"+strconv.Itoa(i)+".txt", []byte(strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			fixture.Run(t, "fsck.vfat", "-n", img)
			if out := fixture.Run(t, "mtype", "-i", img, "::/cmdline.txt"); out != newCmd {
				t.Errorf("mtype cmdline.txt = %q", out)
			}
			if out := fixture.Run(t, "mtype", "-i", img, "::/Mixed.Case.Name.yaml"); out != string(big) {
				t.Errorf("big file differs (%d bytes)", len(out))
			}
			if out := fixture.Run(t, "mtype", "-i", img, "::/firstboot/file-with-long-name-59.txt"); out != "59" {
				t.Errorf("file 59 = %q", out)
			}
			ls := fixture.Run(t, "mdir", "-b", "-i", img, "::/") + fixture.Run(t, "mdir", "-i", img, "::/")
			for _, want := range []string{"::/user-data\n", "::/network-config\n", "::/ssh\n", "::/cmdline.txt\n", "2024-03-15"} {
				if !strings.Contains(ls, want) {
					t.Errorf("mdir lacks %q:\n%s", want, ls)
				}
			}
			if strings.Contains(ls, "LongFileName") {
				t.Errorf("removed file still listed:\n%s", ls)
			}
			// Reopen and read back.
			fsys2, _ := openRW(t, img)
			if got, _ := fsys2.ReadFile("/firstboot/imgbake/node.txt"); string(got) != "k5\n" {
				t.Errorf("reopened read = %q", got)
			}
		})
	}
}

func TestReproducible(t *testing.T) {
	a := mkfat(t, 64, "32")
	b := mkfat(t, 64, "32")
	for _, img := range []string{a, b} {
		fsys, _ := openRW(t, img)
		if err := fsys.WriteFile("/cmdline.txt", []byte("x y z\n")); err != nil {
			t.Fatal(err)
		}
		if err := fsys.WriteFile("/meta-data", []byte("instance-id: k5\n")); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Error("same edits on the same FAT gave different bytes")
	}
}

func TestAllocatedRangesCoverFiles(t *testing.T) {
	img := mkfat(t, 64, "32")
	fsys, f := openRW(t, img)
	rs := fsys.AllocatedRanges()
	// Zero everything outside the ranges: fsck and the files must survive.
	fi, _ := f.Stat()
	var pos int64
	zero := func(from, to int64) {
		if to > from {
			f.WriteAt(make([]byte, to-from), from)
		}
	}
	for _, r := range rs {
		zero(pos, r.Off)
		pos = r.Off + r.Len
	}
	zero(pos, fi.Size())
	fixture.Run(t, "fsck.vfat", "-n", img)
	if out := fixture.Run(t, "mtype", "-i", img, "::/overlays/README"); !strings.HasPrefix(out, "console=") {
		t.Errorf("file lost outside allocated ranges: %q", out)
	}
	var total int64
	for _, r := range rs {
		total += r.Len
	}
	if total > fi.Size()/4 {
		t.Errorf("allocated %d of %d bytes: too much for a nearly empty FAT", total, fi.Size())
	}
}

package node

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/internal/fixture"
)

// rootOf returns the root partition of the image at path.
func rootOf(t *testing.T, path string) image.Partition {
	t.Helper()
	info, err := image.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := info.Partition(info.RootPartition)
	if !ok {
		t.Fatal("no root partition")
	}
	return p
}

func writeRootFile(t *testing.T, path, name string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := rootOf(t, path)
	fsys, err := ext4.Open(f, p.Start, p.Size, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.WriteFile(name, data, ext4.Attr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
}

func readRootFile(t *testing.T, path, name string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := rootOf(t, path)
	fsys, err := ext4.Open(f, p.Start, p.Size, &ext4.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	data, err := fsys.ReadFile(name)
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	return data
}

func TestDiskLifecycle(t *testing.T) {
	fixture.RequireTools(t, "e2fsck")
	ctx := context.Background()
	dir := t.TempDir()
	imgDir := filepath.Join(dir, "out")
	os.MkdirAll(imgDir, 0o755)
	img := filepath.Join(imgDir, "k5.img")
	if err := os.Rename(fixture.Build(t, fixture.RaspiOSBookwormArm64), img); err != nil {
		t.Fatal(err)
	}
	imgBefore, _ := os.ReadFile(img)
	const size = 512 << 20
	s := &Store{StateDir: filepath.Join(dir, "state"), ImageDir: imgDir, DiskSize: size}

	// No image: a message naming the build command.
	if _, _, err := s.Ensure(ctx, "k6"); !errors.Is(err, ErrNoImage) {
		t.Fatalf("Ensure(k6) without an image = %v, want ErrNoImage", err)
	}
	if _, _, err := s.Ensure(ctx, "../k5"); err == nil {
		t.Fatal("Ensure accepted a path as node name")
	}

	// First request: copied and grown.
	disk, created, err := s.Ensure(ctx, "k5")
	if err != nil || !created {
		t.Fatalf("Ensure = %v, %v", created, err)
	}
	fi, err := os.Stat(disk)
	if err != nil || fi.Size() != size {
		t.Fatalf("disk size = %v (%v), want %d", fi.Size(), err, size)
	}
	root := rootOf(t, disk)
	if root.Start+root.Size != size {
		t.Errorf("root partition ends at %d, want the end of the disk %d", root.Start+root.Size, size)
	}
	fixture.Run(t, "e2fsck", "-fn", disk+"?offset="+strconv.FormatInt(root.Start, 10))
	out := fixture.Run(t, "dumpe2fs", "-h", disk+"?offset="+strconv.FormatInt(root.Start, 10))
	if !bytes.Contains([]byte(out), []byte("Block count:")) {
		t.Fatalf("dumpe2fs: %s", out)
	}
	// The node's partitions keep their PARTUUIDs (fstab names them).
	if want := rootOf(t, img).PartUUID; root.PartUUID != want {
		t.Errorf("PARTUUID %s, want %s", root.PartUUID, want)
	}
	if imgAfter, _ := os.ReadFile(img); !bytes.Equal(imgBefore, imgAfter) {
		t.Error("making the disk changed the image")
	}

	// The node writes; a rebuild of the image does not touch the disk.
	writeRootFile(t, disk, "/var/node-state", []byte("written by the node"))
	writeRootFile(t, img, "/etc/rebuilt", []byte("new image"))
	if _, created, err := s.Ensure(ctx, "k5"); err != nil || created {
		t.Fatalf("second Ensure = %v, %v; want the existing disk", created, err)
	}
	if got := readRootFile(t, disk, "/var/node-state"); string(got) != "written by the node" {
		t.Errorf("node state = %q", got)
	}
	if f, _ := os.Open(disk); f != nil {
		p := rootOf(t, disk)
		fsys, err := ext4.Open(f, p.Start, p.Size, &ext4.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fsys.Stat("/etc/rebuilt"); err == nil {
			t.Error("the rebuilt image's file appeared on the existing disk")
		}
		f.Close()
	}

	// Reset: a fresh copy of the new image.
	if err := s.Reset(ctx, "k5"); err != nil {
		t.Fatal(err)
	}
	if got := readRootFile(t, disk, "/etc/rebuilt"); string(got) != "new image" {
		t.Errorf("after reset /etc/rebuilt = %q", got)
	}
	f, _ := os.Open(disk)
	p := rootOf(t, disk)
	fsys, err := ext4.Open(f, p.Start, p.Size, &ext4.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Stat("/var/node-state"); err == nil {
		t.Error("reset kept the node's old state")
	}
	f.Close()
	fixture.Run(t, "e2fsck", "-fn", disk+"?offset="+strconv.FormatInt(p.Start, 10))
	if fi, _ := os.Stat(disk); fi.Size() != size {
		t.Errorf("reset disk size %d, want %d", fi.Size(), size)
	}
	// No temporary files left in the state directory (.imgbake.lock is the
	// directory's build lock, which stays).
	ents, _ := os.ReadDir(filepath.Join(s.StateDir, "k5"))
	for _, e := range ents {
		if e.Name() != DiskName && e.Name() != DiskName+".bmap" && e.Name() != DiskName+".manifest.json" && e.Name() != ".imgbake.lock" {
			t.Errorf("stray file %s in the state directory", e.Name())
		}
	}
}

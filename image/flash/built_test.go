package flash

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/fixture"
)

// TestFlashBuiltImage bakes a node image from the Raspberry Pi OS fixture
// with image.Build (its .bmap comes from the filesystems' allocation maps),
// flashes it raw and as .zst onto random bytes, and checks the partitions
// with fsck.vfat and e2fsck and the card against the manifest; then does
// the same with bmaptool copy.
func TestFlashBuiltImage(t *testing.T) {
	fixture.NeedTools(t, "zstd", "fsck.vfat", "e2fsck", "bmaptool")
	fixture.RequireTools(t)
	ctx := context.Background()
	base, err := image.PrepareBase(ctx, fixture.Cached(t, fixture.RaspiOSBookwormArm64), "", image.PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	blob := filepath.Join(dir, "blob")
	writeRandom(t, blob, 3<<20+77)
	p := &plan.Plan{Entries: []plan.Entry{
		{Part: plan.Root, Path: "/etc/hostname", Kind: plan.File, Mode: 0o644, Data: []byte("k5\n")},
		{Part: plan.Root, Path: "/usr/local/bin/k3s", Kind: plan.File, Mode: 0o755, Source: blob},
		{Part: plan.Boot, Path: "/imgbake/node.txt", Kind: plan.File, Data: []byte("node: k5\n")},
	}}
	res, err := image.Build(ctx, image.BuildOptions{Base: base, Output: filepath.Join(dir, "out", "k5.img"), Plan: p,
		Epoch: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := image.Inspect(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(res.Bmap)
	if err != nil {
		t.Fatal(err)
	}
	m, err := bmap.Parse(f)
	f.Close()
	if err != nil {
		t.Fatalf("parsing the build's .bmap: %v", err)
	}
	man, err := manifest.Load(res.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	var checks []Check
	for _, r := range man.Ranges {
		checks = append(checks, Check{Offset: r.Offset, Length: r.Length, SHA256: r.SHA256})
	}
	d := &testDisk{path: res.Image, size: res.Size, m: m}
	for i, part := range info.Partitions[:2] {
		d.parts[i] = bmap.ByteRange{Offset: part.Start, Length: part.Size}
	}
	if !strings.HasPrefix(info.Partitions[0].FS, "fat") || info.Partitions[1].FS != "ext4" {
		t.Fatalf("fixture partitions: %+v", info.Partitions)
	}
	fixture.Run(t, "zstd", "-q", "-k", res.Image)

	verifyCard := func(target string) {
		t.Helper()
		checkFilesystems(t, target, d)
		tgt, err := OpenReadOnly(target)
		if err != nil {
			t.Fatal(err)
		}
		defer tgt.Close()
		if err := Verify(ctx, tgt, checks, VerifyOptions{Name: target}); err != nil {
			t.Errorf("%s against the manifest: %v", target, err)
		}
	}
	for _, img := range []string{res.Image, res.Image + ".zst"} {
		target, isFile := randomTarget(t, t.TempDir(), res.Size+1<<20)
		r, err := flashTo(t, ctx, img, target, m, isFile)
		if err != nil {
			t.Fatalf("flashing %s: %v", img, err)
		}
		if r.Bytes >= res.Size {
			t.Errorf("%s: wrote %d bytes, the whole image is %d: the .bmap saved nothing", img, r.Bytes, res.Size)
		}
		verifyCard(target)
	}
	target, _ := randomTarget(t, t.TempDir(), res.Size)
	fixture.Run(t, "bmaptool", "copy", "--bmap", res.Bmap, res.Image, target)
	verifyCard(target)
}

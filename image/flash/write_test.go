package flash

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/internal/fixture"
)

func flashTo(t *testing.T, ctx context.Context, image, target string, m *bmap.Map, isFile bool) (*Result, error) {
	t.Helper()
	src, err := OpenSource(image)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := OpenTarget(target, TargetOptions{AllowFile: isFile})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	return Write(ctx, src, dst, Options{Map: m})
}

// TestWriteWithBmap flashes a raw, an xz and a zstd image with its .bmap
// onto random bytes; the filesystems must be clean and the mapped ranges
// equal to the image's.
func TestWriteWithBmap(t *testing.T) {
	dir := t.TempDir()
	d := makeTestDisk(t, dir, 48, 4)
	for _, comp := range []string{"", "xz", "zst"} {
		t.Run("compression="+comp, func(t *testing.T) {
			image := d.path
			switch comp {
			case "xz":
				fixture.NeedTools(t, "xz")
				fixture.Run(t, "xz", "-k", "-1", "-T2", d.path)
				image = d.path + ".xz"
			case "zst":
				fixture.NeedTools(t, "zstd")
				fixture.Run(t, "zstd", "-q", "-k", "-1", d.path)
				image = d.path + ".zst"
			}
			if got := BmapPathFor(image); got != d.path+".bmap" {
				t.Errorf("BmapPathFor(%s) = %q, want %q", image, got, d.path+".bmap")
			}
			target, isFile := randomTarget(t, t.TempDir(), d.size+8<<20)
			res, err := flashTo(t, context.Background(), image, target, d.m, isFile)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Verified {
				t.Error("result not verified")
			}
			if res.Bytes < d.m.MappedBytes() || res.Bytes >= d.size {
				t.Errorf("wrote %d bytes, want between the mapped %d and the image size %d", res.Bytes, d.m.MappedBytes(), d.size)
			}
			checkFilesystems(t, target, d)
			if !equalRanges(t, d.path, target, ChecksFromBmap(d.m)) {
				t.Error("target's mapped ranges differ from the image")
			}
		})
	}
}

// TestWriteWhole flashes an image without a .bmap: every byte is written.
func TestWriteWhole(t *testing.T) {
	dir := t.TempDir()
	d := makeTestDisk(t, dir, 40, 1)
	fixture.NeedTools(t, "zstd")
	fixture.Run(t, "zstd", "-q", "-k", "-1", d.path)
	for _, image := range []string{d.path, d.path + ".zst"} {
		target, isFile := randomTarget(t, t.TempDir(), d.size+4096)
		res, err := flashTo(t, context.Background(), image, target, nil, isFile)
		if err != nil {
			t.Fatal(err)
		}
		if res.Bytes != d.size || res.ImageSize != d.size {
			t.Errorf("%s: wrote %d bytes of an image of %d, want %d", image, res.Bytes, res.ImageSize, d.size)
		}
		if !equalRanges(t, d.path, target, []Check{{Offset: 0, Length: d.size}}) {
			t.Errorf("%s: target differs from the image", image)
		}
		checkFilesystems(t, target, d)
	}
}

// TestBmaptoolCopyInterop: bmaptool copy of the same image and our .bmap
// onto random bytes gives the same mapped content and clean filesystems;
// and we flash with a .bmap made by bmaptool create.
func TestBmaptoolCopyInterop(t *testing.T) {
	fixture.NeedTools(t, "bmaptool")
	dir := t.TempDir()
	d := makeTestDisk(t, dir, 40, 2)
	target, _ := randomTarget(t, t.TempDir(), d.size)
	if isFile := !strings.HasPrefix(target, "/dev/"); isFile {
		t.Log("no loop device: bmaptool truncates a regular-file target, so this checks less")
	}
	fixture.Run(t, "bmaptool", "copy", "--bmap", d.path+".bmap", d.path, target)
	checkFilesystems(t, target, d)
	if !equalRanges(t, d.path, target, ChecksFromBmap(d.m)) {
		t.Error("bmaptool copy with our .bmap: mapped ranges differ from the image")
	}

	theirs := filepath.Join(dir, "theirs.bmap")
	fixture.Run(t, "bmaptool", "create", "-o", theirs, d.path)
	f, err := os.Open(theirs)
	if err != nil {
		t.Fatal(err)
	}
	m, err := bmap.Parse(f)
	f.Close()
	if err != nil {
		t.Fatalf("parsing bmaptool's .bmap: %v", err)
	}
	target2, isFile := randomTarget(t, t.TempDir(), d.size)
	if _, err := flashTo(t, context.Background(), d.path, target2, m, isFile); err != nil {
		t.Fatalf("flashing with bmaptool's .bmap: %v", err)
	}
	if !equalRanges(t, d.path, target2, ChecksFromBmap(m)) {
		t.Error("flash with bmaptool's .bmap: mapped ranges differ from the image")
	}
}

func TestVerifyFindsFlippedByte(t *testing.T) {
	dir := t.TempDir()
	d := makeTestDisk(t, dir, 40, 2)
	fixture.NeedTools(t, "xz")
	fixture.Run(t, "xz", "-k", "-0", "-T2", d.path)
	target, isFile := randomTarget(t, t.TempDir(), d.size)
	if _, err := flashTo(t, context.Background(), d.path, target, d.m, isFile); err != nil {
		t.Fatal(err)
	}
	checks := ChecksFromBmap(d.m)
	c := checks[len(checks)/2]
	flip := c.Offset + c.Length/2 + 7
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, flip)
	b[0] ^= 0x10
	f.WriteAt(b, flip)
	f.Sync()
	f.Close()

	for _, image := range []string{d.path, d.path + ".xz"} {
		src, err := OpenSource(image)
		if err != nil {
			t.Fatal(err)
		}
		tgt, err := OpenReadOnly(target)
		if err != nil {
			t.Fatal(err)
		}
		err = Verify(context.Background(), tgt, checks, VerifyOptions{Source: src, Name: target})
		var me *MismatchError
		if !errors.As(err, &me) || !me.Exact || me.Offset != flip {
			t.Errorf("Verify with %s = %v, want a mismatch at exactly offset %d", image, err, flip)
		}
		err = Verify(context.Background(), tgt, checks, VerifyOptions{Source: src, Name: target, Compare: true})
		if !errors.As(err, &me) || !me.Exact || me.Offset != flip {
			t.Errorf("Verify comparing with %s = %v, want a mismatch at exactly offset %d", image, err, flip)
		}
		if err := Verify(context.Background(), tgt, checks, VerifyOptions{Name: target}); !errors.As(err, &me) || me.Offset != c.Offset {
			t.Errorf("Verify without image = %v, want a mismatch in the range at %d", err, c.Offset)
		}
		src.Close()
		tgt.Close()
	}
}

func TestWriteRefusesCorruptImageAndSmallTarget(t *testing.T) {
	dir := t.TempDir()
	d := makeTestDisk(t, dir, 40, 1)
	small := filepath.Join(dir, "small")
	os.WriteFile(small, make([]byte, 1<<20), 0o644)
	src, _ := OpenSource(d.path)
	defer src.Close()
	tgt := &Target{Path: "/dev/sdz", Size: d.size - 512}
	_, err := Write(context.Background(), src, tgt, Options{Map: d.m})
	if err == nil || !strings.Contains(err.Error(), "smaller than the image") {
		t.Errorf("Write to a small target: err = %v, want a size error", err)
	}

	// Corrupt one byte of the last mapped range of a copy of the image.
	bad := filepath.Join(dir, "bad.img")
	fixture.Run(t, "cp", "--sparse=always", d.path, bad)
	last := d.m.ByteRange(d.m.Ranges[len(d.m.Ranges)-1])
	f, _ := os.OpenFile(bad, os.O_RDWR, 0)
	f.WriteAt([]byte{0xee}, last.Offset)
	f.Close()
	target, isFile := randomTarget(t, t.TempDir(), d.size)
	_, err = flashTo(t, context.Background(), bad, target, d.m, isFile)
	var inc *IncompleteError
	if !errors.As(err, &inc) || !strings.Contains(err.Error(), "does not match its .bmap") {
		t.Errorf("Write of a corrupt image: err = %v, want an incomplete write naming the .bmap mismatch", err)
	}
}

func TestWriteInterrupted(t *testing.T) {
	dir := t.TempDir()
	d := makeTestDisk(t, dir, 40, 8)
	target, isFile := randomTarget(t, t.TempDir(), d.size)
	src, _ := OpenSource(d.path)
	defer src.Close()
	dst, err := OpenTarget(target, TargetOptions{AllowFile: isFile})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = Write(ctx, src, dst, Options{Map: d.m, Progress: func(string, int64) { cancel() }})
	var inc *IncompleteError
	if !errors.As(err, &inc) || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Write: err = %v, want an IncompleteError wrapping context.Canceled", err)
	}
	if !strings.Contains(err.Error(), "interrupted") || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("message %q does not say the card is incomplete", err)
	}
}

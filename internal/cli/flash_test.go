package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/image/manifest"
)

// runWith executes the CLI in-process with stdin.
func runWith(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	app := &App{Stdin: strings.NewReader(stdin), Stdout: &o, Stderr: &e}
	code = app.Execute(context.Background(), args)
	return code, o.String(), e.String()
}

// flashImage writes out/<node>.img (24 MiB, random data in a few ranges)
// and its .bmap under dir, and returns the image path and the map.
func flashImage(t *testing.T, dir, node string) (string, *bmap.Map) {
	t.Helper()
	out := filepath.Join(dir, "out")
	os.MkdirAll(out, 0o755)
	size := int64(24 << 20)
	img := make([]byte, size)
	data := []bmap.ByteRange{{Offset: 0, Length: 512}, {Offset: 1 << 20, Length: 3 << 20}, {Offset: 9 << 20, Length: 4096 * 5}, {Offset: size - 8192, Length: 8192}}
	for _, r := range data {
		rand.Read(img[r.Offset:r.End()])
	}
	path := filepath.Join(out, node+".img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := bmap.FromRanges(bytes.NewReader(img), size, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m.WriteTo(&buf)
	if err := os.WriteFile(path+".bmap", buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, m
}

// randomFile writes size random bytes to a new file.
func randomFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
}

func mappedEqual(t *testing.T, image, target string, m *bmap.Map) bool {
	t.Helper()
	a, _ := os.ReadFile(image)
	b, _ := os.ReadFile(target)
	for _, r := range m.ByteRanges() {
		if int64(len(b)) < r.End() || !bytes.Equal(a[r.Offset:r.End()], b[r.Offset:r.End()]) {
			return false
		}
	}
	return true
}

func TestFlashAndVerifyFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imgbake.yaml")
	if code, _, e := runWith(t, "", "init", "--config", cfg); code != 0 {
		t.Fatalf("init: %s", e)
	}
	image, m := flashImage(t, dir, "k5")
	target := filepath.Join(dir, "card.img")
	randomFile(t, target, 32<<20)

	code, _, errOut := runWith(t, "", "flash", "--config", cfg, "k5", target)
	if code != 1 || !strings.Contains(errOut, "--allow-file") {
		t.Errorf("flash to a regular file without --allow-file: exit %d, %q; want 1 and a hint", code, errOut)
	}
	before, _ := os.ReadFile(target)
	// An existing file is never overwritten unasked: not with --allow-file
	// alone (even with --yes), and not with --overwrite-file unconfirmed.
	for _, args := range [][]string{{"--allow-file", "--yes"}, {"--allow-file", "--overwrite-file"}} {
		code, _, errOut := runWith(t, "", append(append([]string{"flash", "--config", cfg}, args...), "k5", target)...)
		if after, _ := os.ReadFile(target); code != 1 || !bytes.Equal(before, after) {
			t.Errorf("flash %v onto an existing file: exit %d %q, file changed: %v", args, code, errOut, !bytes.Equal(before, after))
		}
	}
	code, out, errOut := runWith(t, "yes\n", "flash", "--config", cfg, "--allow-file", "--overwrite-file", "k5", target)
	if code != 0 {
		t.Fatalf("flash: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(out, "Verified") || !strings.Contains(errOut, "from k5.img.bmap") {
		t.Errorf("flash output: %q / %q", out, errOut)
	}
	if !mappedEqual(t, image, target, m) {
		t.Fatal("target's mapped ranges differ from the image")
	}
	code, out, errOut = runWith(t, "", "verify", "--config", cfg, "k5", target)
	if code != 0 || !strings.Contains(out, "OK") {
		t.Errorf("verify: exit %d %q %q", code, out, errOut)
	}

	// Flip one byte inside a mapped range: verify names its offset.
	flip := int64(9<<20 + 4096*2 + 17)
	f, _ := os.OpenFile(target, os.O_RDWR, 0)
	b := []byte{0}
	f.ReadAt(b, flip)
	f.WriteAt([]byte{b[0] ^ 1}, flip)
	f.Close()
	code, _, errOut = runWith(t, "", "verify", "--config", cfg, "k5", target)
	if code != 1 || !strings.Contains(errOut, "byte offset 9445393 (0x902011)") {
		t.Errorf("verify of a card with a flipped byte at %d: exit %d, %q", flip, code, errOut)
	}

	// A missing node tells how to make its image.
	code, _, errOut = runWith(t, "", "flash", "--config", cfg, "--allow-file", "k9", target)
	if code != 1 || !strings.Contains(errOut, "imgbake build k9") {
		t.Errorf("flash of a node without image: exit %d, %q", code, errOut)
	}
	code, _, _ = runWith(t, "", "flash", "k5")
	if code != 2 {
		t.Errorf("flash with one argument: exit %d, want 2", code)
	}
}

func TestFlashCompressedByPath(t *testing.T) {
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("zstd not installed (apt-get install zstd)")
	}
	dir := t.TempDir()
	image, m := flashImage(t, dir, "k6")
	if out, err := exec.Command("zstd", "-q", "--rm", image).CombinedOutput(); err != nil {
		t.Fatalf("zstd: %v %s", err, out)
	}
	target := filepath.Join(dir, "new-card.img")
	code, _, errOut := runWith(t, "", "flash", "--allow-file", image+".zst", target)
	if code != 0 {
		t.Fatalf("flash .zst: exit %d %s", code, errOut)
	}
	exec.Command("zstd", "-q", "-d", image+".zst").Run()
	if !mappedEqual(t, image, target, m) {
		t.Error("target's mapped ranges differ from the image")
	}
	// Without the .bmap a compressed image's size is only known at its
	// end: the whole stream goes into a new file.
	whole := filepath.Join(dir, "whole.img")
	if code, _, errOut := runWith(t, "", "flash", "--allow-file", "--no-bmap", image+".zst", whole); code != 0 {
		t.Fatalf("flash .zst --no-bmap: exit %d %s", code, errOut)
	}
	a, _ := os.ReadFile(image)
	b, _ := os.ReadFile(whole)
	if !bytes.Equal(a, b) {
		t.Errorf("whole-image flash of .zst: %d bytes differ from the %d-byte image", len(b), len(a))
	}
	if code, _, errOut := runWith(t, "", "flash", "--allow-file", image, image); code != 1 || !strings.Contains(errOut, "the image itself") {
		t.Errorf("flash an image onto itself: exit %d %q", code, errOut)
	}
	// The incident of issue 12: a raw image flashed "into" the node's .zst
	// output with --allow-file --yes destroyed it.
	zst, _ := os.ReadFile(image + ".zst")
	if code, _, errOut := runWith(t, "", "flash", "--allow-file", "--yes", image, image+".zst"); code != 1 || !strings.Contains(errOut, "--overwrite-file") {
		t.Errorf("flash onto the .zst output: exit %d %q", code, errOut)
	}
	if after, _ := os.ReadFile(image + ".zst"); !bytes.Equal(zst, after) {
		t.Error("the .zst output was overwritten")
	}
}

// TestFlashDevice flashes to a loop device (root only): refused as not
// removable without --force, refused without confirmation, then written.
func TestFlashDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	dir := t.TempDir()
	image, m := flashImage(t, dir, "k7")
	backing := filepath.Join(dir, "backing")
	randomFile(t, backing, 32<<20)
	before, _ := os.ReadFile(backing)
	out, err := exec.Command("losetup", "-f", "--show", backing).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()

	code, _, errOut := runWith(t, "", "flash", "--yes", image, loop)
	if code != 1 || !strings.Contains(errOut, "not a removable disk") || !strings.Contains(errOut, "--force") {
		t.Errorf("non-removable loop device without --force: exit %d %q", code, errOut)
	}
	code, _, errOut = runWith(t, "no\n", "flash", "--force", image, loop)
	if code != 1 || !strings.Contains(errOut, "not confirmed") || !strings.Contains(errOut, loop+" (") {
		t.Errorf("answer no: exit %d %q", code, errOut)
	}
	if now, _ := os.ReadFile(backing); !bytes.Equal(now, before) {
		t.Fatal("the device was written without confirmation")
	}
	code, stdout, errOut := runWith(t, "yes\n", "flash", "--force", image, loop)
	if code != 0 || !strings.Contains(stdout, "can be removed") {
		t.Fatalf("flash to %s: exit %d %q %q", loop, code, stdout, errOut)
	}
	if !mappedEqual(t, image, loop, m) {
		t.Error("device's mapped ranges differ from the image")
	}
	if code, stdout, errOut = runWith(t, "", "verify", image, loop); code != 0 {
		t.Errorf("verify %s: exit %d %q %q", loop, code, stdout, errOut)
	}
}

func TestFlashList(t *testing.T) {
	code, out, errOut := runWith(t, "", "flash", "--list")
	if code != 0 {
		t.Fatalf("flash --list: exit %d %s", code, errOut)
	}
	if !strings.Contains(out, "DEVICE") && !strings.Contains(out, "No removable disks") {
		t.Errorf("flash --list output: %q", out)
	}
	if code, _, _ := runWith(t, "", "flash", "--list", "k5"); code != 2 {
		t.Errorf("flash --list with an argument: exit %d, want 2", code)
	}
}

// TestVerifyManifest: verify prefers the image's manifest (the JSON of
// image/manifest) over the .bmap.
func TestVerifyManifest(t *testing.T) {
	dir := t.TempDir()
	image, m := flashImage(t, dir, "k8")
	target := filepath.Join(dir, "copy.img")
	data, _ := os.ReadFile(image)
	os.WriteFile(target, data, 0o644)
	writeManifest := func(r manifest.Range) {
		mf := &manifest.Manifest{FormatVersion: manifest.FormatVersion,
			Image:  manifest.Image{Name: "k8.img", Size: m.ImageSize, Bmap: "k8.img.bmap"},
			Ranges: []manifest.Range{r}}
		data, err := mf.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(image+".manifest.json", data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := m.ByteRange(m.Ranges[1])
	writeManifest(manifest.Range{Offset: r.Offset, Length: r.Length, SHA256: m.Ranges[1].SHA256})
	code, out, errOut := runWith(t, "", "verify", image, target)
	if code != 0 || !strings.Contains(out, "1 range(s)") || !strings.Contains(out, "k8.img.manifest.json") {
		t.Errorf("verify with manifest: exit %d %q %q", code, out, errOut)
	}
	writeManifest(manifest.Range{Offset: r.Offset, Length: r.Length, SHA256: strings.Repeat("ab", 32)})
	code, _, errOut = runWith(t, "", "verify", image, target)
	if code != 1 || !strings.Contains(errOut, fmt.Sprintf("range starting at byte offset %d", r.Offset)) {
		t.Errorf("verify against a manifest with a wrong checksum: exit %d %q", code, errOut)
	}
	if code, _, errOut = runWith(t, "", "verify", "--bmap", image+".bmap", image, target); code != 0 {
		t.Errorf("verify --bmap: exit %d %q", code, errOut)
	}
}

// TestFlashRefusesMixedSet: an image or .bmap of another build beside a
// manifest (a build killed between its renames) is refused before a byte
// is written, with what to do.
func TestFlashRefusesMixedSet(t *testing.T) {
	image := setImage(t, t.TempDir())
	eachMix(t, image, func(t *testing.T, swap func()) {
		target := filepath.Join(t.TempDir(), "card.img")
		if code, _, errOut := runWith(t, "", "flash", "--allow-file", "--yes", image, target); code != 0 {
			t.Fatalf("flash of the consistent set: exit %d %s", code, errOut)
		}
		swap()
		target = filepath.Join(t.TempDir(), "card.img")
		code, _, errOut := runWith(t, "", "flash", "--allow-file", "--yes", image, target)
		if code != 1 || !strings.Contains(errOut, "from different builds") || !strings.Contains(errOut, "build the node again") {
			t.Fatalf("flash of a mixed set: exit %d %q", code, errOut)
		}
		if _, err := os.Stat(target); err == nil {
			t.Fatal("the target was written")
		}
	})
}

// setImage writes out/k5.img, its .bmap and a manifest that commits them
// as a set (as image.Build does), and returns the image's path.
func setImage(t *testing.T, dir string) string {
	t.Helper()
	image, m := flashImage(t, dir, "k5")
	sum := func(p string) string { s := sha256.Sum256(mustReadFile(t, p)); return hex.EncodeToString(s[:]) }
	mf := &manifest.Manifest{FormatVersion: manifest.FormatVersion,
		Image: manifest.Image{Name: "k5.img", Size: m.ImageSize, Bmap: "k5.img.bmap", BmapSHA256: sum(image + ".bmap")}}
	for _, r := range m.Ranges {
		br := m.ByteRange(r)
		mf.Ranges = append(mf.Ranges, manifest.Range{Offset: br.Offset, Length: br.Length, SHA256: r.SHA256})
		mf.Image.Changed = append(mf.Image.Changed, br.Offset)
	}
	data, _ := mf.Marshal()
	os.WriteFile(image+".manifest.json", data, 0o644)
	return image
}

// eachMix runs test once for each way a killed build mixes the set of
// setImage: image is the consistent set when test starts, and swap puts
// the image, or the .bmap, of another build in its place.
func eachMix(t *testing.T, image string, test func(t *testing.T, swap func())) {
	good, goodBmap := mustReadFile(t, image), mustReadFile(t, image+".bmap")
	other, _ := flashImage(t, t.TempDir(), "k5")
	for name, swap := range map[string]func(){
		"image of another build": func() { os.WriteFile(image, mustReadFile(t, other), 0o600) },
		"bmap of another build":  func() { os.WriteFile(image+".bmap", mustReadFile(t, other+".bmap"), 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			os.WriteFile(image, good, 0o600)
			os.WriteFile(image+".bmap", goodBmap, 0o644)
			test(t, swap)
		})
	}
}

// TestVerifyRefusesMixedSet: verify runs flash's set check, so that an
// image or .bmap of another build beside the manifest is reported (with
// what to do) before anyone flashes it, even when the card still matches
// the manifest.
func TestVerifyRefusesMixedSet(t *testing.T) {
	dir := t.TempDir()
	image := setImage(t, dir)
	card := filepath.Join(dir, "card.img")
	os.WriteFile(card, mustReadFile(t, image), 0o644) // flashed from the consistent set
	eachMix(t, image, func(t *testing.T, swap func()) {
		if code, out, errOut := runWith(t, "", "verify", image, card); code != 0 || !strings.Contains(out, "OK:") {
			t.Fatalf("verify of the consistent set: exit %d %s %s", code, out, errOut)
		}
		swap()
		for _, args := range [][]string{{"verify", image, card}, {"verify", "--bmap", image + ".bmap", image, card}} {
			code, out, errOut := runWith(t, "", args...)
			if code != 1 || !strings.Contains(errOut, "from different builds") || !strings.Contains(errOut, "build the node again") || strings.Contains(out, "OK") {
				t.Errorf("%v of a mixed set: exit %d %q %q", args, code, out, errOut)
			}
		}
	})
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFlashRefusesLoopOfItself: a loop device whose backing file is the
// image being flashed (or its raw image, for a compressed one) is refused,
// even with --force and --yes, and nothing is written.
func TestFlashRefusesLoopOfItself(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	dir := t.TempDir()
	image, _ := flashImage(t, dir, "k7")
	before, _ := os.ReadFile(image)
	out, err := exec.Command("losetup", "-f", "--show", image).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	code, _, errOut := runWith(t, "", "flash", "--force", "--yes", image, loop)
	if code != 1 || !strings.Contains(errOut, "is a loop device backed by") || !strings.Contains(errOut, "the image being flashed") {
		t.Fatalf("flash of an image onto its own loop device: exit %d %q", code, errOut)
	}
	if now, _ := os.ReadFile(image); !bytes.Equal(now, before) {
		t.Fatal("the image was written")
	}
}

package bmap

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testImage returns an image of size bytes that holds pseudo-random data in
// the given byte ranges and zeros elsewhere, written to a sparse file in dir.
func testImage(t *testing.T, dir string, size int64, data []ByteRange) (string, []byte) {
	t.Helper()
	img := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	path := filepath.Join(dir, "test.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, r := range data {
		for i := r.Offset; i < r.End(); i++ {
			img[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(img[r.Offset:r.End()], r.Offset); err != nil {
			t.Fatal(err)
		}
	}
	return path, img
}

func TestBlockRanges(t *testing.T) {
	tests := []struct {
		name string
		in   []ByteRange
		size int64
		want []Range
	}{
		{"empty", nil, 1 << 20, nil},
		{"one byte", []ByteRange{{5000, 1}}, 1 << 20, []Range{{First: 1, Last: 1}}},
		{"straddle", []ByteRange{{4095, 2}}, 1 << 20, []Range{{First: 0, Last: 1}}},
		{"merge touching and unsorted", []ByteRange{{8192, 4096}, {0, 4096}, {4096, 10}}, 1 << 20, []Range{{First: 0, Last: 2}}},
		{"gap kept", []ByteRange{{0, 4096}, {8192, 4096}}, 1 << 20, []Range{{First: 0, Last: 0}, {First: 2, Last: 2}}},
		{"clipped to image", []ByteRange{{10000, 1 << 30}}, 20000, []Range{{First: 2, Last: 4}}},
		{"past the end dropped", []ByteRange{{30000, 10}, {0, 0}}, 20000, nil},
	}
	for _, tt := range tests {
		got := BlockRanges(tt.in, tt.size, 4096)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: BlockRanges mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	size := int64(10<<20 + 1000) // partial last block
	data := []ByteRange{{0, 512}, {1 << 20, 3 << 16}, {5 << 20, 1}, {size - 700, 700}}
	_, img := testImage(t, t.TempDir(), size, data)
	m, err := FromRanges(bytes.NewReader(img), size, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.MappedBlocks(), int64(1+48+1+1); got != want {
		t.Errorf("MappedBlocks = %d, want %d", got, want)
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "> 256-303 </Range>") || !strings.Contains(buf.String(), "> 1280 </Range>") {
		t.Errorf("bmap lacks the expected range forms \"a-b\" and \"a\":\n%s", buf.String())
	}
	got, err := Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
	// The last range is clipped to the image size.
	last := got.ByteRange(got.Ranges[len(got.Ranges)-1])
	if last.End() != size {
		t.Errorf("last range ends at %d, want %d", last.End(), size)
	}
}

func TestParseRejectsCorruption(t *testing.T) {
	size := int64(1 << 20)
	data := []ByteRange{{0, 8192}}
	_, img := testImage(t, t.TempDir(), size, data)
	m, err := FromRanges(bytes.NewReader(img), size, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m.WriteTo(&buf)
	good := buf.String()
	for name, bad := range map[string]string{
		"range changed":    strings.Replace(good, "> 0-1 </Range>", "> 0-2 </Range>", 1),
		"checksum changed": strings.Replace(good, m.Ranges[0].SHA256, strings.Repeat("a", 64), 1),
		"size changed":     strings.Replace(good, "<ImageSize> 1048576 ", "<ImageSize> 1048577 ", 1),
	} {
		if bad == good {
			t.Fatalf("%s: test edit did not apply", name)
		}
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: Parse accepted a corrupted bmap", name)
		}
	}
	unsorted := &Map{ImageSize: size, BlockSize: 4096, ChecksumType: "sha256",
		Ranges: []Range{{First: 5, Last: 6}, {First: 1, Last: 2}}}
	buf.Reset()
	unsorted.WriteTo(&buf)
	if _, err := Parse(&buf); err == nil || !strings.Contains(err.Error(), "overlaps or precedes") {
		t.Errorf("Parse of unsorted ranges: err = %v, want an overlap error", err)
	}
}

// TestParseBmaptoolCreate checks that a bmap made by bmaptool create from a
// sparse file parses to the same map FromRanges computes for the same data.
func TestParseBmaptoolCreate(t *testing.T) {
	if _, err := exec.LookPath("bmaptool"); err != nil {
		t.Skip("bmaptool not installed (apt-get install bmap-tools)")
	}
	dir := t.TempDir()
	size := int64(8<<20 + 1234)
	data := []ByteRange{{0, 4096}, {3 << 20, 5 * 4096}, {6 << 20, 4096}, {size - 1234, 1234}}
	path, img := testImage(t, dir, size, data)
	out, err := exec.Command("bmaptool", "create", "-o", path+".bmap", path).CombinedOutput()
	if err != nil {
		t.Fatalf("bmaptool create: %v\n%s", err, out)
	}
	f, err := os.Open(path + ".bmap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	want, err := FromRanges(bytes.NewReader(img), size, 4096, data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bmaptool's map differs from ours (-ours +bmaptool):\n%s", diff)
	}
}

// TestBmaptoolCopyOurBmap flashes with bmaptool copy using a bmap we wrote
// onto a target full of random bytes: the mapped ranges must equal the
// image. bmaptool truncates a regular-file target, so the rest reads as
// zeros (flash's tests cover writing onto random bytes). A bmap with a wrong range checksum must
// make bmaptool fail.
func TestBmaptoolCopyOurBmap(t *testing.T) {
	if _, err := exec.LookPath("bmaptool"); err != nil {
		t.Skip("bmaptool not installed (apt-get install bmap-tools)")
	}
	dir := t.TempDir()
	size := int64(6<<20 + 100)
	data := []ByteRange{{0, 1000}, {1 << 20, 1 << 20}, {size - 50, 50}}
	path, img := testImage(t, dir, size, data)
	m, err := FromRanges(bytes.NewReader(img), size, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	writeBmap(t, m, path+".bmap")

	noise := make([]byte, size)
	rand.NewChaCha8([32]byte{3, 4}).Read(noise)
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, noise, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bmaptool", "copy", "--bmap", path+".bmap", path, target).CombinedOutput(); err != nil {
		t.Fatalf("bmaptool copy with our bmap: %v\n%s", err, out)
	}
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	for _, br := range m.ByteRanges() {
		copy(want[br.Offset:br.End()], img[br.Offset:br.End()])
	}
	if !bytes.Equal(got, want) {
		t.Errorf("target after bmaptool copy: mapped ranges not equal to the image or unmapped bytes not zero")
	}

	m.Ranges[1].SHA256 = strings.Repeat("0", 64)
	writeBmap(t, m, path+".bad.bmap")
	if out, err := exec.Command("bmaptool", "copy", "--bmap", path+".bad.bmap", path, target).CombinedOutput(); err == nil {
		t.Errorf("bmaptool copy accepted a bmap with a wrong range checksum:\n%s", out)
	}
}

func writeBmap(t *testing.T, m *Map, path string) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWhole(t *testing.T) {
	m := Whole(10000, 4096)
	want := []Range{{First: 0, Last: 2}}
	if diff := cmp.Diff(want, m.Ranges); diff != "" {
		t.Errorf("Whole ranges (-want +got):\n%s", diff)
	}
	if m.MappedBytes() != 10000 {
		t.Errorf("MappedBytes = %d, want 10000", m.MappedBytes())
	}
}

package fat

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// TestOpenReadsInPlace reads a fragmented file through File.ReadAt at
// random offsets and compares it with what mtools copies out.
func TestOpenReadsInPlace(t *testing.T) {
	img := mkfat(t, 16, "16")
	fsys, _ := openRW(t, img)
	// Fragment the free space: small files, every other one removed.
	for i := range 20 {
		name := "pad" + string(rune('a'+i))
		if err := fsys.WriteFile(name, bytes.Repeat([]byte{byte(i)}, 3000)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i += 2 {
		if err := fsys.Remove("pad" + string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	want := make([]byte, 200_000+123)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	if err := fsys.WriteFile("kernel8.img", want); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Open("kernel8.img")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.extents) < 2 {
		t.Fatalf("kernel8.img has %d extents; the test wants a fragmented file", len(f.extents))
	}
	out := filepath.Join(t.TempDir(), "k")
	fixture.Run(t, "mcopy", "-i", img, "::/kernel8.img", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatal("mcopy reads another kernel8.img than was written")
	}
	if f.Size() != int64(len(want)) {
		t.Errorf("Size = %d", f.Size())
	}
	for range 200 {
		off := rng.IntN(len(want) + 10)
		buf := make([]byte, rng.IntN(9000))
		n, err := f.ReadAt(buf, int64(off))
		end := min(off+len(buf), len(want))
		if off > len(want) {
			end = off
		}
		if n != end-off || !bytes.Equal(buf[:n], want[off:end]) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d bytes, %v", len(buf), off, n, err)
		}
		if (n < len(buf)) != (err == io.EOF) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", len(buf), off, n, err)
		}
	}
	if got, _ := io.ReadAll(io.NewSectionReader(f, 0, f.Size())); !bytes.Equal(got, want) {
		t.Error("sequential read differs")
	}
}

package flash

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// TestSourceStreams decompresses xz (with the xz program and with the
// pure-Go decoder), zstd and gzip images as streams, and reports truncated
// files as errors, never as short images.
func TestSourceStreams(t *testing.T) {
	fixture.NeedTools(t, "xz", "zstd", "gzip", "zip")
	dir := t.TempDir()
	raw := make([]byte, 3<<20+517)
	rand.Read(raw[:1<<20])
	path := filepath.Join(dir, "k5.img")
	os.WriteFile(path, raw, 0o644)
	fixture.Run(t, "xz", "-k", "-0", path)
	fixture.Run(t, "zstd", "-q", "-k", path)
	fixture.Run(t, "gzip", "-k", path)
	// A zip download (as some Raspberry Pi images are published) holds the
	// image: it is flashed as the image, never as the archive's bytes.
	fixture.Run(t, "sh", "-c", "cd "+dir+" && zip -q k5.img.zip k5.img")

	read := func(p string) ([]byte, error) {
		src, err := OpenSource(p)
		if err != nil {
			return nil, err
		}
		defer src.Close()
		r, err := src.Stream(context.Background())
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	for _, ext := range []string{"", ".xz", ".zst", ".gz", ".zip"} {
		got, err := read(path + ext)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("stream of %s: %d bytes, %v; want the %d-byte image", ext, len(got), err, len(raw))
		}
		if ext == "" {
			continue
		}
		data, _ := os.ReadFile(path + ext)
		cut := filepath.Join(dir, "cut.img"+ext)
		os.WriteFile(cut, data[:len(data)*2/3], 0o644)
		if got, err := read(cut); err == nil {
			t.Errorf("stream of a truncated %s file: %d bytes and no error", ext, len(got))
		}
	}

	// Without the xz program on PATH the pure-Go decoder is used.
	t.Setenv("PATH", t.TempDir())
	if _, err := exec.LookPath("xz"); err == nil {
		t.Fatal("xz still on PATH")
	}
	got, err := read(path + ".xz")
	if err != nil || !bytes.Equal(got, raw) {
		t.Errorf("pure-Go xz stream: %d bytes, %v", len(got), err)
	}
	if _, err := read(filepath.Join(dir, "cut.img.xz")); err == nil {
		t.Error("pure-Go xz: truncated file gave no error")
	}
	if src, _ := OpenSource(path + ".xz"); src.Compression != "xz" || src.Size != -1 || src.ReaderAt() != nil {
		t.Errorf("OpenSource(.xz) = %+v", src)
	}
	if _, err := OpenSource(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("OpenSource(dir) = %v", err)
	}
}

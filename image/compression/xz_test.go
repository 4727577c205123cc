package compression

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/progress"
)

// testData returns 6 MiB of compressible data with zero runs.
func testData() []byte { return fixture.CompressibleData(6 << 20) }

// compressWith runs a compressor on data and returns its output.
func compressWith(t testing.TB, data []byte, name string, args ...string) []byte {
	t.Helper()
	fixture.RequireTools(t, name)
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// bufAt is a growable io.WriterAt.
type bufAt struct{ b []byte }

func (w *bufAt) WriteAt(p []byte, off int64) (int, error) {
	if need := int(off) + len(p); need > len(w.b) {
		w.b = append(w.b, make([]byte, need-len(w.b))...)
	}
	return copy(w.b[off:], p), nil
}

func decodeBlocks(data []byte) ([]byte, error) {
	out := &bufAt{}
	n, err := DecodeXZBlocks(context.Background(), bytes.NewReader(data), int64(len(data)), out,
		func(total int64) (*progress.Bar, error) { out.b = make([]byte, total); return nil, nil })
	if err != nil {
		return nil, err
	}
	return out.b[:n], nil
}

func TestDecodeXZBlocks(t *testing.T) {
	data := testData()
	multi := compressWith(t, data, "xz", "-1", "--block-size=1MiB", "-c")
	got, err := decodeBlocks(multi)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("multi-block: %d bytes, %v", len(got), err)
	}
	single := compressWith(t, data, "xz", "-1", "-c")
	if _, err := decodeBlocks(single); !errors.Is(err, ErrXZSequential) {
		t.Fatalf("single block: %v, want ErrXZSequential", err)
	}
}

// TestXZChecksVerified corrupts only the stored check of one block, and
// only the index: the data still decodes, so only the verification can
// catch it.
func TestXZChecksVerified(t *testing.T) {
	data := testData()
	for _, check := range []string{"crc32", "crc64", "sha256"} {
		t.Run(check, func(t *testing.T) {
			xzd := compressWith(t, data, "xz", "-1", "-C", check, "--block-size=1MiB", "-c")
			blocks, err := xzIndex(bytes.NewReader(xzd), int64(len(xzd)))
			if err != nil || len(blocks) < 4 {
				t.Fatalf("index: %d blocks, %v", len(blocks), err)
			}
			b := blocks[2]
			// The check is the last bytes of the padded block.
			end := b.off + (b.unpadded+3)&^3
			xzd[end-1] ^= 1
			if _, err := decodeBlocks(xzd); err == nil || !strings.Contains(err.Error(), "block check mismatch") {
				t.Fatalf("error %v, want a block check mismatch", err)
			}
		})
	}
	t.Run("index", func(t *testing.T) {
		xzd := compressWith(t, data, "xz", "-1", "--block-size=1MiB", "-c")
		// The index ends with its CRC32 right before the 12-byte footer.
		xzd[len(xzd)-12-1] ^= 1
		if _, err := decodeBlocks(xzd); err == nil || !strings.Contains(err.Error(), "index checksum mismatch") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestFormatsOneSetOfNames: each format is detected from its content under
// the name `--compress` and the file extension use, decodes with the one
// reader, and a truncated stream is an error, never a short result.
func TestFormatsOneSetOfNames(t *testing.T) {
	data := testData()
	for _, tc := range []struct {
		f    Format
		prog string
		args []string
	}{
		{XZ, "xz", []string{"-1", "-c"}},
		{Zstd, "zstd", []string{"-1", "-c"}},
		{Gzip, "gzip", []string{"-1", "-c"}},
	} {
		t.Run(string(tc.f), func(t *testing.T) {
			comp := compressWith(t, data, tc.prog, tc.args...)
			if got := Detect(comp[:HeadSize]); got != tc.f {
				t.Fatalf("Detect = %q, want %q", got, tc.f)
			}
			if got := FromName("k5.img" + tc.f.Ext()); got != tc.f {
				t.Fatalf("FromName = %q, want %q", got, tc.f)
			}
			p := filepath.Join(t.TempDir(), "img"+tc.f.Ext())
			if err := os.WriteFile(p, comp, 0o644); err != nil {
				t.Fatal(err)
			}
			rc, err := OpenFile(context.Background(), p, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, err = buf.ReadFrom(rc)
			rc.Close()
			if err != nil || !bytes.Equal(buf.Bytes(), data) {
				t.Fatalf("OpenFile: %d bytes, %v", buf.Len(), err)
			}
			if err := os.WriteFile(p, comp[:len(comp)/2], 0o644); err != nil {
				t.Fatal(err)
			}
			rc, err = OpenFile(context.Background(), p, tc.f)
			if err == nil {
				_, err = buf.ReadFrom(rc)
				rc.Close()
			}
			if err == nil {
				t.Fatal("truncated stream read without an error")
			}
		})
	}
	if got := Detect([]byte("hello")); got != Raw || Raw.Ext() != "" {
		t.Fatalf("Detect(text) = %q", got)
	}
}

func TestZipImage(t *testing.T) {
	fixture.RequireTools(t, "zip")
	dir := t.TempDir()
	data := testData()
	if err := os.WriteFile(filepath.Join(dir, "base.img"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-c", "cd "+dir+" && zip -q base.zip base.img").CombinedOutput(); err != nil {
		t.Fatalf("zip: %v %s", err, out)
	}
	p := filepath.Join(dir, "base.zip")
	f, _ := os.Open(p)
	defer f.Close()
	if got, _ := DetectFile(f); got != Zip {
		t.Fatalf("DetectFile = %q", got)
	}
	rc, err := OpenFile(context.Background(), p, Zip)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("zip image: %d bytes, %v", buf.Len(), err)
	}
}

package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestXZChecksVerified corrupts only the stored check of one block, and
// only the index: the data still decodes, so only the verification can
// catch it.
func TestXZChecksVerified(t *testing.T) {
	needTool(t, "xz")
	dir := t.TempDir()
	raw, _ := testRaw(t, dir)
	for _, check := range []string{"crc32", "crc64", "sha256"} {
		t.Run(check, func(t *testing.T) {
			xzf := filepath.Join(t.TempDir(), "in.xz")
			sh(t, "xz -1 -C "+check+" --block-size=1MiB -c "+raw+" > "+xzf)
			data := mustRead(t, xzf)
			blocks, err := xzIndex(bytes.NewReader(data), int64(len(data)))
			if err != nil || len(blocks) < 4 {
				t.Fatalf("index: %d blocks, %v", len(blocks), err)
			}
			b := blocks[2]
			// The check is the last bytes of the padded block.
			end := b.off + (b.unpadded+3)&^3
			bad := bytes.Clone(data)
			bad[end-1] ^= 1
			os.WriteFile(xzf, bad, 0o644)
			cache := filepath.Join(t.TempDir(), "cache")
			_, err = PrepareBase(context.Background(), xzf, cache, PrepareOptions{})
			if err == nil || !strings.Contains(err.Error(), "block check mismatch") {
				t.Fatalf("error %v, want a block check mismatch", err)
			}
			assertOnly(t, cache)
		})
	}
	t.Run("index", func(t *testing.T) {
		xzf := filepath.Join(t.TempDir(), "in.xz")
		sh(t, "xz -1 --block-size=1MiB -c "+raw+" > "+xzf)
		data := mustRead(t, xzf)
		// The index ends with its CRC32 right before the 12-byte footer.
		data[len(data)-12-1] ^= 1
		os.WriteFile(xzf, data, 0o644)
		_, err := PrepareBase(context.Background(), xzf, t.TempDir(), PrepareOptions{})
		if err == nil || !strings.Contains(err.Error(), "index checksum mismatch") {
			t.Fatalf("error %v", err)
		}
	})
}

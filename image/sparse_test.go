package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCopyPlain: the copy used where a filesystem can neither clone nor
// copy_file_range has src's bytes, leaves holes for zeros, and stops with
// ctx's error once ctx is done.
func TestCopyPlain(t *testing.T) {
	dir := t.TempDir()
	want := make([]byte, 8<<20)
	copy(want[1<<20:], words(1<<20, 7))
	copy(want[6<<20:], words(4096, 8))
	if err := os.WriteFile(filepath.Join(dir, "src"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := copyPlain(context.Background(), dst, src, int64(len(want)), nil); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, dst.Name()); !bytes.Equal(got, want) {
		t.Fatalf("copy differs from the source (%d bytes, want %d)", len(got), len(want))
	}
	fi, err := dst.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 2<<20 {
		t.Errorf("copy takes %d bytes on disk, want about its 1 MiB of data: zeros were written, not left as holes", used)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := copyPlain(ctx, dst, src, int64(len(want)), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("copy with a cancelled context: %v, want context.Canceled", err)
	}
}

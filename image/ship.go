package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imgbake/imgbake/image/compression"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/imgbake/imgbake/internal/tempfile"
)

// Compressed returns a compressed file of the base, for copying it
// somewhere else (a netboot server node's image), and the file's sha256: the
// input itself when it was compressed, else a zstd copy of the raw image
// made once in cacheDir (holes cost nothing; every core; Ctrl-C leaves
// nothing behind).
func (b *Base) Compressed(ctx context.Context, cacheDir string, bar io.Writer) (path, sum string, err error) {
	if b.Format != compression.Raw {
		return b.Input, b.InputSHA256, nil
	}
	if cacheDir == "" {
		return "", "", fmt.Errorf("compressing the base image: no cache directory given")
	}
	dst := filepath.Join(cacheDir, b.InputSHA256+".img.zst")
	if s, err := os.ReadFile(dst + ".sha256"); err == nil {
		if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
			return dst, strings.TrimSpace(string(s)), nil
		}
	}
	img, err := os.Open(b.Path)
	if err != nil {
		return "", "", fmt.Errorf("compressing the base image: %w", err)
	}
	defer img.Close()
	tmp, err := os.CreateTemp(cacheDir, tempPattern(dst, ""))
	if err != nil {
		return "", "", fmt.Errorf("compressing the base image: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	sum, err = compressImage(ctx, img, b.Size, "zst", tmp, progress.New(bar, "compressing the base", b.Size))
	if err != nil {
		return "", "", fmt.Errorf("compressing the base image: %w", err)
	}
	// compressImage closed tmp; sync it through a new descriptor.
	if err := syncFile(tmp.Name()); err != nil {
		return "", "", fmt.Errorf("compressing the base image: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", "", fmt.Errorf("compressing the base image: %w", err)
	}
	if err := tempfile.WriteFile(dst+".sha256", []byte(sum+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("compressing the base image: %w", err)
	}
	return dst, sum, nil
}

// syncFile flushes the file at path to the disk.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

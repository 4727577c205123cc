package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/image/flash"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/spf13/cobra"
)

func (a *App) verifyCommand(g *globals) *cobra.Command {
	var bmapPath string
	cmd := &cobra.Command{
		Use:   "verify <node|image> <device|file>",
		Short: "Check that a card (or an image file) holds a node's image",
		Long: `verify reads the ranges of a node's image that hold data (from the image's
.bmap) back from a card, a disk or an image file and compares their sha256
checksums. It only reads. On a mismatch it exits non-zero and reports the
first bad byte offset (exact when the image file is at hand).`,
		Example: `  imgbake verify k5 /dev/sdb
  imgbake verify out/k5.img.xz /dev/mmcblk0
  imgbake verify k5 backup/k5-copy.img`,
		Args: exactArgs(2, "a node or image and a device or file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runVerify(cmd.Context(), g, args[0], args[1], bmapPath)
		},
	}
	cmd.Flags().StringVar(&bmapPath, "bmap", "", "block map to check against (default: the image's .bmap)")
	return cmd
}

func (a *App) runVerify(ctx context.Context, g *globals, imageArg, targetPath, bmapPath string) error {
	files, err := a.resolveImage(g, imageArg)
	if err != nil {
		return err
	}
	if bmapPath != "" {
		files.bmap = bmapPath
	}
	if files.bmap == "" {
		return fmt.Errorf("no .bmap next to %s: verify needs the block map imgbake build writes (or pass --bmap)", files.image)
	}
	m, err := loadBmap(files.bmap)
	if err != nil {
		return err
	}
	checks := flash.ChecksFromBmap(m)
	for _, c := range checks {
		if c.SHA256 == "" {
			return fmt.Errorf("%s has ranges without sha256 checksums: re-create it with imgbake build or bmaptool create", files.bmap)
		}
	}
	src, err := flash.OpenSource(files.image)
	if err != nil {
		return err
	}
	defer src.Close()
	tgt, err := flash.OpenReadOnly(targetPath)
	if err != nil {
		return err
	}
	defer tgt.Close()
	if tgt.Size < m.ImageSize {
		return fmt.Errorf("%s (%s) is smaller than the image (%s): it cannot hold it", targetPath,
			bmap.HumanSize(tgt.Size), bmap.HumanSize(m.ImageSize))
	}
	bar := progress.New(a.Stderr, "verifying", m.MappedBytes())
	err = flash.Verify(ctx, tgt, checks, flash.VerifyOptions{Source: src, Name: targetPath, Progress: bar.Add})
	bar.Done()
	var mm *flash.MismatchError
	if errors.As(err, &mm) {
		return fmt.Errorf("%w; flash it again (imgbake flash %s %s) or replace the card", err, imageArg, targetPath)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "OK: %s matches %s (%d range(s), %s checked against %s).\n", targetPath,
		filepath.Base(files.image), len(checks), bmap.HumanSize(m.MappedBytes()), filepath.Base(files.bmap))
	return nil
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/imgbake/imgbake/image/flash"
	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/spf13/cobra"
)

func (a *App) verifyCommand(g *globals) *cobra.Command {
	var bmapPath string
	cmd := &cobra.Command{
		Use:   "verify <node|image> <device|file>",
		Short: "Check that a card (or an image file) holds a node's image",
		Long: `verify reads the ranges of a node's image that hold data back from a card,
a disk or an image file and compares their sha256 checksums with those in
the image's manifest (k5.img.manifest.json, written by imgbake build) or,
without one, its .bmap. It only reads. On a mismatch it exits non-zero and
reports the first bad byte offset (exact when the image file is at hand).
Like flash, it first checks that the image and .bmap are the ones the
manifest describes, and refuses files of two builds (a build interrupted
while it replaced them): build the node again.`,
		Example: `  imgbake verify k5 /dev/sdb
  imgbake verify out/k5.img.xz /dev/mmcblk0
  imgbake verify k5 backup/k5-copy.img`,
		Args: exactArgs(2, "a node or image and a device or file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runVerify(cmd.Context(), g, args[0], args[1], bmapPath)
		},
	}
	cmd.Flags().StringVar(&bmapPath, "bmap", "", "block map to check against (default: the image's .bmap)")
	cmd.ValidArgsFunction = completeNodeThenFile(g)
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
	if err := checkSet(files); err != nil {
		return err
	}
	ref, err := loadChecks(files, bmapPath != "")
	if err != nil {
		return err
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
	if tgt.Size < ref.imageSize {
		return fmt.Errorf("%s (%s) is smaller than the image (%s): it cannot hold it", targetPath,
			progress.Bytes(tgt.Size), progress.Bytes(ref.imageSize))
	}
	var total int64
	for _, c := range ref.checks {
		total += c.Length
	}
	bar := progress.New(a.Stderr, "verifying", total)
	err = flash.Verify(ctx, tgt, ref.checks, flash.VerifyOptions{Source: src, Name: targetPath, Progress: bar.Add})
	bar.Done()
	var mm *flash.MismatchError
	if errors.As(err, &mm) {
		return fmt.Errorf("%w; flash it again (imgbake flash %s %s) or replace the card", err, imageArg, targetPath)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "OK: %s matches %s (%d range(s), %s checked against %s).\n", targetPath,
		filepath.Base(files.image), len(ref.checks), progress.Bytes(total), filepath.Base(ref.from))
	return nil
}

// reference is what a target is verified against.
type reference struct {
	checks    []flash.Check
	imageSize int64
	from      string // the manifest or .bmap file
}

// loadChecks reads the image's manifest, or its .bmap when there is no
// manifest or bmapFirst is set.
func loadChecks(files imageFiles, bmapFirst bool) (*reference, error) {
	if mf := flash.SidecarFor(files.image, ".manifest.json"); mf != "" && !bmapFirst {
		m, err := manifest.Load(mf)
		if err != nil {
			return nil, fmt.Errorf("%w (or pass --bmap to verify against the .bmap)", err)
		}
		if len(m.Ranges) == 0 || m.Image.Size <= 0 {
			return nil, fmt.Errorf("manifest %s lists no data ranges: rebuild the image, or pass --bmap", mf)
		}
		checks := make([]flash.Check, len(m.Ranges))
		for i, r := range m.Ranges {
			checks[i] = flash.Check{Offset: r.Offset, Length: r.Length, SHA256: r.SHA256}
		}
		return &reference{checks: checks, imageSize: m.Image.Size, from: mf}, nil
	}
	if files.bmap == "" {
		return nil, fmt.Errorf("no manifest or .bmap next to %s: verify needs the files imgbake build writes (or pass --bmap)", files.image)
	}
	m, err := loadBmap(files.bmap)
	if err != nil {
		return nil, err
	}
	checks := flash.ChecksFromBmap(m)
	for _, c := range checks {
		if c.SHA256 == "" {
			return nil, fmt.Errorf("%s has ranges without sha256 checksums: re-create it with imgbake build or bmaptool create", files.bmap)
		}
	}
	return &reference{checks: checks, imageSize: m.ImageSize, from: files.bmap}, nil
}

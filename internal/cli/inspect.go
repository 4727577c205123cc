package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/spf13/cobra"
)

type inspectOptions struct {
	json     bool
	cacheDir string
}

func (a *App) inspectCommand(g *globals) *cobra.Command {
	o := &inspectOptions{}
	cmd := &cobra.Command{
		Use:   "inspect IMAGE",
		Short: "Show what imgbake detects in a base image",
		Long: `inspect shows what imgbake detects in a base image: OS family, release,
architecture, boot partition, kernel command line, first-boot mechanism and
network system, which decide how images are baked. Compressed images are
decompressed into the cache first (once).`,
		Example: `  imgbake inspect 2024-11-19-raspios-bookworm-arm64-lite.img.xz
  imgbake inspect out/k5.img --json | jq .os`,
		Args: exactArgs(1, "one image file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runInspect(cmd, g, o, args[0])
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	cmd.Flags().StringVar(&o.cacheDir, "cache-dir", "", "cache for decompressed images (default ~/.cache/imgbake)")
	return cmd
}

func (a *App) runInspect(cmd *cobra.Command, g *globals, o *inspectOptions, path string) error {
	cache, err := a.defaultCacheDir(a.expandHome(o.cacheDir))
	if err != nil {
		return err
	}
	base, err := image.PrepareBase(cmd.Context(), path, filepath.Join(cache, "base"), image.PrepareOptions{Progress: a.Stderr, Log: a.logger(g)})
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	info, err := image.Inspect(base.Path)
	if err != nil {
		return inspectError(path, base, err)
	}
	if o.json {
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	os := info.OS
	w := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "image:\t%s (%s)\n", path, progress.Bytes(base.Size))
	fmt.Fprintf(w, "os:\t%s %s (%s)\n", os.Family, os.Release, os.Version)
	fmt.Fprintf(w, "arch:\t%s\n", os.Arch)
	fmt.Fprintf(w, "boot partition:\t%s\n", orNone(os.BootMount))
	fmt.Fprintf(w, "kernel command line:\t%s:%s\n", os.CmdlinePart, orNone(os.CmdlinePath))
	fmt.Fprintf(w, "first boot:\t%s\n", os.FirstBoot)
	fmt.Fprintf(w, "cloud-init seeds:\t%v\n", os.CloudInit)
	fmt.Fprintf(w, "network:\t%s\n", os.Network)
	fmt.Fprintf(w, "partition table:\t%s (disk id %s)\n", info.Table, info.DiskID)
	for i, p := range info.Partitions {
		fmt.Fprintf(w, "partition %d:\t%s\n", i+1, p)
	}
	fmt.Fprintf(w, "root filesystem:\t%s, %s free\n", progress.Bytes(info.RootSize), progress.Bytes(info.RootFree))
	return w.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/image/flash"
	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/spf13/cobra"
)

type flashOptions struct {
	list, yes, force, allowFile, noVerify, noBmap bool
	all                                           bool
	overwriteFile                                 bool
	bmapPath                                      string
}

func (a *App) flashCommand(g *globals) *cobra.Command {
	o := &flashOptions{}
	cmd := &cobra.Command{
		Use:   "flash <node|image> <device|file> | <node>=<device>... | --all <device>...",
		Short: "Write node images to SD cards or USB disks, then read them back to verify",
		Long: `flash writes a baked image to a card: only the blocks the image's .bmap
maps (the filesystems' allocated blocks and metadata), or the whole image
when there is no .bmap. It decompresses .xz, .zst and .gz images on the fly,
syncs, then reads back every written range and compares checksums.

The first argument is a node name (its image is <output-dir>/<node>.img,
.img.zst or .img.xz) or an image path. The second is a whole disk
(/dev/sdX, /dev/mmcblkN; /dev/diskN on macOS) or, with --allow-file, a file.

Several cards are written at once, each with its own progress line:
name them as node=device pairs, or pass --all and the devices to write the
next nodes of the cluster file that are built but not yet flashed (the
flash log, <output-dir>/flash.log, records every card written). One failing
card fails only its node; the summary says what each card now holds.

flash refuses the disk the system runs from, disks with a mounted partition
(unmount them first), disks smaller than the image, and disks that are not
removable unless --force. It asks before writing, naming the device's model
and size, unless --yes.`,
		Example: `  imgbake flash --list
  imgbake flash k5 /dev/sdb
  imgbake flash k5=/dev/sdb k6=/dev/sdc k7=/dev/sdd
  imgbake flash --all /dev/sdb /dev/sdc
  sudo imgbake flash out/k5.img.xz /dev/mmcblk0
  imgbake flash --allow-file k5 /tmp/k5-copy.img`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.list {
				if len(args) != 0 {
					return usagef("--list takes no arguments")
				}
				return a.listDevices(cmd.Context())
			}
			if o.all {
				if len(args) == 0 {
					return usagef("--all needs the devices to write (imgbake flash --all /dev/sdb /dev/sdc)")
				}
				pairs, err := a.unflashedPairs(g, args)
				if err != nil {
					return err
				}
				return a.runFlashMany(cmd.Context(), g, o, pairs)
			}
			if pairs, ok, err := flashPairs(args); err != nil {
				return err
			} else if ok {
				return a.runFlashMany(cmd.Context(), g, o, pairs)
			}
			if len(args) != 2 {
				return usagef("expected a node or image and a device, got %d argument(s) (see imgbake flash --list)", len(args))
			}
			return a.runFlash(cmd.Context(), g, o, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.list, "list", false, "list removable disks that could be targets")
	f.BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation")
	f.BoolVar(&o.all, "all", false, "write the next built, not yet flashed nodes to the devices given")
	f.BoolVar(&o.force, "force", false, "allow a disk that is not removable")
	f.BoolVar(&o.allowFile, "allow-file", false, "allow a new regular file as the target (created)")
	f.BoolVar(&o.overwriteFile, "overwrite-file", false, "with --allow-file: write into an existing regular file (asks first, unless --yes)")
	f.BoolVar(&o.noVerify, "no-verify", false, "do not read the card back after writing")
	f.BoolVar(&o.noBmap, "no-bmap", false, "write the whole image even when it has a .bmap")
	f.StringVar(&o.bmapPath, "bmap", "", "block map to use (default: the image's .bmap)")
	cmd.ValidArgsFunction = completeNodeThenFile(g)
	return cmd
}

func (a *App) listDevices(ctx context.Context) error {
	devs, err := flash.Devices(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	n, hidden := 0, 0
	for _, d := range devs {
		if !d.Removable || d.System != "" {
			hidden++
			continue
		}
		if n == 0 {
			fmt.Fprintln(tw, "DEVICE\tSIZE\tMODEL\tBUS\tNOTE")
		}
		n++
		note := ""
		switch {
		case d.ReadOnly:
			note = "read-only"
		case len(d.Mounts) > 0:
			note = "mounted on " + d.Mounts[0].Point
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Path, progress.Bytes(d.Size), d.Model, d.Bus, note)
	}
	tw.Flush()
	if n == 0 {
		fmt.Fprintln(a.Stdout, "No removable disks found: insert an SD card or a USB card reader.")
	}
	if hidden > 0 {
		fmt.Fprintf(a.Stdout, "(%d internal or system disk(s) not shown; writing to a non-removable disk needs --force)\n", hidden)
	}
	return nil
}

// imageFiles are where a node's image and its side files are.
type imageFiles struct {
	image, bmap string
}

// resolveImage turns a node name or an image path into the image file and
// its .bmap (empty when there is none).
func (a *App) resolveImage(g *globals, arg string) (imageFiles, error) {
	if strings.ContainsRune(arg, os.PathSeparator) || strings.Contains(arg, ".img") || fileExists(arg) {
		if !fileExists(arg) {
			return imageFiles{}, fmt.Errorf("image %s does not exist", arg)
		}
		return imageFiles{image: arg, bmap: flash.BmapPathFor(arg)}, nil
	}
	out := config.DefaultOutputDir
	if fileExists(g.config) {
		c, err := a.loadCluster(g.config)
		if err != nil {
			return imageFiles{}, err
		}
		out = c.Path(c.OutputDir)
	}
	// The manifest names the image its .bmap describes: an image of another
	// format left by an earlier build is stale.
	if m, err := manifest.Load(filepath.Join(out, arg+".img.manifest.json")); err == nil {
		p := filepath.Join(out, firstNonEmpty(m.Image.Compressed, m.Image.Name))
		if m.Image.RawKept && fileExists(filepath.Join(out, m.Image.Name)) {
			p = filepath.Join(out, m.Image.Name) // the same image, not to be decompressed
		}
		if filepath.Dir(p) == out && fileExists(p) {
			return imageFiles{image: p, bmap: flash.BmapPathFor(p)}, nil
		}
	}
	for _, ext := range []string{".img", ".img.zst", ".img.xz", ".img.gz"} {
		p := filepath.Join(out, arg+ext)
		if fileExists(p) {
			return imageFiles{image: p, bmap: flash.BmapPathFor(p)}, nil
		}
	}
	return imageFiles{}, fmt.Errorf("no image for node %s in %s/ (looked for %s.img, .img.zst, .img.xz): run `imgbake build %s` first, or give the image's path",
		arg, out, arg, arg)
}

func loadBmap(path string) (*bmap.Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading block map: %w", err)
	}
	defer f.Close()
	m, err := bmap.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// checkSet refuses, before anything is written or verified, an image or
// .bmap that the manifest beside the image does not describe: the manifest
// commits a build's files as a set, and a build killed while it switched
// them leaves files of two builds.
func checkSet(files imageFiles) error {
	if mf := flash.SidecarFor(files.image, ".manifest.json"); mf != "" {
		if man, err := manifest.Load(mf); err == nil {
			return man.CheckSet(files.image, files.bmap)
		}
	}
	return nil
}

// flashInput is an image opened for flashing with its block map.
type flashInput struct {
	files imageFiles
	m     *bmap.Map // nil: the whole image is written
	src   *flash.Source
	size  int64 // the raw image's size; -1 when unknown until its end
}

// openFlashInput resolves a node name or image path and opens the image.
func (a *App) openFlashInput(g *globals, o *flashOptions, imageArg string) (*flashInput, error) {
	files, err := a.resolveImage(g, imageArg)
	if err != nil {
		return nil, err
	}
	if o.bmapPath != "" {
		files.bmap = o.bmapPath
	}
	if o.noBmap {
		files.bmap = ""
	}
	var m *bmap.Map
	if files.bmap != "" {
		if m, err = loadBmap(files.bmap); err != nil {
			return nil, err
		}
	}
	if err := checkSet(files); err != nil {
		return nil, err
	}
	src, err := flash.OpenSource(files.image)
	if err != nil {
		return nil, err
	}
	size := src.Size
	if m != nil {
		size = m.ImageSize
	} else if mf := flash.SidecarFor(files.image, ".manifest.json"); size < 0 && mf != "" {
		// A compressed image without .bmap: the manifest knows its size,
		// so a too-small card is refused before writing.
		if man, err := manifest.Load(mf); err == nil && man.Image.Size > 0 {
			size = man.Image.Size
		}
	}
	return &flashInput{files: files, m: m, src: src, size: size}, nil
}

// writeSize returns the bytes a flash of in writes, and says what they are.
func (in *flashInput) writeSize() (int64, string) {
	total := flash.WriteSize(in.m, in.size)
	what := progress.Bytes(total)
	if in.m != nil {
		what += " of a " + progress.Bytes(in.m.ImageSize) + " image, from " + filepath.Base(in.files.bmap)
	} else {
		what += " (whole image, no .bmap)"
	}
	return total, what
}

func (a *App) runFlash(ctx context.Context, g *globals, o *flashOptions, imageArg, targetPath string) error {
	in, err := a.openFlashInput(g, o, imageArg)
	if err != nil {
		return err
	}
	defer in.src.Close()
	files, m, src, size := in.files, in.m, in.src, in.size
	isFile, loss, err := a.checkTarget(ctx, o, targetPath, files.image, size)
	if err != nil {
		return err
	}
	if loss != "" {
		if err := a.confirm(o, fmt.Sprintf("About to write %s to %s.\nEVERYTHING on %s will be lost. Type yes to continue: ", filepath.Base(files.image), loss, targetPath)); err != nil {
			return err
		}
	}
	dst, err := flash.OpenTarget(targetPath, flash.TargetOptions{AllowFile: o.allowFile, MinSize: max(size, 0)})
	if err != nil {
		return err
	}
	defer dst.Close()
	// From here on an interrupt stops the write cleanly (and says the card
	// is incomplete) instead of killing the process mid-write.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	total, what := in.writeSize()
	fmt.Fprintf(a.Stderr, "Writing %s to %s: %s\n", filepath.Base(files.image), targetPath, what)
	prog := newFlashProgress(a.Stderr, total, verifySize(m, total))
	res, err := flash.Write(ctx, src, dst, flash.Options{
		Map:      m,
		NoVerify: o.noVerify,
		Log:      a.logger(g),
		Progress: prog.add,
	})
	prog.done()
	a.recordFlash(imageArg, targetPath, loss, files.image, res, err)
	if err != nil {
		return flashError(err)
	}
	rate := float64(res.Bytes) / res.WriteTime.Seconds() / 1e6
	fmt.Fprintf(a.Stdout, "Wrote %s to %s in %.1fs (%.0f MB/s).\n", progress.Bytes(res.Bytes), targetPath, res.WriteTime.Seconds(), rate)
	if res.Verified {
		fmt.Fprintf(a.Stdout, "Verified: read back %d range(s) in %.1fs, all match.\n", len(res.Checks), res.VerifyTime.Seconds())
	} else {
		fmt.Fprintln(a.Stdout, "Not verified (--no-verify).")
	}
	if !isFile {
		fmt.Fprintf(a.Stdout, "%s can be removed.\n", targetPath)
	}
	return nil
}

// recordFlash adds a flash to the flash log beside the image.
func (a *App) recordFlash(imageArg, target, device, image string, res *flash.Result, err error) {
	rec := flash.Record{Time: time.Now().UTC(), Image: filepath.Base(image), Build: buildID(image), Target: target, Device: device}
	if strings.HasPrefix(rec.Image, imageArg+".img") {
		rec.Node = imageArg
	}
	if err != nil {
		rec.Error = err.Error()
	} else {
		rec.OK, rec.Verified = true, res.Verified
	}
	if err := flash.AppendHistory(filepath.Dir(image), rec); err != nil {
		fmt.Fprintf(a.Stderr, "imgbake: warning: %v\n", err)
	}
}

// flashError adds advice to a failed flash.
func flashError(err error) error {
	var mm *flash.MismatchError
	if errors.As(err, &mm) {
		return fmt.Errorf("verification failed: %w; the card may be faulty or fake: try again or use another card", err)
	}
	return err
}

// checkTarget applies the safety rules to the target. It reports whether
// the target is a file, and what writing would destroy (the device with its
// model and size, or an existing file), to be confirmed first; "" for a
// new file.
func (a *App) checkTarget(ctx context.Context, o *flashOptions, path, image string, size int64) (bool, string, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !o.allowFile {
			return false, "", fmt.Errorf("%s does not exist: give a disk such as /dev/sdb (see imgbake flash --list), or pass --allow-file to create an image file", path)
		}
		return true, "", nil
	}
	if err != nil {
		return false, "", err
	}
	if ist, err := os.Stat(image); err == nil && os.SameFile(st, ist) {
		return false, "", fmt.Errorf("%s is the image itself: give a card or another file", path)
	}
	if st.Mode().IsRegular() {
		if !o.allowFile {
			return false, "", fmt.Errorf("%s is a regular file, not a disk: pass --allow-file to write the image into a new file", path)
		}
		if !o.overwriteFile {
			return false, "", fmt.Errorf("%s already exists and flash never overwrites a file unasked: give a new file name, or pass --overwrite-file to write the image into it", path)
		}
		return true, fmt.Sprintf("the existing file %s (%s)", path, progress.Bytes(st.Size())), nil
	}
	d, err := flash.LookupDevice(ctx, path)
	if err != nil {
		return false, "", err
	}
	if d.BackingFile != "" {
		for _, f := range []string{image, flash.BmapPathFor(image), flash.SidecarFor(image, ".manifest.json"), strings.TrimSuffix(image, filepath.Ext(image))} {
			if bst, err := os.Stat(d.BackingFile); err == nil && f != "" {
				if ist, err := os.Stat(f); err == nil && os.SameFile(bst, ist) {
					return false, "", fmt.Errorf("%s is a loop device backed by %s, the image being flashed: give a card or another device", path, f)
				}
			}
		}
	}
	if err := flash.CheckDevice(d, size, flash.CheckOptions{Force: o.force}); err != nil {
		return false, "", err
	}
	return false, d.String(), nil
}

// confirm asks question and returns nil only when the user answers yes (or
// passed --yes).
func (a *App) confirm(o *flashOptions, question string) error {
	if o.yes {
		return nil
	}
	fmt.Fprint(a.Stderr, question)
	line, err := bufio.NewReader(a.Stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return err
	}
	if ans := strings.ToLower(strings.TrimSpace(line)); ans != "yes" && ans != "y" {
		fmt.Fprintln(a.Stderr)
		return fmt.Errorf("not confirmed, nothing written (pass --yes to skip the question)")
	}
	return nil
}

func verifySize(m *bmap.Map, written int64) int64 {
	if m == nil {
		return written
	}
	return m.MappedBytes()
}

// flashProgress shows a progress bar per phase (writing, then verifying) on
// a terminal, and nothing otherwise.
type flashProgress struct {
	bars  map[string]*progress.Bar
	phase string
}

func newFlashProgress(w io.Writer, write, verify int64) *flashProgress {
	return &flashProgress{bars: map[string]*progress.Bar{"write": progress.New(w, "writing", write), "verify": progress.New(w, "verifying", verify)}}
}

// add is called by flash.Write from one goroutine at a time (writing,
// then verifying).
func (p *flashProgress) add(phase string, n int64) {
	if phase != p.phase {
		if p.phase != "" {
			p.bars[p.phase].Done()
		}
		p.phase = phase
	}
	p.bars[phase].Add(n)
}

func (p *flashProgress) done() {
	for _, b := range p.bars {
		b.Done()
	}
}

package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/image/fat"
	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/progress"
	"golang.org/x/sync/errgroup"
)

// growMargin is the free space left on the root filesystem beyond what the
// plan needs before Build grows the image.
const growMargin = 16 << 20

// BuildOptions say what Build makes.
type BuildOptions struct {
	// Base is the prepared base image; it is opened read-only.
	Base *Base
	// Info is Inspect's result for Base; nil = Build inspects.
	Info *Info
	// Output is the raw image to write (out/k5.img). Next to it Build writes
	// Output+".bmap" and Output+".manifest.json".
	Output string
	// Plan is what goes into the image.
	Plan *plan.Plan
	// Size grows the image to at least this many bytes; 0 = only as far as
	// the plan needs.
	Size int64
	// Compress is "", "xz" or "zst": the image is then written as
	// Output+".xz" or Output+".zst" instead of Output.
	Compress string
	// Epoch (SOURCE_DATE_EPOCH) stamps every file written; with the same
	// inputs and Epoch, Build writes byte-identical files. Zero = now.
	Epoch time.Time
	// SHA256 asks for the whole raw image's sha256 too (Result.SHA256 and
	// the manifest's image.sha256): it reads all of the image's data, while
	// the block map's range checksums are mostly the base's, reused.
	SHA256 bool
	// Meta goes into the manifest (k3s version and sha256, node, profile).
	// Never secrets.
	Meta map[string]string
	// Progress receives progress bars when it is a terminal; nil = none.
	Progress io.Writer
	// Log receives what Build does; nil = silent.
	Log *slog.Logger
}

// Result names the files Build wrote.
type Result struct {
	// Image is the image file written (raw, or compressed with Compress).
	Image    string `json:"image"`
	Bmap     string `json:"bmap"`
	Manifest string `json:"manifest"`
	// SHA256 (only with BuildOptions.SHA256) and Size are those of the raw
	// image.
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size"`
	// Grown is true when Build enlarged the image and its root filesystem.
	Grown bool `json:"grown"`
	// RawKept is true when a compressed build found the raw image of an
	// earlier build holding the same bytes in every range (see
	// manifest.Image.RawKept): it is still valid and left in place.
	RawKept bool `json:"raw_kept,omitempty"`
}

// rawMatches reports whether the raw image at path, left by an earlier
// build, is the image m describes: the manifest beside it described that
// raw image with the same size and the same range checksums, and the file
// has not changed since that manifest was written.
func rawMatches(path string, m *manifest.Manifest) bool {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Size() != m.Image.Size {
		return false
	}
	mst, err := os.Stat(path + ".manifest.json")
	if err != nil || st.ModTime().After(mst.ModTime()) {
		return false
	}
	prev, err := manifest.Load(path + ".manifest.json")
	if err != nil || (prev.Image.Compressed != "" && !prev.Image.RawKept) || prev.Image.Name != m.Image.Name || prev.Image.Size != m.Image.Size {
		return false
	}
	return slices.Equal(prev.Ranges, m.Ranges)
}

// Build copies the base image, applies the plan to its filesystems (growing
// the root partition when it lacks room or o.Size asks), and writes the
// image, its block map and its manifest. Every file is written under a
// temporary name and renamed at the end: on error nothing is left behind.
func Build(ctx context.Context, o BuildOptions) (*Result, error) {
	if o.Base == nil || o.Plan == nil || o.Output == "" {
		return nil, errors.New("building image: Base, Plan and Output are required")
	}
	if o.Compress != "" && o.Compress != "xz" && o.Compress != "zst" {
		return nil, fmt.Errorf("building image: unknown compression %q (use xz or zst)", o.Compress)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Epoch.IsZero() {
		o.Epoch = time.Now()
	}
	o.Epoch = o.Epoch.UTC().Truncate(time.Second)
	if o.Info == nil {
		info, err := Inspect(o.Base.Path)
		if err != nil {
			return nil, err
		}
		o.Info = info
	} else {
		// Growing changes the partition sizes: keep the caller's Info (shared
		// by every node built from the base) as it is.
		info := *o.Info
		info.Partitions = slices.Clone(o.Info.Partitions)
		o.Info = &info
	}
	if err := os.MkdirAll(filepath.Dir(o.Output), 0o755); err != nil {
		return nil, fmt.Errorf("creating output directory: %w", err)
	}
	unlock, err := lockDir(filepath.Dir(o.Output), o.Log, false)
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", o.Output, err)
	}
	defer unlock()
	phase(ctx, "copy")
	b := &builder{o: &o}
	defer b.cleanup()
	res, err := b.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("building %s: %w", o.Output, err)
	}
	return res, nil
}

// builder holds one Build's temporary files.
type builder struct {
	o     *BuildOptions
	temps []string // removed by cleanup (a no-op for those renamed)
}

func (b *builder) temp(suffix string) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(b.o.Output), tempPattern(b.o.Output, suffix))
	if err != nil {
		return nil, fmt.Errorf("creating temporary file: %w", err)
	}
	b.temps = append(b.temps, f.Name())
	return f, nil
}

func (b *builder) cleanup() {
	for _, p := range b.temps {
		os.Remove(p)
	}
}

// writeBmap computes the block map (and the image checksum when asked)
// and writes the bmap to a temporary file.
func (b *builder) writeBmap(ctx context.Context, img *trackedFile, size int64) (*bmap.Map, *os.File, string, error) {
	var bm *bmap.Map
	var imgSum string
	g := new(errgroup.Group)
	g.Go(func() (err error) {
		bm, err = blockMap(ctx, img, size, b.o.Base.cells, b.o.Progress, b.o.Log)
		return err
	})
	if b.o.SHA256 {
		g.Go(func() (err error) {
			imgSum, err = hashFile(ctx, img.File, size, progress.New(b.o.Progress, "checksumming image", size))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, "", err
	}
	bmf, err := b.temp(".bmap")
	if err != nil {
		return nil, nil, "", err
	}
	_, err = bm.WriteTo(bmf)
	if cerr := bmf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, "", fmt.Errorf("writing bmap: %w", err)
	}
	return bm, bmf, imgSum, nil
}

func (b *builder) run(ctx context.Context) (*Result, error) {
	o := b.o
	start := time.Now()
	img, size, grown, err := b.makeImage(ctx)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	o.Log.Debug("copied base image", "took", time.Since(start))
	phase(ctx, "apply")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	files, edits, err := b.applyPlan(img)
	if err != nil {
		return nil, err
	}
	o.Log.Debug("applied plan", "took", time.Since(start))
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	phase(ctx, "bmap")
	bm, bmf, imgSum, err := b.writeBmap(ctx, img, size)
	if err != nil {
		return nil, err
	}
	o.Log.Debug("computed bmap and checksum", "took", time.Since(start))
	m := &manifest.Manifest{
		FormatVersion: manifest.FormatVersion, Epoch: o.Epoch, Meta: o.Meta, Files: files, Edits: edits,
		Removes: o.Plan.Removes,
		Base:    manifest.Base{SHA256: o.Base.InputSHA256, Format: string(o.Base.Format), Size: o.Base.Size, OS: o.Info.OS},
		Image: manifest.Image{Name: filepath.Base(o.Output), Size: size, SHA256: imgSum,
			Bmap: filepath.Base(o.Output) + ".bmap"},
	}
	for _, r := range bm.Ranges {
		br := bm.ByteRange(r)
		m.Ranges = append(m.Ranges, manifest.Range{Offset: br.Offset, Length: br.Length, SHA256: r.SHA256})
		if img.dirty[int(br.Offset/cellSize)] {
			m.Image.Changed = append(m.Image.Changed, br.Offset)
		}
	}
	if m.Image.BmapSHA256, err = manifest.FileSHA256(bmf.Name()); err != nil {
		return nil, fmt.Errorf("writing bmap: %w", err)
	}
	final := img.Name()
	res := &Result{Image: o.Output, Bmap: o.Output + ".bmap", Manifest: o.Output + ".manifest.json", SHA256: imgSum, Size: size, Grown: grown}
	if o.Compress != "" {
		cf, err := b.temp("." + o.Compress)
		if err != nil {
			return nil, err
		}
		o.Log.Debug("compressing image", "format", o.Compress)
		phase(ctx, "compress")
		csum, err := compressImage(ctx, img.File, size, o.Compress, cf, progress.New(o.Progress, "compressing", size))
		if err != nil {
			return nil, fmt.Errorf("compressing image: %w", err)
		}
		final, res.Image = cf.Name(), o.Output+"."+o.Compress
		m.Image.Compressed, m.Image.CompressedSHA256 = filepath.Base(res.Image), csum
		m.Image.RawKept = rawMatches(o.Output, m)
		res.RawKept = m.Image.RawKept
	}
	data, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	mf, err := b.temp(".json")
	if err != nil {
		return nil, err
	}
	if _, err := mf.Write(data); err != nil {
		mf.Close()
		return nil, fmt.Errorf("writing manifest: %w", err)
	}
	if err := mf.Close(); err != nil {
		return nil, fmt.Errorf("writing manifest: %w", err)
	}
	// The image holds the join token and the node password: only its owner
	// may read it. The bmap and the manifest hold no secrets. The manifest
	// goes last: it commits the set.
	commitStart := time.Now()
	if err := commitOutputs(ctx, []output{{final, res.Image, 0o600}, {bmf.Name(), res.Bmap, 0o644}, {mf.Name(), res.Manifest, 0o644}}); err != nil {
		return nil, err
	}
	o.Log.Debug("committed outputs (fsync and rename)", "took", time.Since(commitStart))
	o.Log.Info("image built", "image", res.Image, "size", size, "sha256", imgSum, "grown", grown)
	return res, nil
}

// makeImage copies the base into a temporary file and grows it when
// needed.
func (b *builder) makeImage(ctx context.Context) (*trackedFile, int64, bool, error) {
	o := b.o
	src, err := os.Open(o.Base.Path)
	if err != nil {
		return nil, 0, false, fmt.Errorf("opening base image: %w", err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return nil, 0, false, err
	}
	size := fi.Size()
	img, err := b.temp("")
	if err != nil {
		return nil, 0, false, err
	}
	bar := progress.New(o.Progress, "copying base image", size)
	err = cloneFile(ctx, img, src, size, bar)
	bar.Done()
	if err != nil {
		img.Close()
		return nil, 0, false, fmt.Errorf("copying base image: %w", err)
	}
	if err := ctx.Err(); err != nil {
		img.Close()
		return nil, 0, false, err
	}
	t := newTrackedFile(img)
	grown, newSize, err := b.grow(t, size)
	if err != nil {
		img.Close()
		return nil, 0, false, err
	}
	return t, newSize, grown, nil
}

// grow enlarges the image, its last (root) partition and the root
// filesystem when the plan needs more room than is free or o.Size asks.
func (b *builder) grow(img *trackedFile, size int64) (bool, int64, error) {
	o, info := b.o, b.o.Info
	need, err := planBytes(o.Plan)
	if err != nil {
		return false, 0, err
	}
	const mib = 1 << 20
	target := size
	if o.Size > target {
		target = o.Size
	}
	if short := need + growMargin - info.RootFree; short > 0 {
		target = max(target, size+short+16*mib) // room for new group metadata too
	}
	target = (target + 4*mib - 1) / (4 * mib) * (4 * mib)
	if target <= size {
		return false, size, nil
	}
	o.Log.Info("growing image", "from", size, "to", target, "plan_bytes", need, "root_free", info.RootFree)
	t, err := readTable(img, size)
	if err != nil {
		return false, 0, err
	}
	if err := img.Truncate(target); err != nil {
		return false, 0, fmt.Errorf("growing image file: %w", err)
	}
	rootPart, _ := info.Partition(info.RootPartition)
	partSize, err := t.growLast(img, rootPart.Number, target)
	if err != nil {
		return false, 0, fmt.Errorf("growing root partition: %w", err)
	}
	fsys, err := ext4.Open(img, rootPart.Start, partSize, &ext4.Options{Now: func() time.Time { return o.Epoch }, Log: o.Log})
	if err != nil {
		return false, 0, fmt.Errorf("opening root filesystem: %w", err)
	}
	if err := fsys.Grow(partSize); err != nil {
		fsys.Close()
		return false, 0, fmt.Errorf("growing root filesystem: %w", err)
	}
	if err := fsys.Close(); err != nil {
		return false, 0, fmt.Errorf("growing root filesystem: %w", err)
	}
	// Later steps read the partition table again from the image.
	for i := range info.Partitions {
		if info.Partitions[i].Number == rootPart.Number {
			info.Partitions[i].Size = partSize
		}
	}
	return true, target, nil
}

// applyPlan opens the filesystems of img and writes the plan into them.
func (b *builder) applyPlan(img *trackedFile) ([]manifest.File, []manifest.Edit, error) {
	o, info := b.o, b.o.Info
	rootPart, _ := info.Partition(info.RootPartition)
	root, err := ext4.Open(img, rootPart.Start, rootPart.Size, &ext4.Options{Now: func() time.Time { return o.Epoch }, Log: o.Log})
	if err != nil {
		return nil, nil, fmt.Errorf("opening root filesystem: %w", err)
	}
	a := &applier{root: root, o: o}
	if bp, ok := info.Partition(info.BootPartition); ok {
		if a.boot, err = fat.Open(img, bp.Start, bp.Size, false, o.Epoch); err != nil {
			root.Close()
			return nil, nil, fmt.Errorf("opening boot partition: %w", err)
		}
	}
	files, edits, err := a.apply(o.Plan)
	if err != nil {
		root.Close()
		if errors.Is(err, ext4.ErrNoSpace) {
			err = fmt.Errorf("%w (make the image larger with a bigger size)", err)
		}
		return nil, nil, err
	}
	if err := root.Close(); err != nil {
		return nil, nil, fmt.Errorf("writing root filesystem: %w", err)
	}
	if a.boot != nil {
		if err := a.boot.Sync(); err != nil {
			return nil, nil, fmt.Errorf("writing boot partition: %w", err)
		}
	}
	return files, edits, nil
}

// ctxReaderAt is an *os.File whose reads fail once ctx is done, so that
// long reads (checksumming) stop on an interrupt.
type ctxReaderAt struct {
	ctx context.Context
	*os.File
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.File.ReadAt(p, off)
}

// hashFile returns the hex sha256 of the first size bytes of f.
func hashFile(ctx context.Context, f *os.File, size int64, bar *progress.Bar) (string, error) {
	defer bar.Done()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	zeros := make([]byte, 1<<20)
	// Holes read as zeros: hash them from memory instead of reading them.
	hashZeros := func(n int64) {
		bar.Add(n)
		for n > 0 {
			k := min(n, int64(len(zeros)))
			h.Write(zeros[:k])
			n -= k
		}
	}
	var off int64
	for off < size {
		start, end, ok := nextData(f, off, size)
		if !ok {
			start, end = size, size
		}
		hashZeros(start - off)
		if _, err := io.CopyBuffer(h, progress.NewReader(io.NewSectionReader(ctxReaderAt{ctx, f}, start, end-start), bar), buf); err != nil {
			return "", fmt.Errorf("checksumming image: %w", err)
		}
		off = end
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

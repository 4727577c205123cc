package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/imgbake/imgbake/firstboot"
	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/k3s"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/imgbake/imgbake/internal/version"
	"github.com/imgbake/imgbake/profiles"
	"github.com/spf13/cobra"
)

type buildOptions struct {
	profile, base, out, k3sBinary, airgap, size, compress, cacheDir, profilesDir string
	all                                                                          bool
	// jobs is how many nodes are built at once (0 = one per CPU, up to 4).
	jobs int
	// dryRun checks and prints what would be built, writing nothing
	// (imgbake check).
	dryRun     bool
	sha256     bool
	baseSHA256 string
	// imgbakeBinary is imgbake for a netboot server node's architecture.
	imgbakeBinary string
}

func (a *App) buildCommand(g *globals) *cobra.Command {
	o := &buildOptions{}
	cmd := &cobra.Command{
		Use:   "build [--profile PROFILE] NODE... | --all",
		Short: "Bake node images (out/NODE.img)",
		Long: `build bakes one image per node from the base image: the k3s binary, its
config (server, token, node name, labels, taints), systemd units, hostname,
network, SSH keys and the kernel's cgroup flags. Flash it, boot, and the node
joins the cluster.

A node listed in the cluster file is built with its own settings and
profile; a node that is not listed is built from --profile alone.

Builds are reproducible: file times come from SOURCE_DATE_EPOCH when it is
set, else from a fixed date derived from the inputs.`,
		Example: `  imgbake build --profile server k1
  imgbake build --profile worker k5 k6 k7
  imgbake build --all --compress zst
  imgbake build k2 --k3s-binary ./k3s-arm64 --airgap-images k3s-airgap-images-arm64.tar.zst`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.all && len(args) > 0 {
				return usagef("give node names or --all, not both")
			}
			if !o.all && len(args) == 0 {
				return usagef("name the node(s) to build (imgbake build --profile worker k5), or use --all")
			}
			return a.runBuild(cmd.Context(), g, o, args)
		},
	}
	cmd.ValidArgsFunction = func(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		return clusterNodeNames(g, nil), cobra.ShellCompDirectiveNoFileComp
	}
	f := cmd.Flags()
	f.StringVarP(&o.profile, "profile", "p", "", "profile of the node(s): server, worker or one in the profiles directory")
	f.BoolVar(&o.all, "all", false, "build every node in the cluster file")
	f.StringVar(&o.base, "base", "", "base image (default: base: in the cluster file)")
	f.StringVar(&o.baseSHA256, "base-sha256", "", "refuse the base image unless its file has this sha256 (as its publisher lists it; default: base-sha256: in the cluster file)")
	f.StringVarP(&o.out, "out", "o", "", "output directory (default: output-dir: in the cluster file, or out)")
	f.StringVar(&o.k3sBinary, "k3s-binary", "", "use this k3s binary instead of downloading the release (k3s-arm64 or k3s-armhf)")
	f.StringVar(&o.airgap, "airgap-images", "", "preload this k3s airgap images tarball (k3s-airgap-images-<arch>.tar.zst)")
	f.StringVar(&o.size, "size", "", "grow the image to at least this size (e.g. 4G, 8GiB); default: as needed")
	f.StringVar(&o.compress, "compress", "", "compress the image: xz or zst")
	cmd.RegisterFlagCompletionFunc("compress", cobra.FixedCompletions([]string{"xz", "zst"}, cobra.ShellCompDirectiveNoFileComp))
	f.StringVar(&o.imgbakeBinary, "imgbake-binary", "", "imgbake for a netboot server node's architecture (default: this one, or imgbake-linux-ARCH beside it)")
	f.IntVarP(&o.jobs, "jobs", "j", 0, "build this many nodes at once (default: one per CPU, at most 4; 1 with --compress)")
	f.BoolVar(&o.sha256, "sha256", false, "also compute the whole raw image's sha256 (slower: reads all its data)")
	f.StringVar(&o.cacheDir, "cache-dir", "", "cache for downloads and decompressed bases (default ~/.cache/imgbake)")
	f.StringVar(&o.profilesDir, "profiles-dir", "", "directory of profile files (default ./profiles when it exists)")
	cmd.RegisterFlagCompletionFunc("profile", func(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		dir := o.profilesDir
		if c, err := config.Load(g.config); err == nil {
			dir = c.ProfilesDirFor(o.profilesDir)
		}
		names, _ := profiles.List(dir)
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// job is one node to build.
type job struct {
	node    config.Node
	profile *profiles.Profile
}

func (a *App) runBuild(ctx context.Context, g *globals, o *buildOptions, args []string) error {
	log := a.logger(g)
	size, err := config.ParseSize(o.size)
	if err != nil {
		return usageError{fmt.Errorf("--size: %w", err)}
	}
	if o.baseSHA256 != "" && !config.IsSHA256(o.baseSHA256) {
		return usagef("--base-sha256 %q is not a sha256: give the 64 hex digits the base's publisher lists", o.baseSHA256)
	}
	if o.compress != "" && o.compress != "xz" && o.compress != "zst" {
		return usagef("--compress %q: use xz or zst", o.compress)
	}
	epoch, err := a.sourceDateEpoch()
	if err != nil {
		return usageError{err}
	}
	c, err := a.loadCluster(g.config)
	if err != nil {
		return err
	}
	secrets, err := config.LoadSecrets(c.Path(c.SecretsFile))
	if err != nil {
		return err
	}
	jobs, err := a.jobs(c, o, args)
	if err != nil {
		return err
	}
	if err := checkModels(c, jobs); err != nil {
		return err
	}
	if err := a.checkCluster(c, o, jobs); err != nil {
		return err
	}
	cacheDir, err := a.cacheDir(c, o)
	if err != nil {
		return err
	}
	basePath := firstNonEmpty(o.base, c.Path(c.Base))
	if basePath == "" {
		return usagef("no base image: set base: in %s or pass --base", c.File)
	}
	if _, err := os.Stat(basePath); err != nil {
		return fmt.Errorf("base image %s: %w; download one (Raspberry Pi OS Lite: https://www.raspberrypi.com/software/operating-systems/) and set base: in %s, or pass --base", basePath, errors.Unwrap(err), c.File)
	}
	outDir := firstNonEmpty(o.out, c.Path(c.OutputDir))
	if o.airgap != "" {
		if err := k3s.CheckAirgap(o.airgap); err != nil {
			return err
		}
	}

	base, err := image.PrepareBase(ctx, basePath, filepath.Join(cacheDir, "base"), image.PrepareOptions{Progress: a.Stderr, Log: log, SHA256: firstNonEmpty(o.baseSHA256, c.BaseSHA256)})
	if interrupted(ctx, err) {
		return errors.New("interrupted while preparing the base image; no image was written")
	} else if errors.Is(err, image.ErrSHA256Mismatch) && o.baseSHA256 == "" {
		return fmt.Errorf("%s:%d: base-sha256: %w; or, if you changed the base on purpose, set base-sha256: to the new file's sha256 as its publisher lists it", c.File, c.Line("base-sha256"), err)
	} else if err != nil {
		return fmt.Errorf("preparing base image %s: %w", basePath, err)
	}
	info, err := image.Inspect(base.Path)
	if err != nil {
		return inspectError(basePath, base, err)
	}
	if err := checkSize(o.size, size, base.Size); err != nil {
		return err
	}
	if users, err := image.Accounts(base.Path, info); err == nil {
		if err := sshAccounts(c, jobs, users, info.OS.CloudInit); err != nil {
			return err
		}
	} else {
		log.Warn("cannot read the base image's users; SSH keys of a non-root user get uid 1000", "error", err)
	}
	if o.dryRun {
		for _, j := range jobs {
			if j.profile.NetbootServer.Merge(j.node.NetbootServer) != nil {
				if _, err := a.imgbakeFor(info.OS.Arch, o.imgbakeBinary); err != nil {
					return err
				}
			}
		}
		return a.printCheck(c, o, jobs, basePath, info, firstboot.Input{OS: info.OS, Cluster: c, Token: secrets.Token, Secrets: secrets, K3sBinary: "k3s", AirgapImages: o.airgap})
	}
	bin, err := a.k3sBinary(ctx, c, o, cacheDir, info.OS.Arch, log)
	if interrupted(ctx, err) {
		return errors.New("interrupted while getting k3s; no image was written")
	} else if err != nil {
		return err
	}
	if epoch.IsZero() {
		epoch = image.NewestFileTime(base.Path, info)
	}

	inputs, err := a.nodeInputs(jobs, firstboot.Input{OS: info.OS, Cluster: c, Token: secrets.Token, Secrets: secrets, K3sBinary: bin.Path, AirgapImages: o.airgap})
	if err != nil {
		return err
	}
	for i, j := range jobs {
		if inputs[i].Server, err = a.serverFiles(ctx, c, o, j, base, cacheDir, bin); interrupted(ctx, err) {
			return errors.New("interrupted while compressing the base for the netboot server; no image was written")
		} else if err != nil {
			return err
		}
	}
	// The images hold the join token: a new output directory is private.
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}
	nb := &nodeBuild{outDir: outDir, bin: bin, opts: image.BuildOptions{
		Base: base, Info: info, Size: size, Compress: o.compress, SHA256: o.sha256, Epoch: epoch, Progress: a.Stderr, Log: log,
	}}
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.node.Name
	}
	return a.buildNodes(ctx, names, outDir, buildParallelism(o.jobs, len(jobs), o.compress), func(i int, prog, out, errOut io.Writer) error {
		return a.buildNode(ctx, nb, jobs[i], inputs[i], prog, out, errOut)
	})
}

// maxParallelBuilds bounds the nodes built at once by default: each build
// copies the base's data, so more in flight only share the disk's
// bandwidth, while a few overlap one node's computing with another's
// writing and syncing.
const maxParallelBuilds = 4

// buildParallelism is how many nodes to build at once: --jobs, else one
// per CPU up to maxParallelBuilds; one with --compress, which already uses
// every CPU for each image.
func buildParallelism(flag, jobs int, compress string) int {
	n := flag
	if n <= 0 {
		n = min(runtime.GOMAXPROCS(0), maxParallelBuilds)
		if compress != "" {
			n = 1
		}
	}
	return max(1, min(n, jobs))
}

// nodeResult is what one node's build printed and how it ended.
type nodeResult struct {
	out, errOut bytes.Buffer
	err         error
	started     bool
	done        chan struct{}
}

// buildNodes builds the nodes (build(i, ...) builds names[i] into outDir,
// drawing its progress on prog), parallel at a time, and prints each node's
// lines in the nodes' order whatever order they finish in. After a failure
// no further node is started and those in flight finish; every failed node
// is named. With several at once on a terminal each node has a progress
// line, and the nodes' own lines are printed below them at the end.
func (a *App) buildNodes(ctx context.Context, names []string, outDir string, parallel int, build func(i int, prog, out, errOut io.Writer) error) error {
	res := make([]*nodeResult, len(names))
	for i := range res {
		res[i] = &nodeResult{done: make(chan struct{})}
	}
	var lines *progress.Lines
	progs := make([]io.Writer, len(names))
	for i := range progs {
		progs[i] = a.Stderr
	}
	if parallel > 1 {
		for i := range progs {
			progs[i] = nil // the bars of several builds would mix
		}
		if progress.IsTerminal(a.Stderr) {
			lines = progress.NewLines(a.Stderr)
			for i, n := range names {
				progs[i] = lines.Add(n)
			}
		}
	}
	finish := func(i int, status string) {
		if ln, ok := progs[i].(*progress.Line); ok {
			ln.Finish(status)
		}
	}
	slots := make(chan struct{}, parallel)
	var stop atomic.Bool
	go func() {
		for i, r := range res {
			slots <- struct{}{}
			if stop.Load() || ctx.Err() != nil {
				<-slots
				finish(i, "not built")
				close(r.done)
				continue
			}
			r.started = true
			go func() {
				defer func() { <-slots; close(r.done) }()
				switch r.err = build(i, progs[i], &r.out, &r.errOut); {
				case interrupted(ctx, r.err):
					finish(i, "interrupted")
				case r.err != nil:
					stop.Store(true)
					finish(i, "FAILED")
				default:
					finish(i, "done")
				}
			}()
		}
	}()
	if lines != nil { // the lines are drawn in place: print below them
		for _, r := range res {
			<-r.done
		}
		lines.Done()
	}
	var failed, notWritten, notStarted []string
	var errs []error
	for i, r := range res {
		<-r.done
		a.Stdout.Write(r.out.Bytes())
		a.Stderr.Write(r.errOut.Bytes())
		name := names[i]
		switch {
		case !r.started:
			notStarted = append(notStarted, name)
			notWritten = append(notWritten, filepath.Join(outDir, name+".img"))
		case interrupted(ctx, r.err):
			notWritten = append(notWritten, filepath.Join(outDir, name+".img"))
		case r.err != nil:
			failed = append(failed, name)
			errs = append(errs, r.err)
		}
	}
	if ctx.Err() != nil && len(notWritten) > 0 {
		if len(notWritten) == 1 {
			return fmt.Errorf("interrupted: %s was not written (an earlier one, if any, is unchanged); run the same command again to build it", notWritten[0])
		}
		return fmt.Errorf("interrupted: %s were not written (earlier ones, if any, are unchanged); run the same command again to build them", strings.Join(notWritten, ", "))
	}
	if len(errs) == 1 && len(notStarted) == 0 {
		return errs[0]
	}
	if len(errs) > 0 {
		for _, err := range errs {
			fmt.Fprintf(a.Stderr, "imgbake: %v\n", err)
		}
		msg := fmt.Sprintf("%d of %d nodes failed: %s", len(failed), len(names), strings.Join(failed, ", "))
		if len(notStarted) > 0 {
			msg += fmt.Sprintf("; not built after the failure: %s", strings.Join(notStarted, ", "))
		}
		return errors.New(msg + "; fix what is said above and build those nodes again")
	}
	return nil
}

// nodeInputs returns the planning input of each job (common plus its node
// and profile), after checking them; each distinct warning is printed once
// for the whole build, not once per node.
func (a *App) nodeInputs(jobs []job, common firstboot.Input) ([]firstboot.Input, error) {
	inputs := make([]firstboot.Input, len(jobs))
	var warnings []string
	for i, j := range jobs {
		inputs[i] = common
		inputs[i].Profile, inputs[i].Node = j.profile, j.node
		w, err := firstboot.Check(inputs[i])
		if err != nil {
			return nil, err
		}
		for _, s := range w {
			if !slices.Contains(warnings, s) {
				warnings = append(warnings, s)
			}
		}
	}
	for _, w := range warnings {
		fmt.Fprintf(a.Stderr, "imgbake: warning: %s\n", w)
	}
	return inputs, nil
}

// checkModels refuses ARMv6 boards (before any work), naming the
// cluster file's line.
func checkModels(c *config.Cluster, jobs []job) error {
	for _, j := range jobs {
		if _, err := firstboot.Check(firstboot.Input{Node: j.node}); err != nil {
			if _, i, listed := c.Node(j.node.Name); listed {
				f := fmt.Sprintf("nodes[%d].model", i)
				return fmt.Errorf("%s:%d: %s: %w", c.File, c.Line(f), f, err)
			}
			return err
		}
	}
	return nil
}

// nodeBuild is what the nodes of one build share.
type nodeBuild struct {
	opts   image.BuildOptions // all but Plan, Output and Meta
	outDir string
	bin    *k3s.Binary
}

// buildNode plans and writes one node's image and says where it is (on
// out; warnings on errOut; progress on prog).
func (a *App) buildNode(ctx context.Context, nb *nodeBuild, j job, in firstboot.Input, prog, out, errOut io.Writer) error {
	p, err := firstboot.Plan(in)
	if err != nil {
		return fmt.Errorf("node %s: %w", j.node.Name, err)
	}
	o := nb.opts
	o.Plan, o.Output, o.Progress = p, filepath.Join(nb.outDir, j.node.Name+".img"), prog
	o.Meta = map[string]string{
		"node": j.node.Name, "profile": j.profile.Name, "role": j.profile.Role,
		"k3s_version": nb.bin.Version, "k3s_sha256": nb.bin.SHA256, "k3s_arch": nb.bin.Arch,
		"imgbake": version.String(), "source_date_epoch": strconv.FormatInt(o.Epoch.Unix(), 10),
	}
	res, err := image.Build(ctx, o)
	if interrupted(ctx, err) {
		return err
	} else if err != nil {
		return fmt.Errorf("building %s: %w", j.node.Name, err)
	}
	what := progress.Bytes(res.Size)
	if res.Image != o.Output {
		what = "raw image " + what
	}
	if res.SHA256 != "" {
		what += ", sha256 " + res.SHA256
	}
	fmt.Fprintf(out, "%s: %s (%s)\n", j.node.Name, res.Image, what)
	if res.RawKept {
		fmt.Fprintf(out, "%s: %s is the same image and stays (flash uses it)\n", j.node.Name, o.Output)
		warnStale(errOut, o.Output, res.Image, o.Output)
	} else {
		warnStale(errOut, o.Output, res.Image)
	}
	return nil
}

// warnStale warns about an image of the node in another format (raw or
// compressed) left by an earlier build: the .bmap and manifest beside it now
// describe the new image, so it must not be flashed. current are the files
// that hold the new image; flash uses the last.
func warnStale(w io.Writer, output string, current ...string) {
	for _, p := range []string{output, output + ".xz", output + ".zst"} {
		if !slices.Contains(current, p) && fileExists(p) {
			fmt.Fprintf(w, "imgbake: warning: %s is from an earlier build and no longer matches %s.bmap; delete it (flash uses %s)\n", p, output, current[len(current)-1])
		}
	}
}

// inspectError is the error of image.Inspect on the prepared base of
// input: Inspect names the file it read, which is input itself unless input
// was decompressed into the cache.
func inspectError(input string, base *image.Base, err error) error {
	if base.Path == input {
		return err
	}
	return fmt.Errorf("%s (decompressed): %w", input, err)
}

// interrupted reports whether err comes from the user stopping imgbake
// (Ctrl-C or SIGTERM cancel ctx in main).
func interrupted(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, context.Canceled)
}

// loadCluster reads the cluster file, with advice when there is none.
func (a *App) loadCluster(path string) (*config.Cluster, error) {
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return nil, fmt.Errorf("no cluster file %s: run `imgbake init` to create one, or pass --config", path)
	}
	c, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	a.expandPaths(c)
	if err := a.addEnrolled(c); err != nil { // nodes enrolled over the network
		return nil, err
	}
	return c, nil
}

// expandPaths expands a leading ~/ in the cluster file's paths with $HOME
// (config.Cluster.Path leaves that to the CLI).
func (a *App) expandPaths(c *config.Cluster) {
	for _, p := range []*string{&c.Base, &c.OutputDir, &c.CacheDir, &c.ProfilesDir, &c.SecretsFile} {
		*p = a.expandHome(*p)
	}
}

// jobs resolves the nodes to build and their profiles.
func (a *App) jobs(c *config.Cluster, o *buildOptions, args []string) ([]job, error) {
	nodes, err := c.Select(args, o.all, o.profile)
	if errors.Is(err, config.ErrArgs) {
		return nil, usageError{err}
	} else if err != nil {
		return nil, err
	}
	ps, err := profiles.ForNodes(nodes, c.ProfilesDirFor(o.profilesDir))
	if err != nil {
		return nil, err
	}
	jobs := make([]job, len(nodes))
	for i, n := range nodes {
		jobs[i] = job{node: n, profile: ps[i]}
	}
	return jobs, nil
}

func (a *App) cacheDir(c *config.Cluster, o *buildOptions) (string, error) {
	return a.defaultCacheDir(firstNonEmpty(o.cacheDir, c.Path(c.CacheDir)))
}

func (a *App) k3sBinary(ctx context.Context, c *config.Cluster, o *buildOptions, cacheDir, arch string, log *slog.Logger) (*k3s.Binary, error) {
	if o.k3sBinary != "" {
		b, err := k3s.Local(o.k3sBinary, arch)
		if err != nil {
			return nil, err
		}
		b.Version = "local"
		return b, nil
	}
	f := &k3s.Fetcher{BaseURL: c.K3s.ReleaseURL, CacheDir: cacheDir, Progress: a.Stderr, Log: log}
	return f.Fetch(ctx, c.K3s.Version, arch)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

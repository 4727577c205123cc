package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/imgbake/imgbake/firstboot"
	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/k3s"
	"github.com/imgbake/imgbake/internal/version"
	"github.com/imgbake/imgbake/netboot/enroll"
)

// goArch is the Go architecture of an image architecture.
func goArch(arch string) string {
	if arch == "armhf" {
		return "arm"
	}
	return arch
}

// imgbakeFor finds imgbake for linux on the image's architecture, to put
// into a netboot server node's image: --imgbake-binary when given, else
// this imgbake when it is that build, else imgbake-linux-<goarch> beside
// this one (as `make cross` leaves them in bin/ and the release tarballs
// ship them). It must be this very version, which it checks.
func (a *App) imgbakeFor(arch, given string) (string, error) {
	want := "linux/" + goArch(arch)
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding imgbake for %s: %w", want, err)
	}
	path := given
	if path == "" {
		if runtime.GOOS+"/"+runtime.GOARCH == want {
			path = exe
		} else {
			path = filepath.Join(filepath.Dir(exe), "imgbake-linux-"+goArch(arch))
			if _, err := os.Stat(path); err != nil {
				return "", fmt.Errorf("the netboot server node's image needs imgbake for %s and this one is for %s/%s: put imgbake-linux-%s from the same release next to this imgbake (%s), or pass --imgbake-binary FILE (`make cross` builds bin/imgbake-linux-%s)",
					want, runtime.GOOS, runtime.GOARCH, goArch(arch), filepath.Dir(exe), goArch(arch))
			}
		}
	}
	if err := k3s.CheckELF(path, arch); err != nil {
		return "", fmt.Errorf("imgbake for the netboot server %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading imgbake for the netboot server: %w", err)
	}
	switch same, known := version.SameBuild(data); {
	case !known:
		fmt.Fprintf(a.Stderr, "imgbake: warning: this imgbake has no version stamp (not built by make), so %s cannot be checked to be the same version; the netboot server node runs it\n", path)
	case !same && given == "":
		return "", fmt.Errorf("%s is not this imgbake's version (%s): put the same release's imgbake-linux-%s next to this one, or pass --imgbake-binary FILE", path, version.String(), goArch(arch))
	case !same:
		fmt.Fprintf(a.Stderr, "imgbake: warning: --imgbake-binary %s is not this imgbake's version (%s); the netboot server node runs it as given\n", path, version.String())
	}
	return path, nil
}

// serverFiles gathers what the image of a netboot server node carries: this
// imgbake for its architecture, the cluster file, secrets, enrolled nodes
// and profiles, the base (compressed) and the k3s release in the cache.
func (a *App) serverFiles(ctx context.Context, c *config.Cluster, o *buildOptions, j job, base *image.Base, cacheDir string, bin *k3s.Binary) (*firstboot.NetbootServer, error) {
	settings := j.profile.NetbootServer.Merge(j.node.NetbootServer)
	if settings == nil {
		return nil, nil
	}
	if bin.Version == "local" {
		return nil, fmt.Errorf("node %s runs the netboot server (netboot-server:), which builds the other nodes itself with the cluster's k3s release: build it without --k3s-binary (its release is downloaded and verified)", j.node.Name)
	}
	if o.airgap != "" {
		fmt.Fprintf(a.Stderr, "imgbake: warning: the netboot server %s builds nodes without the airgap images of --airgap-images\n", j.node.Name)
	}
	if !slices.ContainsFunc(c.Nodes, func(n config.Node) bool { return n.Netboot != nil }) && c.Enroll == nil {
		fmt.Fprintf(a.Stderr, "imgbake: warning: %s runs the netboot server, but no node in %s has a netboot: entry and there is no enroll: policy: it has nothing to serve (its service restarts every few seconds); add either and build it again\n", j.node.Name, c.File)
	}
	exe, err := a.imgbakeFor(bin.Arch, o.imgbakeBinary)
	if err != nil {
		return nil, err
	}
	s := &firstboot.NetbootServer{Settings: *settings, Imgbake: exe, K3sVersion: bin.Version}
	if s.ClusterFile, err = os.ReadFile(c.File); err != nil {
		return nil, fmt.Errorf("reading the cluster file: %w", err)
	}
	if s.Secrets, err = os.ReadFile(c.Path(c.SecretsFile)); err != nil {
		return nil, fmt.Errorf("reading the secrets file: %w", err)
	}
	if s.Enrolled, err = os.ReadFile(c.Path(enroll.DefaultFile)); errors.Is(err, fs.ErrNotExist) {
		s.Enrolled = nil
	} else if err != nil {
		return nil, fmt.Errorf("reading the enrolled nodes: %w", err)
	}
	if s.Base, s.BaseSHA256, err = base.Compressed(ctx, filepath.Join(cacheDir, "base"), a.Stderr); err != nil {
		return nil, err
	}
	s.BaseName = filepath.Base(base.Input)
	if base.Path == base.Input { // a raw base travels compressed
		s.BaseName += ".zst"
	}
	asset, sums, err := k3s.Asset(bin.Arch)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join("k3s", bin.Version, bin.Arch)
	for _, n := range []string{asset, sums} {
		s.Cache = append(s.Cache, firstboot.CopyFile{Rel: filepath.Join(dir, n), Source: filepath.Join(filepath.Dir(bin.Path), n)})
	}
	if pd := c.ProfilesDirFor(o.profilesDir); pd != "" {
		err := filepath.WalkDir(pd, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, err := filepath.Rel(pd, p)
			s.Profiles = append(s.Profiles, firstboot.CopyFile{Rel: filepath.ToSlash(rel), Source: p})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("reading the profiles directory: %w", err)
		}
	}
	return s, nil
}

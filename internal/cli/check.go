package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imgbake/imgbake/firstboot"
	"github.com/imgbake/imgbake/image"
	"github.com/spf13/cobra"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/k3s"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/imgbake/imgbake/profiles"
)

// checkCluster checks what spans the whole cluster file before anything is
// baked: the server node's address against server: (with every listed
// node's profile), and warns once when the pinned k3s is out of support.
func (a *App) checkCluster(c *config.Cluster, o *buildOptions, jobs []job) error {
	dir := c.ProfilesDirFor(o.profilesDir)
	loaded := map[string]*profiles.Profile{}
	starts := func(n config.Node) bool {
		name := n.Profile
		if name == "" {
			return false
		}
		p, ok := loaded[name]
		if !ok {
			p, _ = profiles.Load(name, dir) // a bad profile is reported when its node is built
			loaded[name] = p
		}
		return p != nil && p.Role == profiles.Server && !p.Join
	}
	if err := c.CheckServerAddress(starts); err != nil {
		return err
	}
	if w := k3s.SupportWarning(c.K3s.Version, time.Now()); w != "" {
		fmt.Fprintf(a.Stderr, "imgbake: warning: %s:%d: %s\n", c.File, c.Line("k3s.version"), w)
	}
	return a.checkK3sKeys(c, jobs)
}

// checkK3sKeys checks each job's profile's k3s: keys against the pinned
// version's flag table, unless the cluster file says k3s-extra-keys: allow.
func (a *App) checkK3sKeys(c *config.Cluster, jobs []job) error {
	if c.K3sExtraKeys == "allow" {
		return nil
	}
	t, ok := k3s.Flags(c.K3s.Version)
	if !ok {
		fmt.Fprintf(a.Stderr, "imgbake: warning: this imgbake has no flag table for k3s %s; the profiles' k3s: keys are not checked\n", c.K3s.Version)
		return nil
	}
	done := map[*profiles.Profile]bool{}
	for _, j := range jobs {
		if done[j.profile] {
			continue
		}
		done[j.profile] = true
		if err := j.profile.CheckK3sKeys(t); err != nil {
			return err
		}
	}
	return nil
}

// checkSize refuses a --size below the base image's size: an image is
// never shrunk.
func checkSize(flag string, size, base int64) error {
	if size == 0 || size >= base {
		return nil
	}
	gib := float64(base) / (1 << 30)
	return usagef("--size %s (%s) is smaller than the base image (%s): imgbake grows images, never shrinks them; give at least --size %.1fG, or leave --size out", flag, progress.Bytes(size), progress.Bytes(base), float64(int(gib*10)+1)/10)
}

func (a *App) checkCommand(g *globals) *cobra.Command {
	o := &buildOptions{dryRun: true}
	cmd := &cobra.Command{
		Use:   "check [--profile PROFILE] [NODE...]",
		Short: "Check the cluster and print what build would bake, writing nothing",
		Long: `check runs every check build runs before it bakes anything (the cluster
file, the secrets file, profiles and their k3s: keys, the base image, the
server's address, duplicate addresses, serials and MACs, SSH keys, --size)
and prints, per node, what build would make: profile, role, model, address,
network boot identity, k3s version and architecture, and the base. With no
node names it checks every listed node. It downloads nothing and writes
nothing (a compressed base is decompressed into the cache, as build does).`,
		Example: `  imgbake check
  imgbake check k5 --size 8G`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				o.all = true
			}
			return a.runBuild(cmd.Context(), g, o, args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.profile, "profile", "p", "", "profile of the node(s): server, worker or one in the profiles directory")
	f.StringVar(&o.base, "base", "", "base image (default: base: in the cluster file)")
	f.StringVar(&o.baseSHA256, "base-sha256", "", "refuse the base image unless its file has this sha256 (default: base-sha256: in the cluster file)")
	f.StringVar(&o.size, "size", "", "the --size build would be given")
	f.StringVar(&o.cacheDir, "cache-dir", "", "cache for decompressed bases (default ~/.cache/imgbake)")
	f.StringVar(&o.profilesDir, "profiles-dir", "", "directory of profile files (default ./profiles when it exists)")
	return cmd
}

// printCheck prints what build would bake for jobs, after the per-node
// checks (nodeInputs), and writes nothing.
func (a *App) printCheck(c *config.Cluster, o *buildOptions, jobs []job, basePath string, info *image.Info, common firstboot.Input) error {
	if _, err := a.nodeInputs(jobs, common); err != nil {
		return err
	}
	version := c.K3s.Version
	if o.k3sBinary != "" {
		version = "local " + o.k3sBinary
	}
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPROFILE\tROLE\tMODEL\tADDRESS\tNETBOOT\tK3S\tARCH")
	for _, j := range jobs {
		n := j.node
		addr := firstNonEmpty(n.Address, "dhcp")
		nb := "-"
		if n.Netboot != nil {
			nb = strings.Trim(n.Netboot.Serial+" "+n.Netboot.MAC, " ")
		}
		role := j.profile.Role
		if j.profile.Join {
			role += " (joins)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, j.profile.Name, role, firstNonEmpty(n.Model, "-"), addr, nb, version, info.OS.Arch)
	}
	tw.Flush()
	b := info.OS
	fmt.Fprintf(a.Stdout, "base: %s (%s %s %s, %s, network %s, first boot %s)\n", basePath, b.Family, b.Release, b.Version, b.Arch, b.Network, b.FirstBoot)
	if b.CgroupV1 && k3s.NeedsCgroupV2(c.K3s.Version) {
		fmt.Fprintf(a.Stdout, "cgroup: the base boots cgroup v1 (systemd %d) and k3s %s needs cgroup v2: the nodes get systemd.unified_cgroup_hierarchy=1\n", b.Systemd, c.K3s.Version)
	}
	fmt.Fprintf(a.Stdout, "ok: %d node(s) would be built into %s; nothing was written\n", len(jobs), firstNonEmpty(o.out, c.Path(c.OutputDir)))
	return nil
}

package firstboot

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/config"
)

// Where a netboot server node keeps what `imgbake netboot` needs: one
// directory, root only, that holds the cluster file and everything its
// relative paths name (NetbootDir/imgbake.yaml reads base: base/NAME,
// cache-dir: cache, output-dir: out, profiles-dir: profiles, secrets-file:
// imgbake.secrets.yaml). The enrolled nodes and, by default, the nodes'
// disks (netboot-state) are written there by the server.
const (
	NetbootDir     = "/var/lib/imgbake/netboot"
	NetbootConfig  = NetbootDir + "/imgbake.yaml"
	NetbootSvc     = "imgbake-netboot.service"
	ImgbakeBin     = "/usr/local/bin/imgbake"
	netbootSecrets = "imgbake.secrets.yaml"
	netbootEnroll  = "imgbake.enrolled.yaml"
	// NetbootWait is how long the unit's imgbake netboot waits for its
	// interface and address at boot (--wait).
	NetbootWait = "2m"
)

// NetbootServer is what the image of a netboot server node carries
// besides the node itself, gathered by the caller from the build's own
// inputs: the same imgbake, cluster, secrets, base and k3s.
type NetbootServer struct {
	// Settings are the node's netboot-server: settings, defaults applied
	// (config.NetbootServer.Merge).
	Settings config.NetbootServer
	// Imgbake is imgbake for the image's architecture (a local file).
	Imgbake string
	// ClusterFile is the cluster file as the user wrote it; the copy on
	// the node has its paths pointed into NetbootDir.
	ClusterFile []byte
	// K3sVersion is the k3s release the nodes are built with, pinned in
	// the node's copy of the cluster file.
	K3sVersion string
	// Secrets is the secrets file (join token, password hash, Wi-Fi).
	Secrets []byte
	// Enrolled is the enrolled nodes' file, nil when there is none.
	Enrolled []byte
	// Base is the base image, compressed (a local file), BaseSHA256 its
	// sha256; BaseName is its file name on the node.
	Base, BaseName, BaseSHA256 string
	// Profiles are the profiles directory's files, Cache the cache's
	// files the node builds with (the verified k3s release of each
	// architecture), by path relative to that directory.
	Profiles, Cache []CopyFile
}

// CopyFile is a local file copied into the image, by its path relative to
// a directory.
type CopyFile struct {
	Rel    string
	Source string
}

// NetbootUnit is the systemd unit that runs `imgbake netboot` with
// execStart, in the manner of the servers it stands beside
// (dnsmasq.service, k3s.service): after the network is online, restarted
// always, logging to the journal, and `systemctl reload` re-reads the
// cluster file (SIGHUP). mounts are directories that must be mounted first
// (a state directory on a USB disk).
func NetbootUnit(execStart string, mounts ...string) string {
	requires := ""
	if len(mounts) > 0 {
		requires = "RequiresMountsFor=" + strings.Join(mounts, " ") + "\n"
	}
	return `[Unit]
Description=imgbake network boot server (DHCP proxy, TFTP, NBD) for Raspberry Pi nodes
Documentation=https://github.com/imgbake/imgbake#network-boot-no-sd-card
Wants=network-online.target
After=network-online.target
` + requires + `
[Service]
Type=exec
ExecStart=` + execStart + `
ExecReload=/bin/kill -HUP $MAINPID
# Root: ports 67 and 69, DHCP on the interface (CAP_NET_BIND_SERVICE,
# CAP_NET_ADMIN, CAP_NET_RAW), the secrets file and the nodes' disks.
User=root
AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW
Restart=always
RestartSec=5s
LimitNOFILE=65536
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
`
}

// netbootServer adds what the server runs on: imgbake, its unit (enabled)
// and its directory.
func (b *builder) netbootServer() error {
	s := b.in.Server
	if s == nil {
		return nil
	}
	if s.Imgbake == "" || s.Base == "" || s.BaseName == "" || len(s.Secrets) == 0 || len(s.ClusterFile) == 0 {
		return fmt.Errorf("planning the netboot server: imgbake, the base, the secrets and the cluster file are all needed")
	}
	set := map[string]string{
		"base": "base/" + s.BaseName, "base-sha256": s.BaseSHA256, "cache-dir": "cache", "output-dir": "out",
		"secrets-file": netbootSecrets, "profiles-dir": "", "k3s.version": s.K3sVersion,
	}
	if len(s.Profiles) > 0 {
		set["profiles-dir"] = "profiles"
	}
	cluster, err := config.Rewrite(s.ClusterFile, set)
	if err != nil {
		return err
	}
	root := func(p string, mode uint16, src string) {
		b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: p, Kind: plan.File, Mode: mode, Source: src})
	}
	root(ImgbakeBin, 0o755, s.Imgbake)
	for _, d := range []string{NetbootDir, NetbootDir + "/base", NetbootDir + "/cache", NetbootDir + "/out"} {
		b.dir(d, 0o700, 0, 0)
	}
	b.file(NetbootConfig, 0o600, "# The cluster file, copied here by imgbake build with its paths pointing\n# into "+NetbootDir+". Edit it here (then: systemctl reload imgbake-netboot),\n# or edit the original and build this node again.\n"+string(cluster))
	b.secret(NetbootDir+"/"+netbootSecrets, string(s.Secrets))
	if s.Enrolled != nil {
		b.file(NetbootDir+"/"+netbootEnroll, 0o600, string(s.Enrolled))
	}
	root(NetbootDir+"/base/"+s.BaseName, 0o600, s.Base)
	for _, set := range []struct {
		dir   string
		files []CopyFile
	}{{NetbootDir + "/profiles", s.Profiles}, {NetbootDir + "/cache", s.Cache}} {
		made := map[string]bool{}
		for _, f := range set.files {
			p := path.Join(set.dir, f.Rel)
			if !strings.HasPrefix(p, set.dir+"/") {
				return fmt.Errorf("planning the netboot server: %q is outside %s", f.Rel, set.dir)
			}
			for d := path.Dir(p); d != NetbootDir && !made[d]; d = path.Dir(d) {
				made[d] = true
			}
			root(p, 0o600, f.Source)
		}
		// Parents first, so each is 0700 before its files go in.
		dirs := slices.SortedFunc(maps.Keys(made), func(a, b string) int {
			return cmp.Or(cmp.Compare(strings.Count(a, "/"), strings.Count(b, "/")), cmp.Compare(a, b))
		})
		for _, d := range dirs {
			b.dir(d, 0o700, 0, 0)
		}
	}
	args := []string{ImgbakeBin, "netboot", "--config", NetbootConfig, "--interface", s.Settings.Interface, "--wait", NetbootWait, "--disk-size", s.Settings.DiskSize}
	var mounts []string
	if s.Settings.StateDir != "" {
		args = append(args, "--state-dir", s.Settings.StateDir)
		mounts = append(mounts, s.Settings.StateDir)
	}
	b.file(unitDir+"/"+NetbootSvc, 0o644, NetbootUnit(strings.Join(args, " "), mounts...))
	b.symlink(unitDir+"/multi-user.target.wants/"+NetbootSvc, unitDir+"/"+NetbootSvc)
	return nil
}

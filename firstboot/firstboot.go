// Package firstboot decides what goes into one node's image: the k3s binary,
// its config.yaml and systemd unit, a once-only first-boot unit, hostname,
// network, SSH keys, kernel command line flags and the profile's files.
//
// Plan is pure and deterministic: the same Input always gives the same
// plan.Plan, which the image layer applies. Tests compare plans with golden
// files.
package firstboot

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/profiles"
)

// Paths in the image.
const (
	K3sBin       = "/usr/local/bin/k3s"
	ConfigPath   = "/etc/rancher/k3s/config.yaml"
	PasswordPath = "/etc/rancher/node/password"
	StampPath    = "/var/lib/imgbake/firstboot.done"
	FirstbootSvc = "imgbake-firstboot.service"
	scriptDir    = "/usr/local/lib/imgbake"
	unitDir      = "/etc/systemd/system"
	airgapDir    = "/var/lib/rancher/k3s/agent/images"
)

// Input is everything Plan needs for one node.
type Input struct {
	// OS is what the image layer detected in the base image.
	OS plan.OS
	// Cluster is the cluster file (server address, SSH defaults).
	Cluster *config.Cluster
	Profile *profiles.Profile
	// Node is the listed node, or one with only Name (and Profile) set
	// for a node built from its profile alone.
	Node config.Node
	// Token is the join token; it goes only into Secret entries.
	Token string
	// Secrets holds the first-boot settings' secrets (password hash, Wi-Fi
	// passphrase); nil for none. They go only into Secret entries.
	Secrets *config.Secrets
	// K3sBinary is the local path of the verified k3s binary.
	K3sBinary string
	// AirgapImages is an optional images tarball to preload.
	AirgapImages string
	// Server, for a node with netboot-server:, is what the node needs to
	// run the cluster's network boot server (netboot.go); nil otherwise.
	Server *NetbootServer
}

// Check returns an error for a node that cannot run k3s, and warnings worth
// showing once per build (not per node).
func Check(in Input) (warnings []string, err error) {
	if in.Node.Model != "" {
		m, _ := config.NormalizeModel(in.Node.Model)
		if config.IsARMv6(m) {
			return nil, fmt.Errorf("node %s is a %s: k3s needs ARMv7 or newer: Pi 1 and Zero/Zero W cannot run it (Illegal instruction); Zero 2 W is fine", in.Node.Name, m)
		}
	} else if in.OS.Arch == "armhf" {
		warnings = append(warnings, "the base image is armhf (32-bit), which Raspberry Pi OS also builds for ARMv6 boards: k3s needs ARMv7 or newer, so it will not run on a Pi 1, Zero or Zero W; set model: for each node to have this checked")
	}
	if in.OS.CmdlinePath == "" {
		warnings = append(warnings, "the kernel command line of this image was not found: add cgroup_memory=1 cgroup_enable=memory to it yourself, or k3s will not start")
	}
	if err := checkSettings(in); err != nil {
		return nil, fmt.Errorf("node %s: %w", in.Node.Name, err)
	}
	if err := checkCgroup(in); err != nil {
		return nil, err
	}
	return append(warnings, settingsWarnings(in)...), nil
}

// Plan returns what the node's image must contain.
func Plan(in Input) (*plan.Plan, error) {
	if err := checkInput(in); err != nil {
		return nil, err
	}
	if _, err := Check(in); err != nil {
		return nil, err
	}
	node, err := resolve(in)
	if err != nil {
		return nil, err
	}
	// A base that is itself an imgbake output must run first boot again.
	b := &builder{in: in, node: node, p: &plan.Plan{Removes: []string{StampPath}}}
	b.k3s()
	if err := b.k3sConfig(); err != nil {
		return nil, err
	}
	b.units()
	b.hostname()
	b.cmdline()
	if err := b.network(); err != nil {
		return nil, err
	}
	b.cloudInit()
	b.ssh()
	if err := b.firstBootSettings(); err != nil {
		return nil, err
	}
	if err := b.netbootServer(); err != nil {
		return nil, err
	}
	if err := b.extraFiles(); err != nil {
		return nil, err
	}
	return b.p, nil
}

func checkInput(in Input) error {
	switch {
	case in.Cluster == nil:
		return errors.New("planning: no cluster")
	case in.Profile == nil:
		return errors.New("planning: no profile")
	case in.Token == "":
		return errors.New("planning: no join token")
	case in.K3sBinary == "":
		return errors.New("planning: no k3s binary")
	case in.OS.Arch != "arm64" && in.OS.Arch != "armhf":
		return fmt.Errorf("the base image's architecture is %q; imgbake builds arm64 and armhf images", in.OS.Arch)
	}
	return config.CheckHostname(in.Node.Name)
}

// resolved is the node with profile and node settings merged.
type resolved struct {
	name   string
	role   string // server or agent
	labels map[string]string
	taints []string
	// nodeRole is the imgbake.io/role value ("" for none).
	nodeRole string
}

func resolve(in Input) (*resolved, error) {
	p, n := in.Profile, in.Node
	r := &resolved{name: n.Name, role: p.Role, labels: map[string]string{}, nodeRole: p.NodeRole}
	for _, m := range []map[string]string{p.Labels, n.Labels} {
		for k, v := range m {
			if role, ok := config.RoleFromLabel(k); ok {
				r.nodeRole = role
				continue
			}
			r.labels[k] = v
		}
	}
	if r.nodeRole != "" {
		r.labels[config.RoleLabel] = r.nodeRole
	}
	// Node taints replace profile taints with the same key and effect.
	var all []config.Taint
	add := func(s string) error {
		t, err := config.ParseTaint(s)
		if err != nil {
			return err
		}
		for i, o := range all {
			if o.Key == t.Key && o.Effect == t.Effect {
				all[i] = t
				return nil
			}
		}
		all = append(all, t)
		return nil
	}
	if p.ControlPlaneTaint {
		add("node-role.kubernetes.io/control-plane:NoSchedule")
	}
	for _, list := range [][]string{p.Taints, n.Taints} {
		for _, s := range list {
			if err := add(s); err != nil {
				return nil, err
			}
		}
	}
	for _, t := range all {
		r.taints = append(r.taints, t.String())
	}
	return r, nil
}

type builder struct {
	in   Input
	node *resolved
	p    *plan.Plan
}

func (b *builder) file(path string, mode uint16, data string) {
	b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: path, Kind: plan.File, Mode: mode, Data: []byte(data)})
}

func (b *builder) secret(path, data string) {
	b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: path, Kind: plan.File, Mode: 0o600, Data: []byte(data), Secret: true})
}

func (b *builder) dir(path string, mode uint16, uid, gid uint32) {
	b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: path, Kind: plan.Dir, Mode: mode, UID: uid, GID: gid})
}

func (b *builder) symlink(path, target string) {
	b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: path, Kind: plan.Symlink, Mode: 0o777, Target: target})
}

func (b *builder) edit(part plan.Part, path, desc string, mode uint16, f func([]byte) ([]byte, error)) {
	b.p.Edits = append(b.p.Edits, plan.Edit{Part: part, Path: path, Desc: desc, Mode: mode, Func: f})
}

// k3s adds the binary, its symlinks (as install.sh makes them), the node
// password and the airgap images.
func (b *builder) k3s() {
	b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: K3sBin, Kind: plan.File, Mode: 0o755, Source: b.in.K3sBinary})
	for _, cmd := range []string{"kubectl", "crictl", "ctr"} {
		b.symlink("/usr/local/bin/"+cmd, "k3s")
	}
	b.dir("/etc/rancher", 0o755, 0, 0)
	b.dir("/etc/rancher/k3s", 0o755, 0, 0)
	b.dir("/etc/rancher/node", 0o700, 0, 0)
	b.secret(PasswordPath, NodePassword(b.in.Token, b.node.name))
	if b.in.AirgapImages != "" {
		b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: path.Join(airgapDir, filepath.Base(b.in.AirgapImages)), Kind: plan.File, Mode: 0o644, Source: b.in.AirgapImages})
	}
}

// NodePassword is the node's k3s node password: hex HMAC-SHA256 keyed with
// the token over "imgbake-node-password:<name>". Being derived, it is the
// same every time the node is baked, so a re-flashed node rejoins under its
// name instead of being rejected by the server.
func NodePassword(token, name string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("imgbake-node-password:" + name))
	return hex.EncodeToString(m.Sum(nil))
}

// extraFiles adds the profile's files. A file only its owner may read
// (registry credentials, a private key) is a Secret entry: its checksum is
// kept out of the manifest and logs, like the token's.
func (b *builder) extraFiles() error {
	for _, f := range b.in.Profile.Files {
		if f.Path == ConfigPath || f.Path == PasswordPath || f.Path == K3sBin {
			return fmt.Errorf("profile %s: files: %s is written by imgbake; use the profile's k3s: keys instead", b.in.Profile.Name, f.Path)
		}
		uid, gid := f.IDs()
		e := plan.Entry{Part: plan.Root, Path: f.Path, Kind: plan.File, Mode: f.Perm(), UID: uid, GID: gid, Source: f.Source, Secret: f.Perm()&0o077 == 0}
		if f.Source == "" {
			e.Data = []byte(f.Content)
		}
		b.p.Entries = append(b.p.Entries, e)
	}
	return nil
}

func bootPath(os plan.OS, p string) string {
	if os.CmdlinePart == plan.Boot {
		return path.Join(os.BootMount, p)
	}
	return p
}

// shQuote quotes s for a POSIX shell.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

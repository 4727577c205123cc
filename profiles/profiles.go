// Package profiles holds imgbake's node profiles: what kind of k3s node an
// image becomes (server or agent), with its labels, taints, k3s settings and
// extra files.
//
// The built-in profiles "server" and "worker" are embedded; a file
// <name>.yaml in the profiles directory overrides or adds to them.
package profiles

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/imgbake/imgbake/internal/config"
)

//go:embed builtin/*.yaml
var builtin embed.FS

// Roles of a profile.
const (
	Server = "server"
	Agent  = "agent"
)

// Profile is one node profile.
type Profile struct {
	// Name is the profile's name (its file name without .yaml).
	Name        string `yaml:"-"`
	Description string `yaml:"description"`
	// Role is "server" or "agent".
	Role string `yaml:"role"`
	// NodeRole is the node's role for kubectl's ROLES column: the node is
	// labelled imgbake.io/role=<NodeRole> and the server's reconciler adds
	// node-role.kubernetes.io/<NodeRole>=true. Agents default to the
	// profile name; servers need none (k3s labels them control-plane).
	NodeRole string `yaml:"node-role"`
	// ControlPlaneTaint taints a server with
	// node-role.kubernetes.io/control-plane:NoSchedule.
	ControlPlaneTaint bool `yaml:"control-plane-taint"`
	// Join makes a server join the cluster's server instead of starting a
	// new cluster (a second server of an HA cluster with cluster-init).
	Join   bool              `yaml:"join"`
	Labels map[string]string `yaml:"labels"`
	Taints []string          `yaml:"taints"`
	// K3s holds config.yaml keys passed through as they are.
	K3s   map[string]any `yaml:"k3s"`
	Files []File         `yaml:"files"`
	// NetbootServer makes the profile's nodes the cluster's network boot
	// server (config.NetbootServer); a node's own netboot-server: wins.
	NetbootServer *config.NetbootServer `yaml:"netboot-server"`

	// Origin is "built-in" or the file the profile was read from.
	Origin string `yaml:"-"`
	// doc knows the line of each field, for CheckK3sKeys.
	doc *config.Doc
}

// File is an extra file a profile puts on the root filesystem.
type File struct {
	Path string `yaml:"path"`
	// Mode is octal, as a string ("0644", the default).
	Mode string `yaml:"mode"`
	// Owner is "uid:gid" or "root" (the default).
	Owner   string `yaml:"owner"`
	Content string `yaml:"content"`
	// Source is a local file to copy, relative to the profile's directory.
	Source string `yaml:"source"`
}

// Perm returns the file's mode bits.
func (f File) Perm() uint16 {
	if f.Mode == "" {
		return 0o644
	}
	m, _ := strconv.ParseUint(f.Mode, 8, 16)
	return uint16(m)
}

// IDs returns the file's owner uid and gid.
func (f File) IDs() (uid, gid uint32) {
	o := strings.TrimSpace(f.Owner)
	if o == "" || o == "root" || o == "root:root" {
		return 0, 0
	}
	u, g, ok := strings.Cut(o, ":")
	if !ok {
		g = u
	}
	uu, _ := strconv.ParseUint(u, 10, 32)
	gg, _ := strconv.ParseUint(g, 10, 32)
	return uint32(uu), uint32(gg)
}

// reserved are config.yaml keys imgbake writes itself; the message says where
// they come from instead.
func reserved(key string) string {
	switch key {
	case "token", "token-file", "agent-token", "agent-token-file":
		return "the join token comes from the secrets file"
	case "server":
		return "the server address comes from server: in the cluster file (use join: true for a server that joins it)"
	case "node-name", "with-node-id":
		return "the node name is the node's name in the cluster file"
	case "node-label":
		return "use labels: in the profile or node"
	case "node-taint":
		return "use taints: in the profile or node"
	}
	return ""
}

// serverOnly reports whether a config.yaml key is a flag of k3s server that
// k3s agent does not have.
func serverOnly(key string) bool {
	switch key {
	case "cluster-init", "cluster-reset", "disable", "tls-san", "write-kubeconfig", "write-kubeconfig-mode",
		"write-kubeconfig-group", "cluster-cidr", "service-cidr", "cluster-dns", "cluster-domain",
		"flannel-backend", "flannel-ipv6-masq", "disable-network-policy", "disable-helm-controller",
		"disable-kube-proxy", "disable-cloud-controller", "disable-scheduler", "disable-apiserver",
		"disable-controller-manager", "disable-etcd", "datastore-endpoint", "secrets-encryption",
		"kube-apiserver-arg", "kube-controller-manager-arg", "kube-scheduler-arg",
		"kube-cloud-controller-manager-arg", "etcd-arg", "embedded-registry", "service-node-port-range",
		"egress-selector-mode", "advertise-address", "advertise-port", "https-listen-port":
		return true
	}
	return strings.HasPrefix(key, "etcd-")
}

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$`)
	k3sKey  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	ownerRE = regexp.MustCompile(`^(root|root:root|[0-9]+(:[0-9]+)?)$`)
)

// Load returns the profile called name: dir/name.yaml when dir is not empty
// and the file exists, else the built-in one.
func Load(name, dir string) (*Profile, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("%q is not a profile name (lower-case letters, digits and '-')", name)
	}
	if dir != "" {
		p := filepath.Join(dir, name+".yaml")
		data, err := os.ReadFile(p)
		if err == nil {
			return parse(name, p, filepath.Dir(p), data)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading profile %s: %w", p, err)
		}
	}
	data, err := builtin.ReadFile(path.Join("builtin", name+".yaml"))
	if err != nil {
		names, _ := List(dir)
		return nil, fmt.Errorf("no profile %q (available: %s); create %s to add it", name, strings.Join(names, ", "), filepath.Join(orDot(dir), name+".yaml"))
	}
	return parse(name, "built-in profile "+name, "", data)
}

// ForNodes returns the profile of each node (its Profile, as
// config.Cluster.Select sets it), loading each profile once from dir.
func ForNodes(nodes []config.Node, dir string) ([]*Profile, error) {
	loaded := map[string]*Profile{}
	ps := make([]*Profile, len(nodes))
	for i, n := range nodes {
		p, ok := loaded[n.Profile]
		if !ok {
			var err error
			if p, err = Load(n.Profile, dir); err != nil {
				return nil, err
			}
			loaded[n.Profile] = p
		}
		ps[i] = p
	}
	return ps, nil
}

func orDot(dir string) string {
	if dir == "" {
		return config.DefaultProfilesDir
	}
	return dir
}

// List returns the names of the built-in profiles and those in dir, sorted.
func List(dir string) ([]string, error) {
	set := map[string]bool{}
	ents, _ := builtin.ReadDir("builtin")
	for _, e := range ents {
		set[strings.TrimSuffix(e.Name(), ".yaml")] = true
	}
	if dir != "" {
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("listing profiles: %w", err)
		}
		for _, e := range ents {
			if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok && nameRE.MatchString(n) {
				set[n] = true
			}
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// parse decodes and checks a profile. dir resolves files' source paths; it is
// empty for built-in profiles.
func parse(name, origin, dir string, data []byte) (*Profile, error) {
	p := &Profile{Name: name, Origin: origin}
	d := config.NewDoc(origin)
	if err := d.Decode(data, p); err != nil {
		return nil, err
	}
	p.check(d, dir)
	if err := d.Err(); err != nil {
		return nil, err
	}
	p.doc = d
	if p.Role == Agent && p.NodeRole == "" {
		p.NodeRole = name
	}
	return p, nil
}

func (p *Profile) check(d *config.Doc, dir string) {
	switch p.Role {
	case Server, Agent:
	case "":
		d.Errorf("role", "missing: set role: server or role: agent")
	default:
		d.Errorf("role", "%q must be server or agent", p.Role)
	}
	if p.NodeRole != "" {
		if err := config.CheckLabelKey(config.RoleLabelPrefix + p.NodeRole); err != nil || config.CheckLabelValue(p.NodeRole) != nil {
			d.Errorf("node-role", "%q must be a label name (letters, digits, '-', '_', '.')", p.NodeRole)
		}
	}
	if p.Role == Agent && (p.ControlPlaneTaint || p.Join) {
		d.Errorf("role", "control-plane-taint and join apply only to role: server")
	}
	config.CheckLabels(d, "labels", p.Labels)
	config.CheckNetbootServer(d, "netboot-server", p.NetbootServer)
	for i, t := range p.Taints {
		if _, err := config.ParseTaint(t); err != nil {
			d.Errorf(fmt.Sprintf("taints[%d]", i), "%v", err)
		}
	}
	for k, v := range p.K3s {
		f := "k3s." + k
		if !k3sKey.MatchString(k) {
			d.Errorf(f, "%q is not a k3s flag name (lower-case, '-' between words, no leading --)", k)
		} else if why := reserved(k); why != "" {
			d.Errorf(f, "imgbake sets %s itself: %s", k, why)
		} else if p.Role == Agent && serverOnly(k) {
			d.Errorf(f, "%s is a k3s server setting; an agent (role: agent) does not accept it", k)
		} else if _, ok := v.(map[string]any); ok {
			d.Errorf(f, "expected a value or a list, found fields")
		}
	}
	seen := map[string]bool{}
	for i, f := range p.Files {
		p.checkFile(d, fmt.Sprintf("files[%d]", i), f, dir, seen)
		if f.Source != "" && dir != "" && !filepath.IsAbs(f.Source) {
			p.Files[i].Source = filepath.Join(dir, f.Source)
		}
	}
}

func (p *Profile) checkFile(d *config.Doc, field string, f File, dir string, seen map[string]bool) {
	switch {
	case !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/":
		d.Errorf(field+".path", "%q must be an absolute, clean path such as /etc/example.conf", f.Path)
	case seen[f.Path]:
		d.Errorf(field+".path", "%s is listed twice", f.Path)
	}
	seen[f.Path] = true
	if f.Mode != "" {
		if m, err := strconv.ParseUint(f.Mode, 8, 16); err != nil || m > 0o7777 {
			d.Errorf(field+".mode", "%q must be an octal mode such as \"0644\" (quote it)", f.Mode)
		}
	}
	if f.Owner != "" && !ownerRE.MatchString(f.Owner) {
		d.Errorf(field+".owner", "%q must be root or numeric uid:gid (names cannot be resolved inside the image)", f.Owner)
	}
	switch {
	case f.Content != "" && f.Source != "":
		d.Errorf(field, "give content or source, not both")
	case f.Source != "" && dir == "" && !filepath.IsAbs(f.Source):
		d.Errorf(field+".source", "a built-in profile cannot name a relative source")
	case f.Source != "":
		src := f.Source
		if !filepath.IsAbs(src) {
			src = filepath.Join(dir, src)
		}
		if st, err := os.Stat(src); err != nil {
			d.Errorf(field+".source", "cannot read %s: %v", src, errors.Unwrap(err))
		} else if !st.Mode().IsRegular() {
			d.Errorf(field+".source", "%s is not a regular file", src)
		}
	}
}

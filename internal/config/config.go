// Package config reads and checks imgbake's cluster file (imgbake.yaml) and
// secrets file (imgbake.secrets.yaml).
//
// Both are parsed through yaml.v3 nodes so that every problem names the file,
// line and field; unknown fields are rejected with a did-you-mean.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/imgbake/imgbake/netboot"
)

// DefaultReleaseURL is where k3s releases are downloaded from unless the
// cluster file names a mirror.
const DefaultReleaseURL = "https://github.com/k3s-io/k3s/releases/download"

// Default file names, relative to the directory holding the cluster file.
const (
	DefaultFile        = "imgbake.yaml"
	DefaultSecretsFile = "imgbake.secrets.yaml"
	DefaultOutputDir   = "out"
	DefaultProfilesDir = "profiles"
)

// Cluster is the cluster file.
type Cluster struct {
	// Server is the k3s server's address: a host name or IP, host:port, or
	// an https:// URL. Agents join https://<host>:6443 unless a port is given.
	Server string `yaml:"server"`
	K3s    K3s    `yaml:"k3s"`
	// Base is the base image (.img, .img.xz, .zip, ...).
	Base string `yaml:"base"`
	// BaseSHA256 is the sha256 of the base's file as its publisher lists
	// it: any other file is refused (as with build --base-sha256, which
	// wins over it).
	BaseSHA256  string `yaml:"base-sha256"`
	OutputDir   string `yaml:"output-dir"`
	CacheDir    string `yaml:"cache-dir"`
	ProfilesDir string `yaml:"profiles-dir"`
	SecretsFile string `yaml:"secrets-file"`
	// SSH applies to every node; a node's own keys are added to these.
	SSH SSH `yaml:"ssh"`
	// First-boot settings for every node (settings.go); a node may
	// override them.
	User     *User  `yaml:"user"`
	WiFi     *WiFi  `yaml:"wifi"`
	Timezone string `yaml:"timezone"`
	Locale   string `yaml:"locale"`
	Keyboard string `yaml:"keyboard"`
	Nodes    []Node `yaml:"nodes"`
	// Enroll, when set, enrols Pis that are not listed (netboot/enroll).
	Enroll *Enroll `yaml:"enroll"`
	// ServerAddressCheck "off" says that agents reach the server through an
	// address other than its own static one on purpose (a virtual IP, a
	// port forward); see CheckServerAddress.
	ServerAddressCheck string `yaml:"server-address-check"`
	// K3sExtraKeys "allow" lets profiles use k3s: keys that the pinned k3s
	// version's flag table does not list.
	K3sExtraKeys string `yaml:"k3s-extra-keys"`

	// File is the path the cluster file was read from; relative paths in
	// it are relative to its directory.
	File string `yaml:"-"`
	doc  *Doc
}

// K3s pins the k3s release.
type K3s struct {
	// Version is a release tag such as v1.36.4+k3s1.
	Version string `yaml:"version"`
	// ReleaseURL is the base URL of the releases (for mirrors).
	ReleaseURL string `yaml:"release-url"`
}

// SSH is the SSH access baked into an image.
type SSH struct {
	// User whose ~/.ssh/authorized_keys gets the keys: root (default) or a
	// user whose home is /home/<user>.
	User string `yaml:"user"`
	// UID and GID own /home/<user>/.ssh (default 1000).
	UID *int `yaml:"uid"`
	GID *int `yaml:"gid"`
	// AuthorizedKeys are OpenSSH public keys, one per entry.
	AuthorizedKeys []string `yaml:"authorized-keys"`
}

// Node is one machine of the cluster.
type Node struct {
	// Name is the hostname and Kubernetes node name.
	Name    string `yaml:"name"`
	Profile string `yaml:"profile"`
	// Model is the Raspberry Pi model (pi4, pi02w, ...), see Models.
	Model  string            `yaml:"model"`
	Labels map[string]string `yaml:"labels"`
	Taints []string          `yaml:"taints"`
	// Address is a static IPv4 address with prefix length (192.168.1.21/24);
	// empty means DHCP.
	Address string   `yaml:"address"`
	Gateway string   `yaml:"gateway"`
	DNS     []string `yaml:"dns"`
	SSH     SSH      `yaml:"ssh"`
	Netboot *Netboot `yaml:"netboot"`
	// NetbootServer makes the node the cluster's network boot server
	// (server.go); it overrides the profile's.
	NetbootServer *NetbootServer `yaml:"netboot-server"`
	// First-boot settings overriding the cluster's (settings.go).
	User     *User  `yaml:"user"`
	WiFi     *WiFi  `yaml:"wifi"`
	Timezone string `yaml:"timezone"`
	Locale   string `yaml:"locale"`
	Keyboard string `yaml:"keyboard"`
}

// Netboot identifies a network-booted Pi. The fields are as the file
// spells them; Identity returns them typed.
type Netboot struct {
	// Serial is the board serial's low 8 hex digits (the TFTP prefix).
	Serial string `yaml:"serial"`
	MAC    string `yaml:"mac"`
}

// Identity returns the Pi's serial and MAC as the netboot servers match
// them; either is empty when the file gives none. Load has checked both, so
// an error means a Netboot that did not come from Load.
func (nb *Netboot) Identity() (netboot.Serial, net.HardwareAddr, error) {
	var (
		serial netboot.Serial
		mac    net.HardwareAddr
		err    error
	)
	if nb.Serial != "" {
		if serial, err = netboot.ParseSerial(nb.Serial); err != nil {
			return "", nil, err
		}
	}
	if nb.MAC != "" {
		if mac, err = net.ParseMAC(nb.MAC); err != nil {
			return "", nil, fmt.Errorf("netboot.mac: %w", err)
		}
	}
	return serial, mac, nil
}

// modelInfo reports whether m is a canonical model name and whether its CPU
// is ARMv6 (which cannot run k3s).
func modelInfo(m string) (known, armv6 bool) {
	switch m {
	case "pi1", "pi0", "pi0w", "cm1":
		return true, true
	case "pi02w", "pi2", "pi3", "pi3+", "pi4", "pi400", "pi5", "pi500", "cm3", "cm3+", "cm4", "cm4s", "cm5":
		return true, false
	}
	return false, false
}

// modelAlias maps other spellings to the canonical model name.
func modelAlias(m string) string {
	switch m {
	case "pizero":
		return "pi0"
	case "pizerow":
		return "pi0w"
	case "pizero2w", "pi0-2w", "pizero2", "pi0_2w":
		return "pi02w"
	case "pi3b", "pi3b+", "pi3a+":
		if strings.HasSuffix(m, "+") {
			return "pi3+"
		}
		return "pi3"
	case "pi4b":
		return "pi4"
	case "pi5b":
		return "pi5"
	case "pi2b":
		return "pi2"
	case "pi1b", "pi1a", "pi1b+", "pi1a+":
		return "pi1"
	}
	return m
}

// NormalizeModel returns the canonical model name and whether it is known.
func NormalizeModel(m string) (string, bool) {
	m = modelAlias(strings.ToLower(strings.TrimSpace(m)))
	known, _ := modelInfo(m)
	return m, known
}

// IsARMv6 reports whether a (canonical) model has an ARMv6 CPU: Pi 1, Zero,
// Zero W and Compute Module 1.
func IsARMv6(model string) bool {
	_, v6 := modelInfo(model)
	return v6
}

var (
	versionRE = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-rc[0-9]+)?\+k3s[0-9]+$`)
	serialRE  = regexp.MustCompile(`^[0-9a-f]{8}$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	profileRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$`)
	userRE    = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// Load reads and checks the cluster file at path.
func Load(path string) (*Cluster, error) {
	var c Cluster
	d, err := ParseFile(path, &c)
	if err != nil {
		return nil, err
	}
	c.File, c.doc = path, d
	c.check()
	if err := d.Err(); err != nil {
		return nil, err
	}
	c.setDefaults()
	return &c, nil
}

func (c *Cluster) setDefaults() {
	if c.K3s.ReleaseURL == "" {
		c.K3s.ReleaseURL = DefaultReleaseURL
	}
	c.K3s.ReleaseURL = strings.TrimRight(c.K3s.ReleaseURL, "/")
	if c.OutputDir == "" {
		c.OutputDir = DefaultOutputDir
	}
	if c.SecretsFile == "" {
		c.SecretsFile = DefaultSecretsFile
	}
	for i := range c.Nodes {
		if m, ok := NormalizeModel(c.Nodes[i].Model); ok {
			c.Nodes[i].Model = m
		}
		if c.Nodes[i].Netboot != nil {
			c.Nodes[i].Netboot.Serial = strings.ToLower(c.Nodes[i].Netboot.Serial)
		}
	}
}

// Path resolves p (from the cluster file) against the cluster file's
// directory. An empty p stays empty.
func (c *Cluster) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	if strings.HasPrefix(p, "~/") {
		return p // the CLI expands ~ with the user's home
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// Line returns the line of a field of the cluster file (nodes[2].profile), or
// 0 when unknown.
func (c *Cluster) Line(field string) int {
	if c.doc == nil {
		return 0
	}
	return c.doc.Line(field)
}

// Node returns the listed node called name and its index.
func (c *Cluster) Node(name string) (*Node, int, bool) {
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			return &c.Nodes[i], i, true
		}
	}
	return nil, -1, false
}

// IsSHA256 reports whether s is a hex sha256 (64 digits, either case).
func IsSHA256(s string) bool {
	return sha256RE.MatchString(strings.ToLower(s))
}

func (c *Cluster) check() {
	d := c.doc
	if c.Server == "" {
		d.Errorf("server", "missing: set server: to the k3s server's address (host name, IP or https:// URL)")
	} else if _, err := ServerURL(c.Server); err != nil {
		d.Errorf("server", "%v", err)
	}
	switch {
	case c.K3s.Version == "":
		d.Errorf("k3s.version", "missing: pin a k3s release tag such as v1.36.4+k3s1 (see https://github.com/k3s-io/k3s/releases)")
	case !versionRE.MatchString(c.K3s.Version):
		d.Errorf("k3s.version", "%q is not a k3s release tag; expected the form v1.36.4+k3s1", c.K3s.Version)
	}
	if c.K3s.ReleaseURL != "" {
		if u, err := url.Parse(c.K3s.ReleaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			d.Errorf("k3s.release-url", "%q must be an http(s) URL such as %s", c.K3s.ReleaseURL, DefaultReleaseURL)
		}
	}
	if c.BaseSHA256 != "" {
		c.BaseSHA256 = strings.ToLower(c.BaseSHA256)
		switch {
		case !IsSHA256(c.BaseSHA256):
			d.Errorf("base-sha256", "%q is not a sha256: expected the 64 hex digits the base's publisher lists (sha256sum prints them)", c.BaseSHA256)
		case c.Base == "":
			d.Errorf("base-sha256", "it checks base:, which is not set: add base: (the image file it is the sha256 of)")
		}
	}
	checkSSH(d, "ssh", c.SSH)
	checkSettings(d, "", c.User, c.WiFi, c.Timezone, c.Locale, c.Keyboard)
	c.checkEnroll()
	seen := map[string]int{}
	for i, n := range c.Nodes {
		f := fmt.Sprintf("nodes[%d]", i)
		if err := CheckHostname(n.Name); err != nil {
			d.Errorf(f+".name", "%v", err)
		} else if j, dup := seen[n.Name]; dup {
			d.Errorf(f+".name", "node %q is listed twice (also at line %d)", n.Name, d.Line(fmt.Sprintf("nodes[%d].name", j)))
		} else {
			seen[n.Name] = i
		}
		c.checkNode(f, n)
	}
	c.checkUnique()
	for f, v := range map[string]struct{ got, want string }{
		"server-address-check": {c.ServerAddressCheck, "off"},
		"k3s-extra-keys":       {c.K3sExtraKeys, "allow"},
	} {
		if v.got != "" && v.got != v.want {
			d.Errorf(f, "%q: the only value is %s (or leave it out)", v.got, v.want)
		}
	}
}

func (c *Cluster) checkNode(f string, n Node) {
	d := c.doc
	if n.Profile != "" && !profileRE.MatchString(n.Profile) {
		d.Errorf(f+".profile", "%q is not a profile name (lower-case letters, digits, '-')", n.Profile)
	}
	if n.Model != "" {
		if _, ok := NormalizeModel(n.Model); !ok {
			d.Errorf(f+".model", "unknown model %q; known: %s", n.Model, strings.Join(ModelNames(), ", "))
		} else if n.Netboot != nil && !CanNetboot(n.Model) {
			d.Errorf(f+".netboot", "a %s cannot boot from the network (%s); remove netboot: and flash its image, or use a Pi 3B, 3B+, 4, 400, 5, 500, CM4 or CM5", n.Model, netbootWhyNot(n.Model))
		}
	}
	CheckLabels(d, f+".labels", n.Labels)
	CheckNetbootServer(d, f+".netboot-server", n.NetbootServer)
	for i, t := range n.Taints {
		if _, err := ParseTaint(t); err != nil {
			d.Errorf(fmt.Sprintf("%s.taints[%d]", f, i), "%v", err)
		}
	}
	var prefix netip.Prefix
	if n.Address != "" {
		p, err := netip.ParsePrefix(n.Address)
		switch {
		case err != nil || !p.Addr().Is4():
			d.Errorf(f+".address", "%q: expected an IPv4 address with prefix length, such as 192.168.1.21/24", n.Address)
		case p.Bits() < 8 || p.Bits() > 32:
			d.Errorf(f+".address", "%q: prefix length /%d is unlikely; a home network is usually /24", n.Address, p.Bits())
		case p.Bits() < 31 && p.Addr() == p.Masked().Addr():
			d.Errorf(f+".address", "%q is the network address, not a host address", n.Address)
		case p.Bits() < 31 && p.Addr() == broadcast(p):
			d.Errorf(f+".address", "%q is the network's broadcast address, not a host address", n.Address)
		default:
			prefix = p
		}
	} else if n.Gateway != "" || len(n.DNS) > 0 {
		d.Errorf(f+".address", "gateway and dns are used only with a static address: add address: (e.g. 192.168.1.21/24) or remove them")
	}
	if n.Gateway != "" {
		g, err := netip.ParseAddr(n.Gateway)
		switch {
		case err != nil || !g.Is4():
			d.Errorf(f+".gateway", "%q is not an IPv4 address", n.Gateway)
		case prefix.IsValid() && !prefix.Masked().Contains(g):
			d.Errorf(f+".gateway", "%s is not in the node's network %s: the node could not reach it; fix the gateway, or the address's prefix length", n.Gateway, prefix.Masked())
		case prefix.IsValid() && g == prefix.Addr():
			d.Errorf(f+".gateway", "%s is the node's own address; the gateway is your router's address", n.Gateway)
		}
	}
	for i, s := range n.DNS {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			d.Errorf(fmt.Sprintf("%s.dns[%d]", f, i), "%q is not an IP address", s)
		}
	}
	checkSSH(d, f+".ssh", n.SSH)
	checkSettings(d, f, n.User, n.WiFi, n.Timezone, n.Locale, n.Keyboard)
	if n.User != nil && n.User.Name == "" && c.User == nil {
		d.Errorf(f+".user.name", "missing: no user: name is set for the cluster, so the node's user needs one")
	}
	if nb := n.Netboot; nb != nil {
		if nb.Serial == "" && nb.MAC == "" {
			d.Errorf(f+".netboot", "give the Pi's serial (Pi 4/5: the last 8 digits of `grep Serial /proc/cpuinfo`) or its mac (a Pi 3B's ROM sends no serial), or both")
		}
		if nb.Serial != "" && !serialRE.MatchString(strings.ToLower(nb.Serial)) {
			d.Errorf(f+".netboot.serial", "%q: expected the serial's low 8 hex digits (from `vcgencmd otp_dump | grep ^28:` or the TFTP requests)", nb.Serial)
		}
		if nb.MAC != "" {
			if hw, err := net.ParseMAC(nb.MAC); err != nil || len(hw) != 6 {
				d.Errorf(f+".netboot.mac", "%q is not a MAC address like dc:a6:32:01:36:c2", nb.MAC)
			}
		}
	}
}

// CheckLabels records a problem on d for each bad label in m (field names
// the map), including more than one node-role.kubernetes.io/ label.
func CheckLabels(d *Doc, field string, m map[string]string) {
	var roles []string
	for k, v := range m {
		if err := CheckLabel(k, v); err != nil {
			d.Errorf(field+"."+k, "%v", err)
			continue
		}
		if r, ok := RoleFromLabel(k); ok {
			roles = append(roles, r)
			if v != "" && v != "true" {
				d.Errorf(field+"."+k, "a role label's value is \"true\" or empty, not %q", v)
			}
			if k == RoleLabelPrefix+"control-plane" || k == RoleLabelPrefix+"master" || k == RoleLabelPrefix+"etcd" {
				d.Errorf(field+"."+k, "k3s sets %s on servers itself; use a server profile instead", k)
			}
		}
		if k == RoleLabel {
			d.Errorf(field+"."+k, "%s is set by imgbake from the profile's node-role; use node-role: or a %s<role> label", RoleLabel, RoleLabelPrefix)
		}
	}
	if len(roles) > 1 {
		d.Errorf(field, "a node gets one role label (%s<role>); found %d: %s", RoleLabelPrefix, len(roles), strings.Join(roles, ", "))
	}
}

func checkSSH(d *Doc, f string, s SSH) {
	if s.User != "" && s.User != "root" && !userRE.MatchString(s.User) {
		d.Errorf(f+".user", "%q is not a user name", s.User)
	}
	for _, id := range []struct {
		name string
		v    *int
	}{{"uid", s.UID}, {"gid", s.GID}} {
		if id.v != nil && (*id.v < 0 || *id.v > 65535) {
			d.Errorf(f+"."+id.name, "%d is out of range", *id.v)
		}
	}
	for i, k := range s.AuthorizedKeys {
		if err := CheckAuthorizedKey(k); err != nil {
			d.Errorf(fmt.Sprintf("%s.authorized-keys[%d]", f, i), "%v", err)
		}
	}
}

// ModelNames returns the known Raspberry Pi model names, sorted.
func ModelNames() []string {
	return []string{"pi1", "pi0", "pi0w", "pi02w", "pi2", "pi3", "pi3+", "pi4", "pi400", "pi5", "pi500", "cm1", "cm3", "cm3+", "cm4", "cm4s", "cm5"}
}

// ServerURL turns the cluster file's server (host, host:port or URL) into the
// URL agents join: https://host:6443 unless a port or URL is given.
func ServerURL(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
			return "", fmt.Errorf("%q: expected https://HOST[:PORT] (k3s serves only https)", s)
		}
		if err := checkHost(u.Hostname()); err != nil {
			return "", err
		}
		return "https://" + u.Host, nil
	}
	host, port := s, "6443"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.Count(s, ":") > 1 { // bare IPv6
		host = strings.Trim(s, "[]")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("server %q: bad port %q", s, port)
	}
	if err := checkHost(host); err != nil {
		return "", err
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// ServerHost returns the host part of the cluster's server (for tls-san).
func ServerHost(s string) string {
	u, err := ServerURL(s)
	if err != nil {
		return ""
	}
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Hostname()
}

func checkHost(h string) error {
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if err := CheckDNSSubdomain(strings.ToLower(h)); err != nil {
		return fmt.Errorf("server host %q is neither an IP address nor a DNS name", h)
	}
	return nil
}

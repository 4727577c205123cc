package config

import (
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// NetbootServer makes a node the cluster's own network boot server: its
// image carries imgbake, the cluster file, the secrets, the base image and
// k3s, and runs `imgbake netboot` at boot (imgbake-netboot.service). It may
// be set on a profile or on a node (the node's wins).
type NetbootServer struct {
	// Interface is the node's interface on the Pis' network (default eth0).
	Interface string `yaml:"interface"`
	// DiskSize is the size each network-booted node's disk is grown to
	// (default 16G), as `imgbake netboot --disk-size`.
	DiskSize string `yaml:"disk-size"`
	// StateDir is where the nodes' disks live on the server node: an
	// absolute path, e.g. a USB SSD's mount point (default
	// /var/lib/imgbake/netboot/netboot-state on the node's own disk).
	StateDir string `yaml:"state-dir"`
}

// Defaults of NetbootServer.
const (
	DefaultNetbootInterface = "eth0"
	DefaultNetbootDiskSize  = "16G"
)

var ifaceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}$`)

// CheckNetbootServer records the problems of s (at field) in d.
func CheckNetbootServer(d *Doc, field string, s *NetbootServer) {
	if s == nil {
		return
	}
	if s.Interface != "" && !ifaceRE.MatchString(s.Interface) {
		d.Errorf(field+".interface", "%q is not a network interface name (such as eth0 or end0; see `ip -br link` on the node)", s.Interface)
	}
	if s.DiskSize != "" {
		if n, err := ParseSize(s.DiskSize); err != nil {
			d.Errorf(field+".disk-size", "%v", err)
		} else if n < 1<<30 {
			d.Errorf(field+".disk-size", "%s is too small for a node's disk: give at least 1G (e.g. 16G)", s.DiskSize)
		}
	}
	if s.StateDir != "" && (!filepath.IsAbs(s.StateDir) || strings.ContainsAny(s.StateDir, " \t\n\"'\\$%")) {
		d.Errorf(field+".state-dir", "%q must be an absolute path on the server node without spaces or quotes (e.g. /mnt/ssd/imgbake)", s.StateDir)
	}
}

// Merge returns s with the fields of over that are set replacing its own;
// either may be nil.
func (s *NetbootServer) Merge(over *NetbootServer) *NetbootServer {
	if s == nil && over == nil {
		return nil
	}
	var m NetbootServer
	for _, v := range []*NetbootServer{s, over} {
		if v == nil {
			continue
		}
		if v.Interface != "" {
			m.Interface = v.Interface
		}
		if v.DiskSize != "" {
			m.DiskSize = v.DiskSize
		}
		if v.StateDir != "" {
			m.StateDir = v.StateDir
		}
	}
	if m.Interface == "" {
		m.Interface = DefaultNetbootInterface
	}
	if m.DiskSize == "" {
		m.DiskSize = DefaultNetbootDiskSize
	}
	return &m
}

// ParseSize reads 4G, 4GiB, 512M, 8000000000 (suffixes are powers of 1024).
func ParseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n <= 0 || n*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("%q: expected a size such as 4G or 8GiB", s)
	}
	return int64(n * float64(mult)), nil
}

// Rewrite returns the cluster file data with the given settings changed:
// keys are paths of mapping keys ("base", "k3s.version"); an empty value
// removes the key. Everything else, comments included, is kept, though
// yaml.v3 re-indents the document. imgbake uses it for the copy of the
// cluster file it puts on a netboot server node, never on the user's file.
func Rewrite(data []byte, set map[string]string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("reading the cluster file: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the cluster file is not a YAML mapping")
	}
	for _, key := range slices.Sorted(maps.Keys(set)) {
		m := doc.Content[0]
		parts := strings.Split(key, ".")
		for i, p := range parts {
			last := i == len(parts)-1
			j := mappingIndex(m, p)
			switch {
			case last && set[key] == "":
				if j >= 0 {
					m.Content = append(m.Content[:j], m.Content[j+2:]...)
				}
			case last:
				v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: set[key]}
				if j >= 0 {
					v.LineComment = m.Content[j+1].LineComment
					m.Content[j+1] = v
				} else {
					m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p}, v)
				}
			case j >= 0 && m.Content[j+1].Kind == yaml.MappingNode:
				m = m.Content[j+1]
			case j >= 0:
				return nil, fmt.Errorf("the cluster file's %s is not a mapping", strings.Join(parts[:i+1], "."))
			default:
				n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
				m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p}, n)
				m = n
			}
			if last {
				break
			}
		}
	}
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("writing the cluster file: %w", err)
	}
	enc.Close()
	return []byte(b.String()), nil
}

// mappingIndex is the index in m.Content of key's key node, or -1.
func mappingIndex(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

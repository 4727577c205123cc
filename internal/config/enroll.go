package config

import (
	"fmt"
	"net"
	"strings"

	"github.com/imgbake/imgbake/netboot/enroll"
)

// Enroll is the enroll: policy for Pis that are not listed under nodes:
// and ask to network-boot.
type Enroll struct {
	// Mode is auto (enrol at the first DHCP request: any device that
	// answers like a Pi gets a node image, and the join token in it) or
	// approve (pending until `imgbake netboot approve`).
	Mode string `yaml:"mode"`
	// Profile is the enrolled nodes' profile.
	Profile string `yaml:"profile"`
	// Name is the naming pattern: {n}, {serial}, {mac} (default
	// <profile>-{n}).
	Name string `yaml:"name"`
	// Models are the accepted models; empty accepts every model that runs
	// k3s.
	Models []string `yaml:"models"`
	// MaxNodes is the most enrolled nodes; 0 is no limit.
	MaxNodes int `yaml:"max-nodes"`
}

func (c *Cluster) checkEnroll() {
	e := c.Enroll
	if e == nil {
		return
	}
	d := c.doc
	switch e.Mode {
	case "auto", "approve":
	case "":
		d.Errorf("enroll.mode", "missing: approve (a human approves each new Pi: imgbake netboot approve) or auto (every Pi that asks is enrolled and gets the join token)")
	default:
		d.Errorf("enroll.mode", "%q: use approve or auto", e.Mode)
	}
	if e.Profile == "" {
		d.Errorf("enroll.profile", "missing: the profile enrolled nodes get (e.g. worker)")
	} else if !profileRE.MatchString(e.Profile) {
		d.Errorf("enroll.profile", "%q is not a profile name (lower-case letters, digits, '-')", e.Profile)
	}
	if e.Name != "" {
		if err := enroll.CheckPattern(e.Name); err != nil {
			d.Errorf("enroll.name", "%v (e.g. worker-{n})", err)
		} else if sample := strings.NewReplacer("{n}", "12", "{serial}", "1234abcd", "{mac}", "dca632013602").Replace(e.Name); CheckHostname(sample) != nil {
			d.Errorf("enroll.name", "%q gives names such as %q: %v", e.Name, sample, CheckHostname(sample))
		}
	}
	for i, m := range e.Models {
		f := fmt.Sprintf("enroll.models[%d]", i)
		n, ok := NormalizeModel(m)
		switch {
		case !ok:
			d.Errorf(f, "unknown model %q; known: %s", m, strings.Join(ModelNames(), ", "))
		case IsARMv6(n):
			d.Errorf(f, "%s has an ARMv6 CPU, which k3s does not run on; it is never enrolled", m)
		default:
			e.Models[i] = n
		}
	}
	if e.MaxNodes < 0 {
		d.Errorf("enroll.max-nodes", "%d: give 0 (no limit) or more", e.MaxNodes)
	}
}

// EnrollName returns the naming pattern, with its default.
func (e *Enroll) EnrollName() string {
	if e.Name != "" {
		return e.Name
	}
	return e.Profile + "-{n}"
}

// AddEnrolled adds nodes enrolled through the enroll: policy to the
// cluster, as ordinary nodes. A listed node always wins: an enrolled node
// whose name, serial or MAC is also a listed node's is left out (unless it
// is that same Pi, moved into the cluster file by hand), and a message
// for each one left out is returned, to be logged.
func (c *Cluster) AddEnrolled(nodes []Node) []string {
	var skipped []string
	listed := len(c.Nodes)
	for _, n := range nodes {
		keep := true
		for _, l := range c.Nodes[:listed] {
			sameName := l.Name == n.Name
			sameID := l.Netboot != nil && n.Netboot != nil &&
				((l.Netboot.Serial != "" && l.Netboot.Serial == n.Netboot.Serial) || (l.Netboot.MAC != "" && sameMAC(l.Netboot.MAC, n.Netboot.MAC)))
			switch {
			case sameName && sameID:
				keep = false // moved into the cluster file by hand
			case sameName:
				skipped = append(skipped, fmt.Sprintf("enrolled node %s (mac %s) has the name of a node of %s, which wins; the enrolled Pi is not served. Rename one of them", n.Name, n.Netboot.MAC, c.File))
				keep = false
			case sameID:
				skipped = append(skipped, fmt.Sprintf("enrolled node %s (mac %s) is the Pi of node %s in %s, which wins; remove %s from %s", n.Name, n.Netboot.MAC, l.Name, c.File, n.Name, enroll.DefaultFile))
				keep = false
			}
		}
		if keep {
			c.Nodes = append(c.Nodes, n)
		}
	}
	return skipped
}

func sameMAC(a, b string) bool {
	x, err1 := net.ParseMAC(a)
	y, err2 := net.ParseMAC(b)
	return err1 == nil && err2 == nil && x.String() == y.String()
}

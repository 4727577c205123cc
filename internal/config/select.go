package config

import (
	"errors"
	"fmt"
	"os"
)

// ErrArgs marks a Select error that is a mistake in the names or the
// profile asked for, not in the cluster file (the CLI exits 2 for it).
var ErrArgs = errors.New("bad node selection")

type argsError struct{ error }

func (e argsError) Is(target error) bool { return target == ErrArgs }
func (e argsError) Unwrap() error        { return e.error }

func argsErrorf(format string, args ...any) error {
	return argsError{fmt.Errorf(format, args...)}
}

// Select returns the nodes to build: every listed node when all is set
// (only those of profile when it is given), then the nodes called names.
// A listed node keeps its settings; a node that is not listed is built
// from profile alone. Each node returned has its Profile set.
func (c *Cluster) Select(names []string, all bool, profile string) ([]Node, error) {
	var nodes []Node
	if all {
		if len(c.Nodes) == 0 {
			return nil, fmt.Errorf("--all: %s lists no nodes; add them under nodes:, or name a node: imgbake build --profile worker k5", c.File)
		}
		for i, n := range c.Nodes {
			if profile != "" && n.Profile != "" && n.Profile != profile {
				continue // --all --profile worker builds the workers
			}
			if n.Profile == "" && profile == "" {
				return nil, fmt.Errorf("%s:%d: node %s has no profile: add profile: to it, or pass --profile", c.File, c.Line(fmt.Sprintf("nodes[%d]", i)), n.Name)
			}
			nodes = append(nodes, n)
		}
		if len(nodes) == 0 {
			return nil, fmt.Errorf("--all --profile %s: no node in %s has that profile", profile, c.File)
		}
	}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			return nil, argsErrorf("node %s named twice", name)
		}
		seen[name] = true
		n, i, listed := c.Node(name)
		switch {
		case !listed:
			if err := CheckHostname(name); err != nil {
				return nil, argsErrorf("node name: %v", err)
			}
			if profile == "" {
				return nil, argsErrorf("node %s is not in %s: give its profile (imgbake build --profile worker %s) or add it under nodes:", name, c.File, name)
			}
			nodes = append(nodes, Node{Name: name, Profile: profile})
		case profile != "" && n.Profile != "" && n.Profile != profile:
			return nil, fmt.Errorf("node %s is listed in %s:%d with profile %s, not %s: drop --profile, or change its profile in the cluster file", name, c.File, c.Line(fmt.Sprintf("nodes[%d].profile", i)), n.Profile, profile)
		case n.Profile == "" && profile == "":
			return nil, argsErrorf("node %s has no profile in %s: add profile: to it, or pass --profile", name, c.File)
		default:
			nodes = append(nodes, *n)
		}
	}
	for i := range nodes {
		nodes[i].Profile = firstNonEmpty(nodes[i].Profile, profile)
	}
	return nodes, nil
}

// ProfilesDirFor returns the directory of profile files: flag (the
// --profiles-dir option) when given, else profiles-dir: of the cluster file,
// else ./profiles next to it when that exists, else "" (built-ins only).
func (c *Cluster) ProfilesDirFor(flag string) string {
	if flag != "" {
		return flag
	}
	if d := c.Path(c.ProfilesDir); d != "" {
		return d
	}
	if d := c.Path(DefaultProfilesDir); d != "" {
		if _, err := os.Stat(d); err == nil {
			return d
		}
	}
	return ""
}

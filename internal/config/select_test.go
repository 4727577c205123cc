package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSelect: which nodes a build takes, with their profiles, and every
// refusal with its cluster-file line; mistakes in the names asked for are
// ErrArgs (the CLI's usage errors), mistakes in the file are not.
func TestSelect(t *testing.T) {
	src := `server: 10.0.0.1
k3s:
  version: v1.36.4+k3s1
nodes:
  - name: k1
    profile: server
  - name: k2
    profile: worker
  - name: k3
    model: pi4
`
	p := writeFile(t, "imgbake.yaml", src, 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	ok := []struct {
		names   []string
		all     bool
		profile string
		want    []string // name:profile
	}{
		{[]string{"k2", "k9"}, false, "worker", []string{"k2:worker", "k9:worker"}},
		{[]string{"k3"}, false, "edge", []string{"k3:edge"}},
		{nil, true, "worker", []string{"k2:worker", "k3:worker"}},
		{nil, true, "server", []string{"k1:server", "k3:server"}},
		{nil, true, "edge", []string{"k3:edge"}},
		{[]string{"k1"}, false, "", []string{"k1:server"}},
	}
	for _, tc := range ok {
		nodes, err := c.Select(tc.names, tc.all, tc.profile)
		if err != nil {
			t.Errorf("Select(%v, %v, %q): %v", tc.names, tc.all, tc.profile, err)
			continue
		}
		var got []string
		for _, n := range nodes {
			got = append(got, n.Name+":"+n.Profile)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Select(%v, %v, %q) = %v, want %v", tc.names, tc.all, tc.profile, got, tc.want)
		}
	}
	if nodes, _ := c.Select([]string{"k3"}, false, "edge"); nodes[0].Model != "pi4" {
		t.Errorf("a listed node lost its settings: %+v", nodes[0])
	}

	bad := []struct {
		names   []string
		all     bool
		profile string
		want    string
		args    bool
	}{
		{nil, true, "", p + ":9: node k3 has no profile: add profile: to it, or pass --profile", false},
		{[]string{"k2", "k2"}, false, "", "node k2 named twice", true},
		{[]string{"K_9"}, false, "worker", "node name: ", true},
		{[]string{"k9"}, false, "", "node k9 is not in " + p + ": give its profile (imgbake build --profile worker k9) or add it under nodes:", true},
		{[]string{"k2"}, false, "server", "node k2 is listed in " + p + ":8 with profile worker, not server: drop --profile, or change its profile in the cluster file", false},
		{[]string{"k3"}, false, "", "node k3 has no profile in " + p + ": add profile: to it, or pass --profile", true},
	}
	for _, tc := range bad {
		_, err := c.Select(tc.names, tc.all, tc.profile)
		if err == nil || err.Error() != tc.want && !(strings.HasSuffix(tc.want, ": ") && strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("Select(%v, %v, %q) = %v, want %q", tc.names, tc.all, tc.profile, err, tc.want)
			continue
		}
		if errors.Is(err, ErrArgs) != tc.args {
			t.Errorf("Select(%v, %v, %q): ErrArgs = %v, want %v", tc.names, tc.all, tc.profile, !tc.args, tc.args)
		}
	}

	empty, err := Load(writeFile(t, "imgbake.yaml", "server: 10.0.0.1\nk3s:\n  version: v1.36.4+k3s1\n", 0o644))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("--all: %s lists no nodes; add them under nodes:, or name a node: imgbake build --profile worker k5", empty.File)
	if _, err := empty.Select(nil, true, ""); err == nil || err.Error() != want {
		t.Errorf("--all on no nodes: %v", err)
	}
	empty.Nodes = c.Nodes[:2]
	want = fmt.Sprintf("--all --profile edge: no node in %s has that profile", empty.File)
	if _, err := empty.Select(nil, true, "edge"); err == nil || err.Error() != want || errors.Is(err, ErrArgs) {
		t.Errorf("--all --profile edge, no edge node: %v", err)
	}
}

// TestProfilesDirFor: the flag, else profiles-dir:, else ./profiles beside
// the cluster file when it exists, else none.
func TestProfilesDirFor(t *testing.T) {
	p := writeFile(t, "imgbake.yaml", "server: 10.0.0.1\nk3s:\n  version: v1.36.4+k3s1\n", 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ProfilesDirFor(""); got != "" {
		t.Errorf("no profiles directory: %q", got)
	}
	def := filepath.Join(filepath.Dir(p), DefaultProfilesDir)
	if err := os.Mkdir(def, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := c.ProfilesDirFor(""); got != def {
		t.Errorf("./profiles: %q", got)
	}
	c.ProfilesDir = "mine"
	if got := c.ProfilesDirFor(""); got != filepath.Join(filepath.Dir(p), "mine") {
		t.Errorf("profiles-dir: %q", got)
	}
	if got := c.ProfilesDirFor("/flag"); got != "/flag" {
		t.Errorf("flag: %q", got)
	}
}

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRewrite(t *testing.T) {
	in := `# Lab cluster.
server: 10.0.0.1 # the server
k3s: {version: v1.35.1+k3s1}
base: /home/me/Downloads/raspios.img.xz   # where I keep it
base-sha256: abc
nodes:
  - name: k1
    profile: server
`
	out, err := Rewrite([]byte(in), map[string]string{"base": "base/raspios.img.xz", "base-sha256": "", "k3s.version": "v1.36.4+k3s1", "cache-dir": "cache", "ssh.user": "pi"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"# Lab cluster.", "server: 10.0.0.1 # the server", "version: v1.36.4+k3s1", "base: base/raspios.img.xz # where I keep it", "cache-dir: cache", "user: pi", "- name: k1"} {
		if !strings.Contains(s, want) {
			t.Errorf("lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "base-sha256") || strings.Contains(s, "Downloads") {
		t.Errorf("kept what was replaced or removed:\n%s", s)
	}
	if _, err := Rewrite([]byte("- a\n- b\n"), nil); err == nil {
		t.Error("a list is no cluster file")
	}
	if _, err := Rewrite([]byte("k3s: v1\n"), map[string]string{"k3s.version": "x"}); err == nil {
		t.Error("k3s: as a scalar rewritten")
	}
}

func TestNetbootServerSettings(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "imgbake.yaml")
	os.WriteFile(p, []byte("server: 10.0.0.1\nk3s: {version: v1.36.4+k3s1}\nnodes:\n  - name: k1\n    netboot-server: {interface: 'eth 0', disk-size: 512M, state-dir: srv/imgbake}\n"), 0o644)
	_, err := Load(p)
	for _, want := range []string{"nodes[0].netboot-server.interface", "nodes[0].netboot-server.disk-size: 512M is too small", "nodes[0].netboot-server.state-dir"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	m := (*NetbootServer)(nil).Merge(&NetbootServer{StateDir: "/mnt/ssd"})
	if m.Interface != "eth0" || m.DiskSize != "16G" || m.StateDir != "/mnt/ssd" {
		t.Errorf("merge with defaults: %+v", m)
	}
	if (*NetbootServer)(nil).Merge(nil) != nil {
		t.Error("no settings became some")
	}
	m = (&NetbootServer{Interface: "end0", DiskSize: "32G"}).Merge(&NetbootServer{DiskSize: "8G"})
	if m.Interface != "end0" || m.DiskSize != "8G" {
		t.Errorf("node over profile: %+v", m)
	}
}

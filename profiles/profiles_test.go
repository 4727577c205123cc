package profiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/config"
)

func TestBuiltin(t *testing.T) {
	s, err := Load("server", "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Role != Server || s.K3s["write-kubeconfig-mode"] != "0600" || s.Origin != "built-in profile server" {
		t.Errorf("server = %+v", s)
	}
	w, err := Load("worker", filepath.Join(t.TempDir(), "missing"))
	if err != nil {
		t.Fatal(err)
	}
	if w.Role != Agent || w.NodeRole != "worker" {
		t.Errorf("worker = %+v", w)
	}
	_, err = Load("gpu", "")
	if err == nil || !strings.Contains(err.Error(), "available: server, worker") {
		t.Errorf("unknown profile: %v", err)
	}
}

func TestOverrideAndFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "motd"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := `role: agent
labels: {example.com/gpu: "true"}
taints: ["example.com/gpu=true:NoSchedule"]
k3s:
  kubelet-arg: [max-pods=50]
  snapshotter: native
files:
  - path: /etc/motd
    source: motd
  - path: /etc/example.conf
    mode: "0600"
    owner: "1000:1000"
    content: "x=1\n"
`
	if err := os.WriteFile(filepath.Join(dir, "gpu.yaml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load("gpu", dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.NodeRole != "gpu" || p.Files[0].Source != filepath.Join(dir, "motd") || p.Files[1].Perm() != 0o600 {
		t.Errorf("gpu = %+v", p)
	}
	if u, g := p.Files[1].IDs(); u != 1000 || g != 1000 {
		t.Errorf("IDs = %d:%d", u, g)
	}
	names, err := List(dir)
	if err != nil || strings.Join(names, ",") != "gpu,server,worker" {
		t.Errorf("List = %v, %v", names, err)
	}
}

func TestProblems(t *testing.T) {
	dir := t.TempDir()
	src := `role: agnt
control-plane-taint: true
k3s:
  token: abc
  node-label: [a=b]
  --flag: x
files:
  - path: etc/x
    mode: 644x
    source: nope
    content: y
tains: []
`
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load("bad", dir)
	if err == nil {
		t.Fatal("bad profile accepted")
	}
	for _, w := range []string{
		"bad.yaml:1: role: \"agnt\" must be server or agent",
		"bad.yaml:4: k3s.token: imgbake sets token itself",
		"bad.yaml:5: k3s.node-label: imgbake sets node-label itself: use labels:",
		"bad.yaml:6: k3s.--flag:",
		"bad.yaml:8: files[0].path:",
		"bad.yaml:9: files[0].mode:",
		"files[0]: give content or source, not both",
		"bad.yaml:12: tains: unknown field \"tains\" (did you mean \"taints\"?)",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestAgentRefusesServerKeys(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte("role: agent\nk3s:\n  disable: [traefik]\n  etcd-snapshot-retention: 3\n  kubelet-arg: [a=b]\n"), 0o644)
	_, err := Load("edge", dir)
	if err == nil || !strings.Contains(err.Error(), "edge.yaml:3: k3s.disable: disable is a k3s server setting") || !strings.Contains(err.Error(), "k3s.etcd-snapshot-retention") || strings.Contains(err.Error(), "kubelet-arg") {
		t.Errorf("agent with server keys: %v", err)
	}
}

// TestForNodes: each node gets its own profile, one load per profile name;
// a missing profile is the error of Load.
func TestForNodes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte("role: agent\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nodes := []config.Node{{Name: "k1", Profile: "server"}, {Name: "k2", Profile: "edge"}, {Name: "k3", Profile: "edge"}}
	ps, err := ForNodes(nodes, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 || ps[0].Name != "server" || ps[1].Name != "edge" || ps[2] != ps[1] {
		t.Errorf("ForNodes = %+v", ps)
	}
	_, err = ForNodes(append(nodes, config.Node{Name: "k4", Profile: "gpu"}), dir)
	if err == nil || !strings.Contains(err.Error(), `no profile "gpu"`) || !strings.Contains(err.Error(), filepath.Join(dir, "gpu.yaml")) {
		t.Errorf("missing profile: %v", err)
	}
}

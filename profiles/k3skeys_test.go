package profiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/k3s"
)

// TestCheckK3sKeys: the profile's k3s: keys against k3s 1.36's flag table:
// a typo names the profile's file and line and the flag meant.
func TestCheckK3sKeys(t *testing.T) {
	tbl, ok := k3s.Flags("v1.36.4+k3s1")
	if !ok {
		t.Fatal("no flag table for k3s 1.36")
	}
	for _, tag := range []string{"v1.34.1+k3s1", "v1.35.0+k3s1"} {
		if _, ok := k3s.Flags(tag); !ok {
			t.Errorf("no flag table for %s", tag)
		}
	}
	if _, ok := k3s.Flags("v1.20.0+k3s1"); ok {
		t.Error("a flag table for k3s 1.20")
	}
	for _, name := range []string{"server", "worker"} {
		p, err := Load(name, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.CheckK3sKeys(tbl); err != nil {
			t.Errorf("built-in %s: %v", name, err)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gpu.yaml"), []byte("role: agent\nk3s:\n  kubelet-args: [max-pods=50]\n  node-ip: 192.168.1.5\n  kube-proxy-args: [x=y]\n"), 0o644)
	p, err := Load("gpu", dir)
	if err != nil {
		t.Fatal(err)
	}
	err = p.CheckK3sKeys(tbl)
	if err == nil {
		t.Fatal("a kubelet-args typo was accepted")
	}
	for _, want := range []string{
		"gpu.yaml:3: k3s.kubelet-args: \"kubelet-args\" is not a flag of k3s 1.36 agent (did you mean \"kubelet-arg\"?); if your k3s build has it, add k3s-extra-keys: allow",
		"gpu.yaml:5: k3s.kube-proxy-args: \"kube-proxy-args\" is not a flag of k3s 1.36 agent (did you mean \"kube-proxy-arg\"?)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "node-ip") {
		t.Errorf("node-ip is an agent flag: %v", err)
	}
}

package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// TestCheck: check prints what build would bake per node, downloads and
// writes nothing, and fails as build would.
func TestCheck(t *testing.T) {
	fixture.RequireTools(t)
	base := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	dir, cfg, token := clusterDir(t, base, "http://127.0.0.1:9") // no release server: check downloads nothing
	env := map[string]string{"HOME": dir}
	code, out, e := run(t, env, "check", "-c", cfg, "k1", "k5")
	if code != 0 {
		t.Fatalf("check: %d %s", code, e)
	}
	for _, want := range []string{
		"NODE  PROFILE  ROLE    MODEL  ADDRESS          NETBOOT  K3S           ARCH",
		"k1    server   server  pi4    192.168.1.10/24  -        " + testVersion + "  arm64",
		"k5    worker   agent   pi4    dhcp             -        " + testVersion + "  arm64",
		"base: " + base + " (raspios bookworm",
		"ok: 2 node(s) would be built",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+e, token) {
		t.Error("check printed the token")
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Error("check created the output directory")
	}
	code, _, e = run(t, env, "check", "-c", cfg)
	if code != 1 || !strings.Contains(e, cfg+":26: nodes[2].model: node zero is a pi0w") {
		t.Errorf("check of every node (one a Pi Zero W): %d %s", code, e)
	}
	// A k3s: typo in a profile, then the same allowed on purpose.
	os.MkdirAll(filepath.Join(dir, "profiles"), 0o755)
	os.WriteFile(filepath.Join(dir, "profiles", "typo.yaml"), []byte("role: agent\nk3s:\n  kubelet-args: [max-pods=50]\n"), 0o644)
	code, _, e = run(t, env, "check", "-c", cfg, "--profile", "typo", "k9")
	if code != 1 || !strings.Contains(e, "typo.yaml:3: k3s.kubelet-args: \"kubelet-args\" is not a flag of k3s 1.36 agent (did you mean \"kubelet-arg\"?)") {
		t.Errorf("k3s: typo: %d %s", code, e)
	}
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(data, "k3s-extra-keys: allow\n"...), 0o644)
	if code, _, e = run(t, env, "check", "-c", cfg, "--profile", "typo", "k9"); code != 0 {
		t.Errorf("k3s-extra-keys: allow: %d %s", code, e)
	}
	code, _, e = run(t, env, "check", "-c", cfg, "--size", "1M", "k5")
	if code != 2 || !strings.Contains(e, "smaller than the base image") {
		t.Errorf("check --size 1M: %d %s", code, e)
	}
}

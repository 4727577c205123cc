package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/manifest"
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

// TestBaseSHA256 pins the base with base-sha256: in the cluster file:
// check, build and netboot's on-demand build refuse any other file, naming
// the line and what to do; --base-sha256 wins over it.
func TestBaseSHA256(t *testing.T) {
	fixture.RequireTools(t)
	base := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	sum, err := manifest.FileSHA256(base)
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("0", 64)
	dir, cfg, _ := clusterDir(t, base, "http://127.0.0.1:9") // nothing is downloaded before the base is checked
	env := map[string]string{"HOME": dir}
	data, _ := os.ReadFile(cfg)
	pin := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, bytes.Replace(data, []byte("cache-dir: cache\n"), []byte("cache-dir: cache\nbase-sha256: "+s+"\n"), 1), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(what string, code int, e string) {
		t.Helper()
		for _, want := range []string{cfg + ":7: base-sha256: base image " + base + " has sha256 " + sum + ", not the expected " + wrong, "set base-sha256: to"} {
			if code != 1 || !strings.Contains(e, want) {
				t.Errorf("%s with a wrong base-sha256: exit %d, stderr lacks %q:\n%s", what, code, want, e)
			}
		}
	}

	pin(wrong)
	code, _, e := run(t, env, "check", "-c", cfg, "k1")
	refused("check", code, e)
	code, _, e = run(t, env, "build", "-c", cfg, "k1")
	refused("build", code, e)
	// netboot builds an enrolled node's image when it first boots.
	app := &App{Stdout: io.Discard, Stderr: io.Discard, Env: func(k string) string { return env[k] }}
	err = app.netbootPrepare(&globals{config: cfg}, filepath.Join(dir, "images"))(context.Background(), "k5")
	refused("netboot", 1, fmt.Sprint(err))
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Error("a refused base left an output directory")
	}
	// The flag wins over the file, both ways.
	if code, _, e := run(t, env, "check", "-c", cfg, "--base-sha256", sum, "k1"); code != 0 {
		t.Errorf("check --base-sha256 (right) over a wrong base-sha256: exit %d %s", code, e)
	}
	pin(strings.ToUpper(sum))
	if code, _, e := run(t, env, "check", "-c", cfg, "k1"); code != 0 {
		t.Errorf("check with the right base-sha256: exit %d %s", code, e)
	}
	code, _, e = run(t, env, "check", "-c", cfg, "--base-sha256", wrong, "k1")
	if code != 1 || !strings.Contains(e, "not the expected "+wrong) || strings.Contains(e, "set base-sha256:") {
		t.Errorf("check --base-sha256 (wrong) over a right base-sha256: exit %d %s", code, e)
	}
	if code, _, e := run(t, env, "check", "-c", cfg, "--base-sha256", "abc", "k1"); code != 2 || !strings.Contains(e, "--base-sha256 \"abc\" is not a sha256") {
		t.Errorf("check --base-sha256 abc: exit %d %s", code, e)
	}
}

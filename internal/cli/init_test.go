package cli

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/k3s"
)

// TestInitPinsChannelVersion: init pins the stable channel's release from a
// loopback channel server, and the compiled-in default when none answers.
func TestInitPinsChannelVersion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/channels/stable" {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "https://github.com/k3s-io/k3s/releases/tag/v1.35.9%2Bk3s2", http.StatusFound)
	}))
	defer srv.Close()
	cfg := filepath.Join(t.TempDir(), "imgbake.yaml")
	code, out, errOut := run(t, map[string]string{"IMGBAKE_K3S_CHANNEL_URL": srv.URL + "/channels"}, "init", "--config", cfg)
	if code != 0 || !strings.Contains(out, "k3s v1.35.9+k3s2, the current stable release") {
		t.Fatalf("init: %d %q %q", code, out, errOut)
	}
	if c, err := config.Load(cfg); err != nil || c.K3s.Version != "v1.35.9+k3s2" {
		t.Fatalf("pinned %v, %v", c, err)
	}

	cfg = filepath.Join(t.TempDir(), "imgbake.yaml")
	code, out, errOut = run(t, nil, "init", "--config", cfg)
	if code != 0 || !strings.Contains(out, "k3s "+k3s.DefaultVersion+", the release compiled into imgbake: the k3s release channel could not be asked") {
		t.Fatalf("init without a channel server: %d %q %q", code, out, errOut)
	}
}

// TestInitSecretsOnlyBackupRelative covers init for a cloned repository:
// --secrets-only, --force's backup, and --base relative to the current
// directory written relative to the cluster file.
func TestInitSecretsOnlyBackupRelative(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("base.img", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join("lab", "imgbake.yaml")
	if code, _, errOut := run(t, nil, "init", "-c", cfg, "--base", "base.img", "--server", "192.168.1.10"); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Base != "../base.img" || !fileExists(c.Path(c.Base)) {
		t.Errorf("base: %q resolves to %s, want ../base.img (the file in the current directory)", c.Base, c.Path(c.Base))
	}

	// A clone: the cluster file without its secrets.
	secrets := filepath.Join("lab", config.DefaultSecretsFile)
	old, _ := os.ReadFile(secrets)
	os.Remove(secrets)
	code, out, errOut := run(t, nil, "init", "-c", cfg, "--secrets-only")
	if code != 0 || !strings.Contains(out, "every node must be baked again") {
		t.Fatalf("--secrets-only: %d %q %q", code, out, errOut)
	}
	s, err := config.LoadSecrets(secrets)
	if err != nil || s.Token == "" || strings.Contains(string(old), s.Token) {
		t.Fatalf("new secrets: %v (a new token is expected)", err)
	}
	if strings.Contains(out, s.Token) {
		t.Error("--secrets-only printed the token")
	}
	if code, _, errOut := run(t, nil, "init", "-c", cfg, "--secrets-only"); code == 0 || !strings.Contains(errOut, "already exists") {
		t.Errorf("--secrets-only over existing secrets: %d %q", code, errOut)
	}
	if code, _, errOut := run(t, nil, "init", "-c", filepath.Join("none", "imgbake.yaml"), "--secrets-only"); code == 0 || !strings.Contains(errOut, "no cluster file") {
		t.Errorf("--secrets-only without a cluster file: %d %q", code, errOut)
	}

	// --force keeps a backup of the edited cluster file.
	edited := []byte("# edited\n")
	before, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(before, edited...), 0o644)
	for i, want := range []string{cfg + ".bak", cfg + ".bak.1"} {
		code, out, errOut := run(t, nil, "init", "-c", cfg, "--force")
		if code != 0 || !strings.Contains(out, "kept the cluster file it replaced as "+want) {
			t.Fatalf("init --force #%d: %d %q %q", i, code, out, errOut)
		}
		if b, err := os.ReadFile(want); err != nil || (i == 0 && !strings.HasSuffix(string(b), "# edited\n")) {
			t.Errorf("backup %s: %v %q", want, err, b)
		}
	}
}

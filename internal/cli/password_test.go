package cli

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/config"
)

// TestInitUserPassword: init --user --password keeps only the hash (of the
// method the base's release checks), which crypt(3) accepts.
func TestInitUserPassword(t *testing.T) {
	for _, c := range []struct{ base, prefix string }{
		{"2024-11-19-raspios-bookworm-arm64-lite.img.xz", "$y$"},
		{"hypriotos-rpi-v1.12.3.img.zip", "$6$"},
	} {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "imgbake.yaml")
		const pw = "s3cret pass"
		var o, e bytes.Buffer
		app := &App{Stdout: &o, Stderr: &e, Stdin: strings.NewReader(pw + "\n"), Env: func(string) string { return "" }}
		if code := app.Execute(context.Background(), []string{"init", "--config", cfg, "--base", c.base, "--user", "alice", "--password"}); code != 0 {
			t.Fatalf("init: %d %s", code, e.String())
		}
		cl, err := config.Load(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if cl.User == nil || cl.User.Name != "alice" {
			t.Errorf("user = %+v", cl.User)
		}
		s, err := config.LoadSecrets(filepath.Join(dir, config.DefaultSecretsFile))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s.PasswordHash, c.prefix) {
			t.Errorf("%s: hash %q, want a %s hash", c.base, s.PasswordHash, c.prefix)
		}
		if strings.Contains(o.String()+e.String(), pw) || strings.Contains(o.String()+e.String(), s.PasswordHash) {
			t.Error("init printed the password or its hash")
		}
		if out, err := exec.Command("perl", "-e", `print crypt($ARGV[0], $ARGV[1])`, pw, s.PasswordHash).Output(); err == nil && string(out) != s.PasswordHash {
			t.Errorf("crypt(3) does not accept the stored hash for the password")
		}
	}
	if code, _, e := run(t, nil, "init", "--config", filepath.Join(t.TempDir(), "x.yaml"), "--password"); code == 0 || !strings.Contains(e, "--user") {
		t.Errorf("--password without --user: %d %s", code, e)
	}
}

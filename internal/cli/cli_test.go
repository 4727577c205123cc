package cli

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/config"
)

// run executes the CLI in-process.
func run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	app := &App{Stdout: &o, Stderr: &e, Env: func(k string) string {
		if k == "IMGBAKE_K3S_CHANNEL_URL" && env[k] == "" {
			return "http://127.0.0.1:9" // no channel server: init uses its default
		}
		return env[k]
	}}
	code = app.Execute(context.Background(), args)
	return code, o.String(), e.String()
}

func TestInit(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imgbake.yaml")
	code, out, errOut := run(t, nil, "init", "--config", cfg, "--server", "192.168.1.10", "--base", "raspios.img.xz")
	if code != 0 {
		t.Fatalf("init: %d %s", code, errOut)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatalf("init wrote a file Load rejects: %v", err)
	}
	if wd, _ := os.Getwd(); c.Server != "192.168.1.10" || c.Path(c.Base) != filepath.Join(wd, "raspios.img.xz") {
		t.Errorf("cluster = %+v", c)
	}
	secrets := filepath.Join(dir, "imgbake.secrets.yaml")
	st, err := os.Stat(secrets)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secrets file: %v %v", st, err)
	}
	s, err := config.LoadSecrets(secrets)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out+errOut, s.Token) {
		t.Error("init printed the token")
	}
	if !strings.Contains(out, "imgbake build --all") {
		t.Errorf("no next step in %q", out)
	}

	code, _, errOut = run(t, nil, "init", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "--force") {
		t.Errorf("second init: %d %q", code, errOut)
	}
	code, _, _ = run(t, nil, "init", "--config", cfg, "--new-token")
	if code != 2 {
		t.Errorf("--new-token without --force: exit %d, want 2", code)
	}
	code, out, errOut = run(t, nil, "init", "--config", cfg, "--force")
	if code != 0 || !strings.Contains(out, "kept the join token") {
		t.Fatalf("init --force: %d %q %q", code, out, errOut)
	}
	if s2, _ := config.LoadSecrets(secrets); s2 == nil || s2.Token != s.Token {
		t.Error("init --force replaced the token")
	}
	code, _, _ = run(t, nil, "init", "--config", cfg, "--force", "--new-token")
	if s3, _ := config.LoadSecrets(secrets); code != 0 || s3 == nil || s3.Token == s.Token {
		t.Error("init --force --new-token kept the token")
	}
	code, _, errOut = run(t, nil, "init", "--config", filepath.Join(dir, "x", "imgbake.yaml"), "--k3s-version", "1.31")
	if code != 2 || !strings.Contains(errOut, "k3s.version") {
		t.Errorf("bad --k3s-version: %d %q", code, errOut)
	}
}

func TestExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"version"}, 0, "imgbake "},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"version", "extra"}, 2, "expected no arguments"},
		{[]string{"init", "--no-such-flag"}, 2, "unknown flag"},
		{[]string{"completion"}, 2, "one shell"},
		{[]string{"completion", "tcsh"}, 2, "use bash, zsh or fish"},
	} {
		code, out, errOut := run(t, nil, c.args...)
		if code != c.code || !strings.Contains(out+errOut, c.want) {
			t.Errorf("%v: exit %d (want %d), out %q err %q", c.args, code, c.code, out, errOut)
		}
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, _ := run(t, nil, "completion", sh)
		if code != 0 || !strings.Contains(out, "imgbake") || len(out) < 500 {
			t.Errorf("completion %s: exit %d, %d bytes", sh, code, len(out))
		}
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range []string{"init", "build", "inspect", "completion", "version"} {
		code, out, _ := run(t, nil, cmd, "--help")
		if code != 0 || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help: exit %d, no examples:\n%s", cmd, code, out)
		}
	}
}

func TestCompletesProfilesAndNodes(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imgbake.yaml")
	if code, _, e := run(t, nil, "init", "--config", cfg); code != 0 {
		t.Fatal(e)
	}
	code, out, _ := run(t, nil, "__complete", "build", "-c", cfg, "--profile", "")
	if code != 0 || !strings.Contains(out, "server\n") || !strings.Contains(out, "worker\n") {
		t.Errorf("profile completion: %q", out)
	}
	code, out, _ = run(t, nil, "__complete", "build", "-c", cfg, "")
	if code != 0 || !strings.Contains(out, "k1\nk2\nk3\n") {
		t.Errorf("node completion: %q", out)
	}
}

// TestCPUProfile: IMGBAKE_CPUPROFILE writes a pprof CPU profile of the run
// (what bench/build.sh PROFILE=1 reads with go tool pprof).
func TestCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	if code, _, errOut := run(t, map[string]string{"IMGBAKE_CPUPROFILE": path}, "version"); code != 0 {
		t.Fatalf("version: %d %s", code, errOut)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no profile written: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("profile is not a gzipped pprof profile: %v", err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"samples", "cpu", "nanoseconds"} {
		if !bytes.Contains(data, []byte(s)) {
			t.Errorf("profile lacks %q: not a CPU profile", s)
		}
	}
	code, _, errOut := run(t, map[string]string{"IMGBAKE_CPUPROFILE": filepath.Join(t.TempDir(), "no", "such", "dir", "cpu.pprof")}, "version")
	if code != 1 || !strings.Contains(errOut, "IMGBAKE_CPUPROFILE") {
		t.Errorf("unwritable profile path: %d %q", code, errOut)
	}
}

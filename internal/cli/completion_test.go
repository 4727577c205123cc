package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletionCandidates asks the CLI for completions the way the shell scripts do
// (the hidden __complete command) and checks the candidates and directive.
func TestCompletionCandidates(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "imgbake.yaml")
	src := `server: 192.168.1.10
k3s: {version: v1.31.4+k3s1}
base: base.img
nodes:
  - {name: k1, profile: server}
  - {name: k5, profile: worker, netboot: {serial: 1234abcd}}
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string // candidates, one a line, then :directive
	}{
		{[]string{"build", "--compress", ""}, "xz\nzst\n:4"},
		{[]string{"build", ""}, "k1\nk5\n:4"},
		{[]string{"flash", ""}, "k1\nk5\n:0"},
		{[]string{"flash", "k5", ""}, ":0"},
		{[]string{"verify", ""}, "k1\nk5\n:0"},
		{[]string{"netboot", "reset", ""}, "k5\n:4"},
	} {
		args := append([]string{"__complete", "--config", cfg}, c.args...)
		code, out, errOut := run(t, nil, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, errOut)
		}
		if got, _, _ := strings.Cut(out, "Completion ended"); strings.TrimSpace(got) != c.want {
			t.Errorf("%v: completions %q, want %q", c.args, got, c.want)
		}
	}
}

// TestSizeFlagNames checks that a bad size names the flag the user gave.
func TestSizeFlagNames(t *testing.T) {
	for _, c := range []struct{ args []string }{
		{[]string{"build", "--size", "abc", "k5"}},
		{[]string{"netboot", "reset", "--disk-size", "abc", "k5"}},
	} {
		flag := c.args[len(c.args)-3]
		code, _, e := run(t, nil, c.args...)
		if code != 2 || !strings.Contains(e, flag+`: "abc"`) || strings.Count(e, "-size") != 1 {
			t.Errorf("%v: exit %d %q; want 2 and %s: \"abc\" only", c.args, code, e, flag)
		}
	}
}

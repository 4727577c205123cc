package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun reads help output in k3s's format (an OPTIONS: block) and a docs
// page's tables, leaving out --help, --config and Deprecated sections.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	var server, agent strings.Builder
	server.WriteString("NAME:\n   k3s server - Run management server\n\nOPTIONS:\n   --config FILE, -c FILE  (config) Load configuration\n   -v value  (logging) verbosity\n")
	agent.WriteString("OPTIONS:\n")
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&server, "   --server-flag-%d value, -x value   (x) text (default: 1)\n", i)
	}
	for i := 0; i < 25; i++ {
		fmt.Fprintf(&agent, "   --agent-flag-%d   (x) text\n", i)
	}
	server.WriteString("   --help, -h   show help\n\n### Secrets\n| `--secrets-encryption-provider` value | x |\n### Deprecated Options\n| `--no-flannel` | x |\n")
	os.WriteFile(filepath.Join(dir, "s.txt"), []byte(server.String()), 0o644)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte(agent.String()), 0o644)
	var out bytes.Buffer
	if err := run(&out, "1.36", "", filepath.Join(dir, "s.txt"), filepath.Join(dir, "a.txt")); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"server server-flag-0\n", "server server-flag-59\n", "server v\n", "server secrets-encryption-provider\n", "agent agent-flag-24\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	for _, bad := range []string{"config", "help", "no-flannel", " x\n"} {
		if strings.Contains(got, " "+strings.TrimSpace(bad)+"\n") {
			t.Errorf("table has %q:\n%s", bad, got)
		}
	}
	if err := run(&out, "1.36", "", filepath.Join(dir, "a.txt"), filepath.Join(dir, "a.txt")); err == nil {
		t.Error("a help file with 25 flags was taken as k3s server's")
	}
}

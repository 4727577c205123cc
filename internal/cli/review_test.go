package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lineOf returns the 1-based line of the first line of file containing s.
func lineOf(t *testing.T, file, s string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%s has no line with %q", file, s)
	return 0
}

// TestBuildRefusesARMv6WithLine: an ARMv6 model is a problem in the cluster
// file, so it is reported as file:line: field like every other one, before
// the base image is even looked at.
func TestBuildRefusesARMv6WithLine(t *testing.T) {
	dir, cfg, _ := clusterDir(t, filepath.Join(t.TempDir(), "no-such-base.img"), "http://127.0.0.1:1")
	want := fmt.Sprintf("%s:%d: nodes[2].model: ", cfg, lineOf(t, cfg, "model: pi0w"))
	code, _, e := run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "zero")
	if code != 1 || !strings.Contains(e, want) || !strings.Contains(e, "ARMv7") {
		t.Errorf("pi0w: exit %d, %q, want %q", code, e, want)
	}
	code, _, e = run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "--all")
	if code != 1 || !strings.Contains(e, want) {
		t.Errorf("pi0w with --all: exit %d, %q, want %q", code, e, want)
	}
}

package main

import (
	"bytes"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, dir string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f+" text\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLicenseFiles: the licence files of the root and of each directory
// from a compiled package up to the root, not those of packages left out,
// nor directories or other files that merely look alike.
func TestLicenseFiles(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, "LICENSE.md", "NOTICE", "README.md", "licenses/x", "a/b/COPYING", "a/b/c.go", "a/Licence-BSD", "z/LICENSE", "a/b/license-check.go.txt")
	m := &module{Path: "example.com/m", Version: "v1.0.0", Dir: dir, pkgDirs: map[string]bool{filepath.Join(dir, "a/b"): true, dir: true}}
	got, err := licenseFiles(m)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"LICENSE.md", "NOTICE", "a/Licence-BSD", "a/b/COPYING", "a/b/license-check.go.txt"}
	if !slices.Equal(got, want) {
		t.Errorf("licence files %q, want %q", got, want)
	}
}

// TestNoLicense: a module whose root has no licence (a NOTICE, or one
// only in a package directory, is not enough) is an error naming it.
func TestNoLicense(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, "NOTICE", "PATENTS", "a/LICENSE", "README")
	m := &module{Path: "example.com/m", Version: "v1.2.3", Dir: dir, pkgDirs: map[string]bool{filepath.Join(dir, "a"): true}}
	_, err := licenseFiles(m)
	if err == nil || !strings.Contains(err.Error(), "module example.com/m v1.2.3 has no LICENSE, LICENCE, COPYING or UNLICENSE file in "+dir) {
		t.Errorf("no licence at the root: %v", err)
	}
}

// TestOtherTree: a binary whose modules are not those this tree compiles
// for it is refused.
func TestOtherTree(t *testing.T) {
	bi := &buildinfo.BuildInfo{Deps: []*debug.Module{{Path: "example.com/a", Version: "v1.0.0"}, {Path: "example.com/b", Version: "v0.1.0"}}}
	listed := map[string]*module{"example.com/a v1.0.0": {}, "example.com/b v0.2.0": {}}
	if err := sameModules(bi, listed); err == nil || !strings.Contains(err.Error(), "example.com/b v0.1.0") {
		t.Errorf("other versions: %v", err)
	}
	listed = map[string]*module{"example.com/a v1.0.0": {}, "example.com/b v0.1.0": {}}
	if err := sameModules(bi, listed); err != nil {
		t.Errorf("same modules: %v", err)
	}
}

// TestBinary: the network boot /init (built for armhf, as make generate
// does) gets a section for the Go standard library and for each module its
// build information lists (go version -m), with the module cache's licence
// text; twice the same bytes.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds netboot/initrd")
	}
	bin := filepath.Join(t.TempDir(), "init-armhf")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../../netboot/initrd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm", "GOARM=7")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(bi.Deps) == 0 {
		t.Fatal("the /init has no third-party modules: the test would check nothing")
	}
	var out, again bytes.Buffer
	if err := write(&out, []string{bin}); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	rule := strings.Repeat("=", 78)
	if !strings.Contains(text, rule+"\nGo standard library "+bi.GoVersion+"\n"+rule+"\n\n--- LICENSE ---\n\nCopyright") {
		t.Errorf("no Go licence:\n%.600s", text)
	}
	for _, d := range bi.Deps {
		dir := moduleDir(t, d.Path)
		i := strings.Index(text, "\n"+rule+"\n"+d.Path+" "+d.Version+"\n"+rule+"\n")
		if i < 0 {
			t.Errorf("%s %s: no section", d.Path, d.Version)
			continue
		}
		ents, _ := os.ReadDir(dir)
		found := false
		for _, e := range ents {
			if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && rootLicenseRE.MatchString(e.Name()) {
				found = found || strings.Contains(text[i:], string(b))
			}
		}
		if !found {
			t.Errorf("%s %s: its licence text (in %s) is not in its section", d.Path, d.Version, dir)
		}
	}
	if err := write(&again, []string{bin}); err != nil || !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Errorf("a second run differs (%v)", err)
	}
}

// moduleDir is the module cache's directory of the build list's module path.
func moduleDir(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", path)
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}

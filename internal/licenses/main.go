// Command licenses writes THIRD_PARTY_LICENSES for imgbake's release
// tarballs: the licence texts of the Go standard library and of every
// third-party Go module compiled into the given binaries, each module with
// its path and version. It reads the module cache and the Go installation
// only, never the network.
//
//	go run ./internal/licenses bin/imgbake-linux-arm64 netboot/initramfs/bin/init-arm64 netboot/initramfs/bin/init-armhf >THIRD_PARTY_LICENSES
//
// The modules are those each binary's build information lists (what
// `go version -m` prints). Their directories and the packages compiled in
// come from `go list -deps` with the binary's GOOS, GOARCH, GOARM,
// CGO_ENABLED and tags, with GOPROXY=off; its list of modules must be the
// binary's, so the binary must be built from this tree. The licence files
// are those named LICENSE, LICENCE, COPYING, NOTICE, PATENTS or UNLICENSE
// (any case, any extension) in a module's root and in each directory from a
// compiled package up to the root (code a module took in from elsewhere
// carries its own licence there). A module with no LICENSE, LICENCE, COPYING
// or UNLICENSE file at its root is an error: its licence must be found by
// hand, not left out. The output depends on nothing but the files read, so
// the same tree and module cache give the same bytes.
package main

import (
	"bytes"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
)

func main() {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintln(os.Stderr, "usage: go run ./internal/licenses BINARY... >THIRD_PARTY_LICENSES")
		os.Exit(2)
	}
	var out bytes.Buffer
	if err := write(&out, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "licenses: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.Write(out.Bytes())
}

// module is one third-party module compiled into a binary.
type module struct {
	Path, Version string
	Dir           string          // in the module cache
	pkgDirs       map[string]bool // directories of its packages compiled in
}

// licenseRE matches the names of licence files.
var licenseRE = regexp.MustCompile(`(?i)^(licen[cs]e|copying|notice|patents|unlicense)([._-].*)?$`)

// rootLicenseRE matches the names of the files that grant a licence (a
// NOTICE or PATENTS file alone does not).
var rootLicenseRE = regexp.MustCompile(`(?i)^(licen[cs]e|copying|unlicense)([._-].*)?$`)

// write writes the licences of the modules compiled into bins to w.
func write(w io.Writer, bins []string) error {
	mods := map[string]*module{}
	goVersion := ""
	for _, bin := range bins {
		bi, err := buildinfo.ReadFile(bin)
		if err != nil {
			return fmt.Errorf("reading the build information of %s: %w", bin, err)
		}
		if goVersion != "" && bi.GoVersion != goVersion {
			return fmt.Errorf("%s is built with %s, %s with %s: build them with one Go", bin, bi.GoVersion, bins[0], goVersion)
		}
		goVersion = bi.GoVersion
		listed, err := listDeps(bi)
		if err != nil {
			return fmt.Errorf("listing the packages of %s: %w", bin, err)
		}
		if err := sameModules(bi, listed); err != nil {
			return fmt.Errorf("%s: %w", bin, err)
		}
		for key, m := range listed {
			if have, ok := mods[key]; ok {
				for d := range m.pkgDirs {
					have.pkgDirs[d] = true
				}
			} else {
				mods[key] = m
			}
		}
	}
	goroot, err := goEnv("GOROOT")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "THIRD_PARTY_LICENSES\n\nimgbake (its own licence is in LICENSE) is compiled with the Go standard\nlibrary and these third-party Go modules; here are their licences, each\nmodule's under its path and version.\n")
	if err := section(w, "Go standard library "+goVersion, goroot, []string{"LICENSE", "PATENTS"}); err != nil {
		return err
	}
	keys := make([]string, 0, len(mods))
	for k := range mods {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m := mods[k]
		files, err := licenseFiles(m)
		if err != nil {
			return err
		}
		if err := section(w, m.Path+" "+m.Version, m.Dir, files); err != nil {
			return err
		}
	}
	return nil
}

// section writes the files (relative to dir) under title.
func section(w io.Writer, title, dir string, files []string) error {
	rule := strings.Repeat("=", 78)
	fmt.Fprintf(w, "\n%s\n%s\n%s\n", rule, title, rule)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("reading the licence of %s: %w", title, err)
		}
		fmt.Fprintf(w, "\n--- %s ---\n\n%s", filepath.ToSlash(f), b)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			fmt.Fprintln(w)
		}
	}
	return nil
}

// licenseFiles returns m's licence files, relative to m.Dir and sorted:
// those in its root and in each directory from a compiled package up to the
// root.
func licenseFiles(m *module) ([]string, error) {
	dirs := map[string]bool{".": true}
	for d := range m.pkgDirs {
		rel, err := filepath.Rel(m.Dir, d)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return nil, fmt.Errorf("package directory %s is not inside module %s (%s)", d, m.Path, m.Dir)
		}
		for ; rel != "."; rel = filepath.Dir(rel) {
			dirs[rel] = true
		}
	}
	var files []string
	granted := false
	for d := range dirs {
		ents, err := os.ReadDir(filepath.Join(m.Dir, d))
		if err != nil {
			return nil, fmt.Errorf("looking for the licence of %s %s: %w", m.Path, m.Version, err)
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || !licenseRE.MatchString(e.Name()) {
				continue
			}
			files = append(files, filepath.Join(d, e.Name()))
			if d == "." && rootLicenseRE.MatchString(e.Name()) {
				granted = true
			}
		}
	}
	if !granted {
		return nil, fmt.Errorf("module %s %s has no LICENSE, LICENCE, COPYING or UNLICENSE file in %s: find its licence and ship it, or drop the module", m.Path, m.Version, m.Dir)
	}
	sort.Strings(files)
	return files, nil
}

// listDeps lists the third-party modules of the packages compiled into the
// binary bi describes, keyed by path and version, as this tree builds them
// for the binary's platform.
func listDeps(bi *buildinfo.BuildInfo) (map[string]*module, error) {
	env := append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly", "GOWORK=off")
	args := []string{"list", "-deps", "-f", `{{with .Module}}{{if not .Main}}{{.Path}}	{{.Version}}	{{with .Replace}}{{.Path}} {{.Version}}{{end}}	{{.Dir}}	{{$.Dir}}{{end}}{{end}}`}
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOOS", "GOARCH", "GOARM", "GOAMD64", "GOARM64", "GO386", "CGO_ENABLED":
			env = append(env, s.Key+"="+s.Value)
		case "-tags":
			args = append(args, "-tags="+s.Value)
		}
	}
	cmd := exec.Command("go", append(args, bi.Path)...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w\n%s", err, stderr.Bytes())
	}
	mods := map[string]*module{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("go list: unexpected line %q", line)
		}
		if f[3] == "" {
			return nil, fmt.Errorf("module %s %s is not in the module cache: run go mod download (once, with the network)", f[0], f[1])
		}
		version := f[1]
		if f[2] != "" {
			version += " => " + f[2]
		}
		key := f[0] + " " + version
		m := mods[key]
		if m == nil {
			m = &module{Path: f[0], Version: version, Dir: f[3], pkgDirs: map[string]bool{}}
			mods[key] = m
		}
		m.pkgDirs[f[4]] = true
	}
	return mods, nil
}

// sameModules checks that go list found the modules the binary holds.
func sameModules(bi *buildinfo.BuildInfo, listed map[string]*module) error {
	var inBinary []string
	for _, d := range bi.Deps {
		inBinary = append(inBinary, depKey(d))
	}
	var inList []string
	for k := range listed {
		inList = append(inList, k)
	}
	sort.Strings(inBinary)
	sort.Strings(inList)
	if strings.Join(inBinary, "\n") != strings.Join(inList, "\n") {
		return fmt.Errorf("it holds the modules\n\t%s\nbut this tree compiles\n\t%s\nfor it: build it from this tree (make cross)", strings.Join(inBinary, "\n\t"), strings.Join(inList, "\n\t"))
	}
	return nil
}

func depKey(d *debug.Module) string {
	k := d.Path + " " + d.Version
	if r := d.Replace; r != nil {
		k += " => " + r.Path + " " + r.Version
	}
	return k
}

func goEnv(name string) (string, error) {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", errors.New("go env " + name + " is empty")
	}
	return v, nil
}

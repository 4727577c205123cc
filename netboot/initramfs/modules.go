package initramfs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/imgbake/imgbake/image/compression"
	"github.com/imgbake/imgbake/image/ext4"
)

// maxModuleSize bounds a decompressed module.
const maxModuleSize = 64 << 20

// NodeModules reads the named modules, with their dependencies (from
// modules.dep), for every kernel installed on the node's root filesystem:
// /lib/modules/<release>/. Modules a kernel lacks (built in, or not built)
// are skipped. The result maps each release to its modules in load order,
// decompressed (.ko.xz, .ko.zst and .ko.gz are decompressed here: not every
// kernel can load compressed modules itself).
func NodeModules(root *ext4.FS, names ...string) (map[string][]Module, error) {
	ents, err := root.ReadDir("/lib/modules")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading /lib/modules: %w", err)
	}
	out := map[string][]Module{}
	for _, e := range ents {
		dir := "/lib/modules/" + e.Name
		dep, err := root.ReadFile(dir + "/modules.dep")
		if err != nil {
			continue // not a kernel's module directory
		}
		mods, err := resolve(root, dir, parseDep(dep), names)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: %w", e.Name, err)
		}
		if len(mods) > 0 {
			out[e.Name] = mods
		}
	}
	return out, nil
}

// parseDep maps module names to their path and dependency paths.
func parseDep(data []byte) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		file, deps, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		m[moduleName(file)] = append([]string{file}, strings.Fields(deps)...)
	}
	return m
}

// moduleName is the module name of a .ko path: nbd for
// kernel/drivers/block/nbd.ko.xz ('-' and '_' are the same to the kernel).
func moduleName(p string) string {
	b := path.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// resolve lists the files to load for names: each module's dependencies
// (modules.dep lists them so that the last must be loaded first) then the
// module, each file once.
func resolve(root *ext4.FS, dir string, dep map[string][]string, names []string) ([]Module, error) {
	var files []string
	seen := map[string]bool{}
	for _, n := range names {
		entry, ok := dep[strings.ReplaceAll(n, "-", "_")]
		if !ok {
			continue
		}
		order := []string{}
		for i := len(entry) - 1; i >= 1; i-- {
			order = append(order, entry[i])
		}
		for _, f := range append(order, entry[0]) {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	var mods []Module
	for _, f := range files {
		p := f
		if !strings.HasPrefix(p, "/") {
			p = dir + "/" + p
		}
		raw, err := root.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		data, err := decompress(f, raw)
		if err != nil {
			return nil, fmt.Errorf("decompressing %s: %w", p, err)
		}
		mods = append(mods, Module{Name: moduleName(f), Data: data})
	}
	return mods, nil
}

func decompress(name string, raw []byte) ([]byte, error) {
	f := compression.FromName(name)
	if f == compression.Raw {
		if !strings.HasSuffix(name, ".ko") {
			return nil, fmt.Errorf("unknown module compression")
		}
		return raw, nil
	}
	return compression.Decompress(f, raw, maxModuleSize)
}

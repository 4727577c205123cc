package firstboot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/plan"
)

// TestUnitsVerify runs systemd-analyze verify on the generated units in a
// scratch root holding the plan's files, the host's targets and stand-ins
// for the binaries the units run. Any warning fails the test.
func TestUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd): cannot verify the units")
	}
	targets, _ := filepath.Glob("/usr/lib/systemd/system/*.target")
	if len(targets) == 0 {
		t.Skip("no systemd targets in /usr/lib/systemd/system: cannot verify the units")
	}
	for name, in := range cases(t) {
		t.Run(name, func(t *testing.T) {
			p, err := Plan(in)
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			write := func(p string, data []byte, mode os.FileMode) {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, data, mode); err != nil {
					t.Fatal(err)
				}
			}
			for _, tg := range targets {
				data, err := os.ReadFile(tg)
				if err != nil {
					t.Fatal(err)
				}
				write(strings.TrimPrefix(tg, "/"), data, 0o644)
			}
			for _, exe := range []string{K3sBin, "/sbin/modprobe", "/bin/sh"} {
				write(exe, []byte("#!/bin/sh\n"), 0o755)
			}
			var units []string
			for _, e := range p.Entries {
				if e.Part != plan.Root || e.Kind != plan.File || e.Source != "" {
					continue
				}
				if strings.HasPrefix(e.Path, unitDir+"/") || strings.HasPrefix(e.Path, scriptDir+"/") {
					write(e.Path, e.Data, os.FileMode(e.Mode))
				}
				if strings.HasPrefix(e.Path, scriptDir+"/") {
					if out, err := exec.Command("sh", "-n", filepath.Join(root, e.Path)).CombinedOutput(); err != nil {
						t.Errorf("sh -n %s: %v\n%s", e.Path, err, out)
					}
				}
				if strings.HasPrefix(e.Path, unitDir+"/") && !strings.HasSuffix(e.Path, ".env") {
					units = append(units, filepath.Join(root, e.Path))
				}
			}
			if len(units) < 2 {
				t.Fatalf("only %d units in the plan", len(units))
			}
			cmd := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + root}, units...)...)
			out, err := cmd.CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("systemd-analyze verify: %v\n%s", err, out)
			}
		})
	}
}

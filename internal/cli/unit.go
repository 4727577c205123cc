package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imgbake/imgbake/firstboot"
)

// printUnit prints the unit for this command line.
func (a *App) printUnit(g *globals, o *netbootOptions) error {
	exe, err := os.Executable()
	if err != nil {
		exe = "/usr/local/bin/imgbake"
	}
	cfg, err := filepath.Abs(g.config)
	if err != nil {
		return err
	}
	args := []string{exe, "netboot", "--config", cfg, "--interface", firstNonEmpty(o.iface, "eth0"), "--wait", firstboot.NetbootWait}
	for _, f := range []struct{ name, v string }{{"--address", o.address}, {"--state-dir", o.stateDir}, {"--out", o.out}} {
		if f.v != "" {
			p := f.v
			if f.name != "--address" {
				if p, err = filepath.Abs(f.v); err != nil {
					return err
				}
			}
			args = append(args, f.name, p)
		}
	}
	if o.diskSize != "16G" {
		args = append(args, "--disk-size", o.diskSize)
	}
	if o.noDHCP {
		args = append(args, "--no-dhcp")
	}
	for i, s := range args {
		if strings.ContainsAny(s, " \t\"'\\$%") {
			args[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", "$$", "%", "%%").Replace(s) + `"`
		}
	}
	fmt.Fprint(a.Stdout, firstboot.NetbootUnit(strings.Join(args, " ")))
	return nil
}

package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// netbootUnit is the systemd unit that runs `imgbake netboot`, in the
// manner of the servers it stands beside (dnsmasq.service, k3s.service):
// after the network is online, restarted always, logging to the journal,
// and `systemctl reload` re-reads the cluster file (SIGHUP).
func netbootUnit(execStart string) string {
	return `[Unit]
Description=imgbake network boot server (DHCP proxy, TFTP, NBD) for Raspberry Pi nodes
Documentation=https://github.com/imgbake/imgbake#network-boot-no-sd-card
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
ExecStart=` + execStart + `
ExecReload=/bin/kill -HUP $MAINPID
# Root: ports 67 and 69, DHCP on the interface (CAP_NET_BIND_SERVICE,
# CAP_NET_ADMIN, CAP_NET_RAW), the secrets file and the nodes' disks.
User=root
AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW
Restart=always
RestartSec=5s
LimitNOFILE=65536
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
`
}

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
	args := []string{exe, "netboot", "--config", cfg, "--interface", firstNonEmpty(o.iface, "eth0")}
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
	fmt.Fprint(a.Stdout, netbootUnit(strings.Join(args, " ")))
	return nil
}

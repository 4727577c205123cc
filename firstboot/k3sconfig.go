package firstboot

import (
	"bytes"
	"fmt"
	"maps"
	"slices"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/profiles"
	"gopkg.in/yaml.v3"
)

// k3sConfig adds /etc/rancher/k3s/config.yaml: the profile's keys plus the
// ones imgbake owns (server, token, node-name, node-label, node-taint,
// tls-san).
func (b *builder) k3sConfig() error {
	in, n := b.in, b.node
	cfg := map[string]any{}
	for k, v := range in.Profile.K3s {
		cfg[k] = v
	}
	url, err := config.ServerURL(in.Cluster.Server)
	if err != nil {
		return fmt.Errorf("cluster file: server: %w", err)
	}
	if n.role == profiles.Agent || in.Profile.Join {
		cfg["server"] = url
	}
	cfg["token"] = in.Token
	cfg["node-name"] = n.name
	if len(n.labels) > 0 {
		var labels []string
		for _, k := range slices.Sorted(maps.Keys(n.labels)) {
			labels = append(labels, k+"="+n.labels[k])
		}
		cfg["node-label"] = labels
	}
	if len(n.taints) > 0 {
		cfg["node-taint"] = n.taints
	}
	if n.role == profiles.Server {
		sans := toList(cfg["tls-san"])
		if h := config.ServerHost(in.Cluster.Server); h != "" && !slices.Contains(sans, h) {
			sans = append(sans, h)
		}
		if !slices.Contains(sans, n.name) {
			sans = append(sans, n.name)
		}
		if ip := nodeIP(in.Node.Address); ip != "" && !slices.Contains(sans, ip) {
			sans = append(sans, ip)
		}
		cfg["tls-san"] = sans
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# k3s configuration for node %s (profile %s), written by imgbake.\n", n.name, in.Profile.Name)
	buf.WriteString("# node-label and node-taint apply only when the node first registers with\n")
	buf.WriteString("# the server; changing them here later does not change a registered node.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return fmt.Errorf("writing k3s config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("writing k3s config: %w", err)
	}
	b.secret(ConfigPath, buf.String())
	return nil
}

// toList returns a string or list value as a list of strings.
func toList(v any) []string {
	switch v := v.(type) {
	case nil:
		return nil
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
		return out
	case []string:
		return append([]string(nil), v...)
	}
	return []string{fmt.Sprint(v)}
}

func nodeIP(prefix string) string {
	for i := 0; i < len(prefix); i++ {
		if prefix[i] == '/' {
			return prefix[:i]
		}
	}
	return prefix
}

// unitName is k3s.service for servers and k3s-agent.service for agents, as
// install.sh names them.
func (b *builder) unitName() string {
	if b.node.role == profiles.Server {
		return "k3s.service"
	}
	return "k3s-agent.service"
}

// k3sUnit is the unit install.sh writes, started after the first-boot unit.
// install.sh uses Type=notify for servers and Type=exec for agents.
func (b *builder) k3sUnit() string {
	unit, typ, cmd, desc := b.unitName(), "exec", "agent", "Lightweight Kubernetes (agent)"
	if b.node.role == profiles.Server {
		typ, cmd, desc = "notify", "server", "Lightweight Kubernetes"
	}
	return fmt.Sprintf(`# Written by imgbake with the settings of k3s's install.sh; the k3s
# configuration is in /etc/rancher/k3s/config.yaml.
[Unit]
Description=%[1]s
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target %[2]s
Requires=%[2]s

[Install]
WantedBy=multi-user.target

[Service]
Type=%[3]s
EnvironmentFile=-/etc/default/%%N
EnvironmentFile=-/etc/sysconfig/%%N
EnvironmentFile=-%[4]s/%[5]s.env
KillMode=process
Delegate=yes
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=%[6]s %[7]s
`, desc, FirstbootSvc, typ, unitDir, unit, K3sBin, cmd)
}

// units adds the k3s unit, its environment file, the first-boot unit and
// script, and on servers the role label reconciler; all enabled by symlinks
// as systemctl enable makes them.
func (b *builder) units() {
	unit := b.unitName()
	b.file(unitDir+"/"+unit, 0o644, b.k3sUnit())
	b.file(unitDir+"/"+unit+".env", 0o600, "# Environment for "+unit+" (KEY=value lines). imgbake puts the k3s\n# settings in /etc/rancher/k3s/config.yaml instead.\n")
	b.symlink(unitDir+"/multi-user.target.wants/"+unit, unitDir+"/"+unit)

	b.dir(scriptDir, 0o755, 0, 0)
	b.dir("/var/lib/imgbake", 0o755, 0, 0)
	b.file(scriptDir+"/firstboot", 0o755, b.firstbootScript())
	b.file(unitDir+"/"+FirstbootSvc, 0o644, b.firstbootUnit())
	b.symlink(unitDir+"/multi-user.target.wants/"+FirstbootSvc, unitDir+"/"+FirstbootSvc)

	if b.node.role == profiles.Server {
		b.file(scriptDir+"/role-labels", 0o755, roleLabelsScript)
		b.file(unitDir+"/imgbake-role-labels.service", 0o644, roleLabelsService)
		b.file(unitDir+"/imgbake-role-labels.timer", 0o644, roleLabelsTimer)
		b.symlink(unitDir+"/timers.target.wants/imgbake-role-labels.timer", unitDir+"/imgbake-role-labels.timer")
	}
}

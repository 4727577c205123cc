package firstboot

import (
	"fmt"
	"strings"

	"github.com/imgbake/imgbake/internal/config"
)

// firstbootUnit runs the first-boot script once. The guard is a stamp file,
// not ConditionFirstBoot: that is true only while /etc/machine-id is missing
// or "uninitialized", which stock images do not promise. A skipped unit
// (condition false) still satisfies the k3s unit's Requires=.
func (b *builder) firstbootUnit() string {
	return fmt.Sprintf(`# Written by imgbake: first-boot setup of k3s node %[1]s, once.
[Unit]
Description=imgbake first-boot setup of k3s node %[1]s
Documentation=https://github.com/imgbake/imgbake
ConditionPathExists=!%[2]s
After=local-fs.target%[5]s
# Accounts are set up before anyone can log in, and before the interactive
# first-boot wizards that would otherwise ask for them.
Before=%[3]s systemd-user-sessions.service ssh.service userconfig.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=%[4]s/firstboot
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
`, b.node.name, StampPath, b.unitName(), scriptDir, b.afterCloudInit())
}

// afterCloudInit orders the first-boot unit after cloud-init's user and
// network set-up on cloud-init bases, so that it sets the password of the
// account cloud-init made from user-data.
func (b *builder) afterCloudInit() string {
	if b.in.OS.CloudInit {
		return " cloud-init.service"
	}
	return ""
}

// firstbootScript sets the hostname, checks the memory cgroup and writes the
// stamp. Its output goes to the journal (journalctl -u imgbake-firstboot);
// "<3>" marks a line as an error there.
func (b *builder) firstbootScript() string {
	cmdline := "the kernel command line"
	if b.in.OS.CmdlinePath != "" {
		cmdline = bootPath(b.in.OS, b.in.OS.CmdlinePath)
	}
	fix := fmt.Sprintf("add cgroup_memory=1 cgroup_enable=memory to %s", cmdline)
	if strings.HasSuffix(cmdline, "cmdline.txt") {
		fix = fmt.Sprintf("add cgroup_memory=1 cgroup_enable=memory to the end of the single line in %s", cmdline)
	} else if strings.HasSuffix(cmdline, "armbianEnv.txt") {
		fix = fmt.Sprintf("add cgroup_memory=1 cgroup_enable=memory to the extraargs= line of %s", cmdline)
	}
	return fmt.Sprintf(`#!/bin/sh
# imgbake first-boot setup for k3s node %[1]s; runs once, then writes %[2]s.
# Output: journalctl -u %[3]s
set -u
name=%[4]s

# Hostname: the image already has /etc/hostname; set it again in case the
# base's own first-boot tooling changed it.
if [ "$(cat /etc/hostname 2>/dev/null)" != "$name" ]; then
	echo "$name" >/etc/hostname
fi
if ! hostnamectl set-hostname "$name" 2>/dev/null; then
	hostname "$name"
fi
echo "imgbake: hostname is $(hostname)"

# k3s needs the memory cgroup. cgroup v2 lists it in cgroup.controllers;
# kernels since 6.12 no longer show it in /proc/cgroups.
memory=no
if [ -r /sys/fs/cgroup/cgroup.controllers ]; then
	grep -qw memory /sys/fs/cgroup/cgroup.controllers && memory=yes
elif [ -r /proc/cgroups ]; then
	awk '$1 == "memory" && $4 == 1 { found = 1 } END { exit !found }' /proc/cgroups && memory=yes
fi
if [ "$memory" = yes ]; then
	echo "imgbake: memory cgroup enabled"
else
	echo "<3>imgbake: the memory cgroup is not enabled, so k3s will not start."
	echo "<3>imgbake: to fix it, %[5]s and reboot."
fi

%[7]smkdir -p %[6]s
touch %[2]s
echo "imgbake: first-boot setup done"
`, b.node.name, StampPath, FirstbootSvc, shQuote(b.node.name), fix, "/var/lib/imgbake", b.settingsScript())
}

// The role label reconciler (servers only). kubelet refuses to register
// with node-role.kubernetes.io/* labels, so nodes carry imgbake.io/role=<role>
// and this copies it to node-role.kubernetes.io/<role>=true, for the nodes
// that exist now and for those that join later.
const roleLabelsScript = `#!/bin/sh
# imgbake role labels: copies ` + config.RoleLabel + `=<role> to
# ` + config.RoleLabelPrefix + `<role>=true on every node, since kubelet may not
# set node-role labels itself. Run by imgbake-role-labels.timer.
set -u
kubectl() { ` + K3sBin + ` kubectl "$@"; }
nodes=$(kubectl get nodes -l ` + config.RoleLabel + ` -o 'jsonpath={range .items[*]}{.metadata.name}{" "}{.metadata.labels.imgbake\.io/role}{"\n"}{end}') || exit 0
echo "$nodes" | while read -r node role; do
	[ -n "$node" ] && [ -n "$role" ] || continue
	kubectl label node "$node" "` + config.RoleLabelPrefix + `$role=true" --overwrite >/dev/null ||
		echo "<4>imgbake: could not label node $node with role $role"
done
`

const roleLabelsService = `# Written by imgbake: copies imgbake.io/role labels to node-role.kubernetes.io/.
[Unit]
Description=imgbake: node role labels
After=k3s.service
ConditionPathExists=/etc/rancher/k3s/k3s.yaml

[Service]
Type=oneshot
ExecStart=/usr/local/lib/imgbake/role-labels
`

const roleLabelsTimer = `# Written by imgbake: runs imgbake-role-labels.service every minute.
[Unit]
Description=imgbake: node role labels, every minute

[Timer]
OnBootSec=2min
OnUnitActiveSec=1min

[Install]
WantedBy=timers.target
`

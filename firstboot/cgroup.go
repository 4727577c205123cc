package firstboot

import (
	"fmt"

	"github.com/imgbake/imgbake/internal/k3s"
)

// unifiedCgroup makes systemd mount only the cgroup v2 (unified)
// hierarchy at /sys/fs/cgroup.
const unifiedCgroup = "systemd.unified_cgroup_hierarchy=1"

// minUnifiedSystemd is the oldest systemd that runs a unified-only (cgroup
// v2) system with the controllers kubelet needs; systemd 241 (Buster,
// HypriotOS 1.12) does.
const minUnifiedSystemd = 239

// needsUnifiedCgroup reports whether the node's k3s refuses cgroup v1
// (Kubernetes >= 1.35, KEP-5573) while its base boots cgroup v1.
func needsUnifiedCgroup(in Input) bool {
	return in.Cluster != nil && in.OS.CgroupV1 && k3s.NeedsCgroupV2(in.Cluster.K3s.Version)
}

// checkCgroup refuses a base whose systemd cannot switch to cgroup v2
// under a k3s that needs it, naming the k3s version that still runs there.
func checkCgroup(in Input) error {
	if !needsUnifiedCgroup(in) {
		return nil
	}
	if in.OS.CmdlinePath == "" {
		return fmt.Errorf("k3s %s needs cgroup v2, and this %s %s base boots cgroup v1 with no kernel command line imgbake can edit; pin k3s %s (k3s.version: v%s.x+k3s1), the last that runs on cgroup v1", in.Cluster.K3s.Version, in.OS.Family, in.OS.Release, k3s.LastCgroupV1Minor, k3s.LastCgroupV1Minor)
	}
	if in.OS.Systemd > 0 && in.OS.Systemd < minUnifiedSystemd {
		return fmt.Errorf("k3s %s needs cgroup v2, and this %s %s base's systemd %d is too old to boot with it; pin k3s %s (k3s.version: v%s.x+k3s1), the last that runs on cgroup v1, or use a newer base", in.Cluster.K3s.Version, in.OS.Family, in.OS.Release, in.OS.Systemd, k3s.LastCgroupV1Minor, k3s.LastCgroupV1Minor)
	}
	return nil
}

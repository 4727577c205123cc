package firstboot

import (
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/config"
)

// TestCgroupV1Base: a Buster-like base (systemd 241, hybrid cgroup v1) with
// k3s >= 1.35 boots the unified hierarchy; k3s 1.34 leaves it alone; a
// systemd too old for cgroup v2 is refused, naming k3s 1.34.
func TestCgroupV1Base(t *testing.T) {
	buster := plan.OS{Family: "raspios", Release: "buster", Version: "10", Arch: "armhf", BootMount: "/boot", CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "raspi-config", Network: "dhcpcd", Systemd: 241, CgroupV1: true}
	old := "console=serial0,115200 root=PARTUUID=1-02 rootwait systemd.unified_cgroup_hierarchy=0\n"
	cmdline := func(t *testing.T, os plan.OS, version string) string {
		t.Helper()
		c := cluster()
		c.SSH = config.SSH{}
		c.K3s.Version = version
		p, err := Plan(Input{OS: os, Cluster: c, Profile: mustProfile(t, "worker"), Node: config.Node{Name: "k5", Model: "pi3"}, Token: testToken, K3sBinary: "/k3s"})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Edits {
			if e.Path == "/cmdline.txt" {
				out, err := e.Func([]byte(old))
				if err != nil {
					t.Fatal(err)
				}
				return string(out)
			}
		}
		t.Fatal("no cmdline.txt edit")
		return ""
	}
	got := cmdline(t, buster, "v1.36.4+k3s1")
	if !strings.Contains(got, " systemd.unified_cgroup_hierarchy=1") || strings.Contains(got, "hierarchy=0") || strings.Count(got, "\n") != 1 {
		t.Errorf("k3s 1.36 on a cgroup v1 base: cmdline.txt = %q, want systemd.unified_cgroup_hierarchy=1 in place of =0", got)
	}
	if got := cmdline(t, buster, "v1.34.9+k3s1"); strings.Contains(got, "hierarchy=1") {
		t.Errorf("k3s 1.34 runs on cgroup v1, yet cmdline.txt = %q", got)
	}
	unified := buster
	unified.CgroupV1, unified.Systemd = false, 252
	if got := cmdline(t, unified, "v1.36.4+k3s1"); strings.Contains(got, "hierarchy=1") {
		t.Errorf("a cgroup v2 base needs no switch, yet cmdline.txt = %q", got)
	}

	ancient := buster
	ancient.Systemd = 232
	c := cluster()
	c.K3s.Version = "v1.35.0+k3s1"
	_, err := Check(Input{OS: ancient, Cluster: c, Node: config.Node{Name: "k5"}})
	if err == nil || !strings.Contains(err.Error(), "systemd 232 is too old") || !strings.Contains(err.Error(), "pin k3s 1.34") {
		t.Errorf("systemd 232 with k3s 1.35: %v", err)
	}
	c.K3s.Version = "v1.34.9+k3s1"
	if _, err := Check(Input{OS: ancient, Cluster: c, Node: config.Node{Name: "k5"}}); err != nil {
		t.Errorf("systemd 232 with k3s 1.34: %v", err)
	}
}

package image

import "testing"

func TestCgroupV1(t *testing.T) {
	for _, tc := range []struct {
		systemd int
		cmdline string
		want    bool
	}{
		{241, "console=tty1 root=PARTUUID=x-02 rootwait", true}, // Buster, HypriotOS 1.12: hybrid
		{241, "root=/dev/mmcblk0p2 systemd.unified_cgroup_hierarchy=1", false},
		{247, "root=/dev/mmcblk0p2", false}, // Bullseye: unified
		{252, "root=/dev/mmcblk0p2 systemd.unified_cgroup_hierarchy=0", true},
		{252, "systemd.unified_cgroup_hierarchy=false", true},
		{0, "root=/dev/mmcblk0p2", false},
	} {
		if got := cgroupV1(tc.systemd, tc.cmdline); got != tc.want {
			t.Errorf("cgroupV1(%d, %q) = %v, want %v", tc.systemd, tc.cmdline, got, tc.want)
		}
	}
}

package image

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/fixture"
)

func TestInspectFixtures(t *testing.T) {
	want := map[string]plan.OS{
		fixture.RaspiOSBookwormArm64: {Family: "raspios", Release: "bookworm", Version: "12", Arch: "arm64", BootMount: "/boot/firmware",
			CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "raspberrypi-sys-mods", Network: "NetworkManager"},
		fixture.RaspiOSBookwormArmhf: {Family: "raspios", Release: "bookworm", Version: "12", Arch: "armhf", BootMount: "/boot/firmware",
			CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "raspberrypi-sys-mods", Network: "NetworkManager"},
		fixture.RaspiOSTrixieArm64: {Family: "raspios", Release: "trixie", Version: "13", Arch: "arm64", BootMount: "/boot/firmware",
			CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "cloud-init", CloudInit: true, Network: "netplan"},
		fixture.RaspiOSBullseyeArmhf: {Family: "raspios", Release: "bullseye", Version: "11", Arch: "armhf", BootMount: "/boot",
			CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "raspi-config", Network: "dhcpcd"},
		fixture.RaspiOSBusterArmhf: {Family: "raspios", Release: "buster", Version: "10", Arch: "armhf", BootMount: "/boot",
			CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "raspi-config", Network: "dhcpcd"},
		fixture.ArmbianBookwormArm64: {Family: "armbian", Release: "bookworm", Version: "24.11.1", Arch: "arm64", BootMount: "",
			CmdlinePart: plan.Root, CmdlinePath: "/boot/armbianEnv.txt", FirstBoot: "armbian-firstrun", Network: "netplan"},
		fixture.ArmbianPiArm64: {Family: "armbian", Release: "bookworm", Version: "24.11.1", Arch: "arm64", BootMount: "/boot/firmware",
			CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "armbian-firstrun", Network: "netplan"},
		fixture.HypriotOSArmhf: {Family: "hypriotos", Release: "buster", Version: "v1.12.3", Arch: "armhf", BootMount: "/boot",
			CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "cloud-init", CloudInit: true, Network: "ifupdown"},
	}
	for _, name := range fixture.Names() {
		t.Run(name, func(t *testing.T) {
			spec, _ := fixture.Lookup(name)
			img := fixture.Cached(t, name)
			info, err := Inspect(img)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want[name], info.OS); d != "" {
				t.Errorf("OS (-want +got):\n%s", d)
			}
			if info.Table != "mbr" || info.DiskID != spec.PartUUID(0)[:8] {
				t.Errorf("table %s disk id %s, want mbr %08x", info.Table, info.DiskID, spec.DiskID)
			}
			root, _ := info.Partition(info.RootPartition)
			if root.FS != "ext4" || root.Label != spec.RootLabel || root.PartUUID != spec.PartUUID(root.Number) {
				t.Errorf("root partition %+v", root)
			}
			if spec.BootLabel != "" {
				boot, _ := info.Partition(info.BootPartition)
				if boot.FS != "fat32" || boot.Label != spec.BootLabel {
					t.Errorf("boot partition %+v, want fat32 %q", boot, spec.BootLabel)
				}
			} else if info.BootPartition != 0 {
				t.Errorf("boot partition %d in an image without FAT", info.BootPartition)
			}
			if info.RootFree <= 0 || info.RootFree >= info.RootSize {
				t.Errorf("root free %d of %d", info.RootFree, info.RootSize)
			}
		})
	}
}

func TestInspectRefuses(t *testing.T) {
	fixture.RequireTools(t, "debugfs")
	cases := []struct {
		name   string
		break_ func(t *testing.T, img string, info *Info)
		want   string
	}{
		{"no ext4 root", func(t *testing.T, img string, info *Info) {
			root, _ := info.Partition(info.RootPartition)
			zeroAt(t, img, root.Start+1024, 1024) // wipe the superblock
		}, "partition 2 is a Linux partition (type 0x83) but holds no ext4 filesystem: its superblock is damaged"},
		{"unknown OS", func(t *testing.T, img string, info *Info) {
			root, _ := info.Partition(info.RootPartition)
			debugfsW(t, img, root, "rm /etc/rpi-issue")
		}, "unknown OS: /etc/os-release says ID=debian VERSION_CODENAME=bookworm"},
		{"corrupt partition table", func(t *testing.T, img string, info *Info) {
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			defer f.Close()
			b := make([]byte, 4)
			binary.LittleEndian.PutUint32(b, 0x7fffffff)
			f.WriteAt(b, 446+16+12) // p2 far larger than the image
		}, "corrupt partition table: partition 2"},
		{"no table", func(t *testing.T, img string, info *Info) { zeroAt(t, img, 0, 512) }, "no partition table"},
		{"no ELF", func(t *testing.T, img string, info *Info) {
			root, _ := info.Partition(info.RootPartition)
			for _, p := range []string{"/usr/bin/dash", "/usr/bin/env", "/usr/lib/systemd/systemd"} {
				debugfsW(t, img, root, "rm "+p)
			}
		}, "cannot tell the image's architecture"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := fixture.Build(t, fixture.RaspiOSBookwormArm64)
			info, err := Inspect(img)
			if err != nil {
				t.Fatal(err)
			}
			c.break_(t, img, info)
			_, err = Inspect(img)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant one containing %q", err, c.want)
			}
		})
	}
}

func zeroAt(t *testing.T, img string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

// partDev names a partition of img the way e2fsprogs accepts it.
func partDev(img string, p Partition) string {
	return img + "?offset=" + strconv.FormatInt(p.Start, 10)
}

// debugfsW runs a debugfs command with writing enabled on partition p.
func debugfsW(t *testing.T, img string, p Partition, cmd string) string {
	t.Helper()
	return fixture.Run(t, "debugfs", "-w", "-R", cmd, partDev(img, p))
}

// debugfsR runs a read-only debugfs command on partition p.
func debugfsR(t *testing.T, img string, p Partition, cmd string) string {
	t.Helper()
	return fixture.Run(t, "debugfs", "-R", cmd, partDev(img, p))
}

// TestInspectNetworkd: a Bookworm base without NetworkManager and dhcpcd
// whose systemd-networkd is enabled configures its network with networkd,
// not ifupdown (which such a base does not have).
func TestInspectNetworkd(t *testing.T) {
	fixture.RequireTools(t, "debugfs")
	img := fixture.Build(t, fixture.RaspiOSBookwormArm64)
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := info.Partition(info.RootPartition)
	network := func() string {
		info, err := Inspect(img)
		if err != nil {
			t.Fatal(err)
		}
		return info.OS.Network
	}
	debugfsW(t, img, root, "unlink /etc/NetworkManager")
	if got := network(); got != "ifupdown" {
		t.Fatalf("without NetworkManager: %s, want ifupdown", got)
	}
	debugfsW(t, img, root, "mkdir /etc/systemd/system/multi-user.target.wants")
	debugfsW(t, img, root, "symlink /etc/systemd/system/multi-user.target.wants/systemd-networkd.service /lib/systemd/system/systemd-networkd.service")
	if got := network(); got != "systemd-networkd" {
		t.Errorf("with systemd-networkd enabled: %s", got)
	}
}

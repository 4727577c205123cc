package flash

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeDisk describes one disk of a fake /sys/block.
type fakeDisk struct {
	name, dev, link string // link: where /sys/block/<name> points (bus detection)
	vendor, model   string
	sectors         string
	removable, ro   string
	mmcType         string
	parts           map[string]string // partition name -> major:minor
	holders         map[string]string // partition -> holder
	slaves          []string
	dmName          string
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeRoot builds a /sys, /proc and /dev/disk tree for the disks, mounts,
// swaps and kernel command line.
func fakeRoot(t *testing.T, disks []fakeDisk, mountinfo, mounts, swaps, cmdline string, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range disks {
		dir := filepath.Join(root, "sys", "devices", "virtual", "block", d.name)
		if d.link != "" {
			dir = filepath.Join(root, "sys", d.link)
		}
		os.MkdirAll(filepath.Join(root, "sys", "block"), 0o755)
		rel, _ := filepath.Rel(filepath.Join(root, "sys", "block"), dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(rel, filepath.Join(root, "sys", "block", d.name)); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "dev"), d.dev)
		writeFile(t, filepath.Join(dir, "size"), d.sectors)
		writeFile(t, filepath.Join(dir, "removable"), d.removable)
		writeFile(t, filepath.Join(dir, "ro"), d.ro)
		writeFile(t, filepath.Join(dir, "device", "vendor"), d.vendor)
		writeFile(t, filepath.Join(dir, "device", "model"), d.model)
		if d.mmcType != "" {
			writeFile(t, filepath.Join(dir, "device", "type"), d.mmcType)
		}
		for p, dev := range d.parts {
			writeFile(t, filepath.Join(dir, p, "dev"), dev)
			writeFile(t, filepath.Join(dir, p, "partition"), "1")
			os.MkdirAll(filepath.Join(dir, p, "holders"), 0o755)
		}
		for p, h := range d.holders {
			writeFile(t, filepath.Join(dir, p, "holders", h), "")
		}
		for _, s := range d.slaves {
			writeFile(t, filepath.Join(dir, "slaves", s), "")
		}
		if d.dmName != "" {
			writeFile(t, filepath.Join(dir, "dm", "name"), d.dmName)
		}
	}
	writeFile(t, filepath.Join(root, "proc", "self", "mountinfo"), mountinfo)
	writeFile(t, filepath.Join(root, "proc", "mounts"), mounts)
	writeFile(t, filepath.Join(root, "proc", "swaps"), swaps)
	writeFile(t, filepath.Join(root, "proc", "cmdline"), cmdline)
	for from, to := range links {
		p := filepath.Join(root, from)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(to, p); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const usbPath = "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/"

// laptop is a PC with an internal SSD (root on sda2), an NVMe disk with an
// LVM volume mounted on /home, a USB card reader with a mounted card, a
// USB stick with a swap partition, a write-protected card, an internal SD
// slot, an internal second SATA disk and a loop device.
func laptop(t *testing.T) Sysfs {
	disks := []fakeDisk{
		{name: "sda", dev: "8:0", link: "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
			vendor: "ATA", model: "Samsung SSD 860", sectors: "1000215216", removable: "0", ro: "0",
			parts: map[string]string{"sda1": "8:1", "sda2": "8:2"}},
		{name: "sdb", dev: "8:16", link: usbPath + "sdb", vendor: "Generic", model: "STORAGE DEVICE",
			sectors: "62333952", removable: "1", ro: "0", parts: map[string]string{"sdb1": "8:17", "sdb2": "8:18"}},
		{name: "sdc", dev: "8:32", link: usbPath + "sdc", vendor: "SanDisk", model: "Ultra",
			sectors: "60062500", removable: "0", ro: "0", parts: map[string]string{"sdc1": "8:33"}},
		{name: "sdd", dev: "8:48", link: usbPath + "sdd", vendor: "Generic", model: "SD/MMC",
			sectors: "31116288", removable: "1", ro: "1"},
		{name: "sde", dev: "8:64", link: usbPath + "sde", vendor: "Kingston", model: "DataTraveler",
			sectors: "15646720", removable: "1", ro: "0", parts: map[string]string{"sde1": "8:65"}},
		{name: "sdf", dev: "8:80", link: "devices/pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0/block/sdf",
			vendor: "ATA", model: "WDC WD40EFRX", sectors: "7814037168", removable: "0", ro: "0"},
		{name: "nvme0n1", dev: "259:0", link: "devices/pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1",
			model: "WD Blue SN570", sectors: "1953525168", removable: "0", ro: "0",
			parts:   map[string]string{"nvme0n1p1": "259:1", "nvme0n1p3": "259:3"},
			holders: map[string]string{"nvme0n1p3": "dm-0"}},
		{name: "mmcblk0", dev: "179:0", link: "devices/pci0000:00/0000:00:1e.6/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
			sectors: "124735488", removable: "0", ro: "0", mmcType: "SD",
			parts: map[string]string{"mmcblk0p1": "179:1", "mmcblk0p2": "179:2"}},
		{name: "dm-0", dev: "253:0", sectors: "100", removable: "0", ro: "0", slaves: []string{"nvme0n1p3"}, dmName: "vg-home"},
		{name: "loop0", dev: "7:0", sectors: "2048", removable: "0", ro: "0"},
	}
	mountinfo := `22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
23 22 8:1 / /boot/efi rw,relatime shared:2 - vfat /dev/sda1 rw
24 22 0:21 / /proc rw - proc proc rw
25 22 253:0 / /home rw shared:3 - ext4 /dev/mapper/vg-home rw
26 22 8:17 / /media/pi/boot\040fs rw,nosuid shared:4 - vfat /dev/sdb1 rw`
	mounts := `/dev/sda2 / ext4 rw 0 0
/dev/sda1 /boot/efi vfat rw 0 0
proc /proc proc rw 0 0
/dev/mapper/vg-home /home ext4 rw 0 0
/dev/sdb1 /media/pi/boot\040fs vfat rw 0 0`
	swaps := "Filename\tType\tSize\tUsed\tPriority\n/dev/sde1  partition\t1048572\t0\t-2"
	root := fakeRoot(t, disks, mountinfo, mounts, swaps, "BOOT_IMAGE=/vmlinuz root=UUID=1234-abcd ro quiet",
		map[string]string{"dev/disk/by-uuid/1234-abcd": "../../sda2"})
	return Sysfs{Root: root}
}

func TestSysfsDevices(t *testing.T) {
	s := laptop(t)
	devs, err := s.Devices()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]Device{}
	for _, d := range devs {
		names = append(names, d.Name)
		byName[d.Name] = d
	}
	if diff := cmp.Diff([]string{"mmcblk0", "nvme0n1", "sda", "sdb", "sdc", "sdd", "sde", "sdf"}, names); diff != "" {
		t.Errorf("device names (-want +got):\n%s", diff)
	}
	wantSdb := Device{Path: "/dev/sdb", Name: "sdb", Model: "Generic STORAGE DEVICE", Size: 62333952 * 512,
		Removable: true, Bus: "usb", Mounts: []Mount{{Device: "/dev/sdb1", Point: "/media/pi/boot fs"}},
		UnmountHint: "sudo umount /dev/sdb1"}
	if diff := cmp.Diff(wantSdb, byName["sdb"]); diff != "" {
		t.Errorf("sdb (-want +got):\n%s", diff)
	}
	if got := byName["sda"].System; !strings.Contains(got, "/ is mounted from sda2") {
		t.Errorf("sda.System = %q, want the root filesystem named", got)
	}
	if d := byName["mmcblk0"]; !d.Removable || d.Bus != "sd" {
		t.Errorf("internal SD slot: removable=%v bus=%q, want removable sd", d.Removable, d.Bus)
	}
	if d := byName["sdc"]; !d.Removable {
		t.Error("USB disk that reports removable=0 should count as removable")
	}
	if d := byName["nvme0n1"]; len(d.Mounts) != 1 || d.Mounts[0].Point != "/home" || len(d.Holders) != 1 {
		t.Errorf("nvme0n1 with LVM /home: mounts=%v holders=%v, want /home through dm-0 and one holder", d.Mounts, d.Holders)
	}
}

func TestSysfsCheckRules(t *testing.T) {
	s := laptop(t)
	img := int64(4 << 30)
	tests := []struct {
		name  string
		force bool
		image int64
		want  string // substring of the error; "" = allowed
	}{
		{"sda", true, img, "holds the running system (/ is mounted from sda2)"},
		{"sdb", true, img, "mounted partitions (/dev/sdb1 on /media/pi/boot fs); unmount them first: sudo umount /dev/sdb1"},
		{"nvme0n1", true, img, "/home"},
		{"sdd", false, img, "read-only"},
		{"sde", true, img, "running system (swap is on sde1)"},
		{"sdf", false, img, "not a removable disk; if it really is the card to erase, pass --force"},
		{"sdf", true, img, ""},
		{"sdc", false, img, ""},
		{"mmcblk0", false, img, ""},
		{"mmcblk0", false, 64 << 30, "smaller than the image (64.0 GiB)"},
		{"loop0", false, 1 << 20, "not a removable disk"},
	}
	for _, tt := range tests {
		d, err := s.Device(tt.name)
		if err != nil {
			t.Fatalf("Device(%s): %v", tt.name, err)
		}
		err = CheckDevice(d, tt.image, CheckOptions{Force: tt.force})
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s force=%v: refused: %v", tt.name, tt.force, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s force=%v: err = %v, want it to contain %q", tt.name, tt.force, err, tt.want)
		}
	}
	if _, err := s.Device("sdb1"); err == nil || !strings.Contains(err.Error(), "give the whole disk, /dev/sdb") {
		t.Errorf("Device(sdb1) = %v, want a partition error naming /dev/sdb", err)
	}
	if n, err := s.ByDevNum(8, 17); err != nil || n != "sdb1" {
		t.Errorf("ByDevNum(8, 17) = %q, %v; want sdb1", n, err)
	}
}

// TestSysfsPiRootFromCmdline: a Raspberry Pi whose mountinfo names
// /dev/root, with the root only identifiable from root=PARTUUID= on the
// kernel command line.
func TestSysfsPiRootFromCmdline(t *testing.T) {
	disks := []fakeDisk{
		{name: "mmcblk0", dev: "179:0", link: "devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
			sectors: "62333952", removable: "0", ro: "0", mmcType: "SD",
			parts: map[string]string{"mmcblk0p1": "179:1", "mmcblk0p2": "179:2"}},
		{name: "sda", dev: "8:0", link: usbPath + "sda", vendor: "Generic", model: "STORAGE DEVICE",
			sectors: "62333952", removable: "1", ro: "0"},
	}
	root := fakeRoot(t, disks, "22 1 0:2 / / rw - ext4 /dev/root rw", "/dev/root / ext4 rw 0 0", "",
		"coherent_pool=1M console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait",
		map[string]string{"dev/disk/by-partuuid/6c586e13-02": "../../mmcblk0p2"})
	s := Sysfs{Root: root}
	d, err := s.Device("mmcblk0")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckDevice(d, 1<<30, CheckOptions{Force: true}); err == nil || !strings.Contains(err.Error(), "root=PARTUUID=6c586e13-02") {
		t.Errorf("Pi's own SD card: err = %v, want a refusal naming root=PARTUUID=6c586e13-02", err)
	}
	d, _ = s.Device("sda")
	if err := CheckDevice(d, 1<<30, CheckOptions{}); err != nil {
		t.Errorf("USB card reader on the Pi refused: %v", err)
	}
}

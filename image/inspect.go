package image

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/imgbake/imgbake/image/compression"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/image/fat"
	"github.com/imgbake/imgbake/image/plan"
)

// Info is what Inspect found in a base image.
type Info struct {
	// OS is the detected operating system.
	OS plan.OS `json:"os"`
	// Size is the image size in bytes.
	Size int64 `json:"size"`
	// Table is the partition table type: "mbr" or "gpt".
	Table string `json:"table"`
	// DiskID is the MBR disk signature (8 hex digits) or the GPT disk GUID.
	DiskID     string      `json:"disk_id"`
	Partitions []Partition `json:"partitions"`
	// BootPartition and RootPartition are partition numbers; BootPartition
	// is 0 when the image has no FAT boot partition.
	BootPartition int `json:"boot_partition"`
	RootPartition int `json:"root_partition"`
	// RootSize and RootFree are the root filesystem's size and free bytes.
	RootSize int64 `json:"root_size"`
	RootFree int64 `json:"root_free"`
	// BootFree is the FAT partition's free bytes (0 without one).
	BootFree int64 `json:"boot_free"`
}

// Partition returns the partition numbered n (a BootPartition or
// RootPartition number); false for 0 or a number the image lacks.
func (in *Info) Partition(n int) (Partition, bool) {
	for _, p := range in.Partitions {
		if p.Number == n && n != 0 {
			return p, true
		}
	}
	return Partition{}, false
}

// Inspect opens the raw image at path read-only and detects its layout and
// operating system. Images imgbake cannot handle are refused with what was
// found.
func Inspect(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("inspecting image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("inspecting image: %w", err)
	}
	if format, _ := compression.DetectFile(f); format != compression.Raw {
		return nil, fmt.Errorf("inspecting %s: it is %s-compressed: decompress it first (PrepareBase does)", path, format)
	}
	info, err := InspectReader(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("inspecting %s: %w", path, err)
	}
	return info, nil
}

// InspectReader is Inspect for an image of size bytes read through r.
func InspectReader(r io.ReaderAt, size int64) (*Info, error) {
	t, err := readTable(r, size)
	if err != nil {
		return nil, err
	}
	info := &Info{Size: size, Table: t.kind, DiskID: t.diskID, Partitions: t.parts}
	var exts []int
	for i := range info.Partitions {
		p := &info.Partitions[i]
		probeFS(r, p)
		switch {
		case strings.HasPrefix(p.FS, "fat") && info.BootPartition == 0:
			info.BootPartition = p.Number
		case p.FS == "ext4":
			exts = append(exts, i)
		}
	}
	if err := damagedPartitions(info.Partitions); err != nil {
		return nil, err
	}
	var root *ext4.FS
	for _, i := range exts {
		p := info.Partitions[i]
		fsys, err := ext4.Open(r, p.Start, p.Size, &ext4.Options{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("the ext4 filesystem on partition %d is damaged: %w; check a copy with e2fsck -fn, or download the image again", p.Number, err)
		}
		_, err = fsys.Stat("/etc/os-release")
		switch {
		case err == nil:
			root, info.RootPartition = fsys, p.Number
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("the ext4 filesystem on partition %d is damaged: reading /etc/os-release: %w; check a copy with e2fsck -fn, or download the image again", p.Number, err)
		}
	}
	if root == nil {
		var ps []string
		for _, p := range info.Partitions {
			ps = append(ps, p.String())
		}
		if len(ps) == 0 {
			ps = []string{"none"}
		}
		return nil, fmt.Errorf("no ext4 root partition found (with /etc/os-release): partitions are %s; imgbake needs a Raspberry Pi OS, Armbian or HypriotOS image",
			strings.Join(ps, ", "))
	}
	info.RootSize, info.RootFree = root.Size(), root.FreeBytes()
	var boot *fat.FS
	if bp, ok := info.Partition(info.BootPartition); ok {
		if boot, err = fat.Open(r, bp.Start, bp.Size, true, time.Time{}); err == nil {
			err = boot.Check()
		}
		if err != nil {
			return nil, fmt.Errorf("the FAT boot partition %d is damaged: %w; repair a copy with fsck.vfat -a (dosfstools), or download the image again", bp.Number, err)
		}
		info.BootFree = boot.FreeBytes()
	}
	osInfo, err := detectOS(root, boot)
	if err != nil {
		return nil, err
	}
	info.OS = *osInfo
	return info, nil
}

// fatTypes are the MBR partition types of FAT filesystems, and the GPT
// types of the EFI system and basic data partitions.
var fatTypes = map[string]bool{"0x01": true, "0x04": true, "0x06": true, "0x0b": true, "0x0c": true, "0x0e": true, "0xef": true,
	"c12a7328-f81f-11d2-ba4b-00a0c93ec93b": true, "ebd0a0a2-b9e5-4433-87c0-68b99b26b9c7": true}

// linuxTypes are the MBR and GPT types of a Linux filesystem partition.
var linuxTypes = map[string]bool{"0x83": true, "0fc63daf-8483-4772-8e79-3d69d8477de4": true}

// damagedPartitions reports a partition whose type promises a filesystem
// imgbake edits (FAT or Linux) but whose first sectors hold none: a
// damaged boot sector or superblock, not a different kind of image.
func damagedPartitions(ps []Partition) error {
	for _, p := range ps {
		typ := strings.ToLower(p.Type)
		switch {
		case p.FS == "" && fatTypes[typ] && typ != "ebd0a0a2-b9e5-4433-87c0-68b99b26b9c7":
			return fmt.Errorf("partition %d is a FAT partition (type %s) but holds no FAT filesystem: its boot sector is damaged; download the image again", p.Number, p.Type)
		case p.FS == "" && linuxTypes[typ]:
			return fmt.Errorf("partition %d is a Linux partition (type %s) but holds no ext4 filesystem: its superblock is damaged; check a copy with e2fsck -fn, or download the image again", p.Number, p.Type)
		}
	}
	return nil
}

// probeFS fills p.FS and p.Label from the partition's first sectors.
func probeFS(r io.ReaderAt, p *Partition) {
	b := make([]byte, 2048)
	if p.Size < int64(len(b)) {
		return
	}
	if _, err := r.ReadAt(b, p.Start); err != nil {
		return
	}
	if fat.Probe(b[:512]) {
		if f, err := fat.Open(r, p.Start, p.Size, true, time.Time{}); err == nil {
			p.FS = f.Type()
			if p.Label == "" || !strings.EqualFold(p.Label, f.Label()) {
				p.Label = f.Label()
			}
		}
		return
	}
	if binary.LittleEndian.Uint16(b[1024+56:]) == 0xef53 {
		p.FS = "ext4"
		p.Label = strings.TrimRight(string(b[1024+120:1024+136]), "\x00")
	}
}

// keyValues parses KEY=value lines (os-release, armbian-release),
// unquoting values.
func keyValues(data []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		m[k] = strings.Trim(v, `"'`)
	}
	return m
}

// exists reports whether name exists on the root filesystem.
func exists(root *ext4.FS, name string) bool {
	_, err := root.Stat(name)
	return err == nil
}

// detectOS fills plan.OS from the root filesystem and the boot partition
// (nil when there is none).
func detectOS(root *ext4.FS, boot *fat.FS) (*plan.OS, error) {
	data, err := root.ReadFile("/etc/os-release")
	if err != nil {
		return nil, fmt.Errorf("reading /etc/os-release: %w", err)
	}
	osr := keyValues(data)
	o := &plan.OS{Release: osr["VERSION_CODENAME"], Version: osr["VERSION_ID"]}
	if o.Release == "" { // Buster's os-release: VERSION="10 (buster)"
		if _, v, ok := strings.Cut(osr["VERSION"], "("); ok {
			o.Release = strings.TrimSuffix(v, ")")
		}
	}
	switch {
	case osr["HYPRIOT_OS"] != "":
		o.Family, o.Version = "hypriotos", osr["HYPRIOT_IMAGE_VERSION"]
	case exists(root, "/etc/armbian-release") || exists(root, "/etc/armbian-image-release"):
		o.Family = "armbian"
		for _, p := range []string{"/etc/armbian-release", "/etc/armbian-image-release"} {
			if d, err := root.ReadFile(p); err == nil && keyValues(d)["VERSION"] != "" {
				o.Version = keyValues(d)["VERSION"]
				break
			}
		}
	case exists(root, "/etc/rpi-issue"):
		o.Family = "raspios"
	default:
		return nil, fmt.Errorf("unknown OS: /etc/os-release says ID=%s VERSION_CODENAME=%s, and none of /etc/rpi-issue, /etc/armbian-release or HYPRIOT_OS= is there; imgbake supports Raspberry Pi OS, Armbian and HypriotOS images",
			osr["ID"], osr["VERSION_CODENAME"])
	}
	if o.Release == "" {
		return nil, errors.New("unknown OS release: /etc/os-release has no VERSION_CODENAME")
	}
	arch, err := detectArch(root)
	if err != nil {
		return nil, err
	}
	o.Arch = arch
	o.BootMount = bootMount(root, boot != nil, o.Release)
	cmdline := detectCmdline(root, boot, o)
	detectFirstBoot(root, boot, o, cmdline)
	o.Network = detectNetwork(root, o)
	o.Systemd = systemdVersion(root)
	o.CgroupV1 = cgroupV1(o.Systemd, cmdline)
	return o, nil
}

// bootMount reads where /etc/fstab mounts the FAT partition.
func bootMount(root *ext4.FS, hasBoot bool, release string) string {
	if !hasBoot {
		return ""
	}
	if data, err := root.ReadFile("/etc/fstab"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && !strings.HasPrefix(f[0], "#") && (f[2] == "vfat" || f[2] == "msdos") {
				return f[1]
			}
		}
	}
	if release == "buster" || release == "bullseye" {
		return "/boot"
	}
	return "/boot/firmware"
}

// detectCmdline locates the kernel command line and returns its content.
func detectCmdline(root *ext4.FS, boot *fat.FS, o *plan.OS) string {
	if boot != nil {
		if data, err := boot.ReadFile("/cmdline.txt"); err == nil {
			o.CmdlinePart, o.CmdlinePath = plan.Boot, "/cmdline.txt"
			return string(data)
		}
	}
	for _, p := range []string{"/boot/armbianEnv.txt", "/boot/cmdline.txt"} {
		if data, err := root.ReadFile(p); err == nil {
			o.CmdlinePart, o.CmdlinePath = plan.Root, p
			return string(data)
		}
	}
	return ""
}

// detectFirstBoot names the base's own first-boot mechanism.
func detectFirstBoot(root *ext4.FS, boot *fat.FS, o *plan.OS, cmdline string) {
	if boot != nil && (boot.Exists("/user-data") || boot.Exists("/meta-data")) {
		o.FirstBoot, o.CloudInit = "cloud-init", true
		return
	}
	switch {
	case o.Family == "armbian" && (exists(root, "/lib/systemd/system/armbian-firstrun.service") ||
		exists(root, "/usr/lib/systemd/system/armbian-firstrun.service") || exists(root, "/root/.not_logged_in_yet")):
		o.FirstBoot = "armbian-firstrun"
	case strings.Contains(cmdline, "raspberrypi-sys-mods/firstboot") || exists(root, "/usr/lib/raspberrypi-sys-mods/firstboot"):
		o.FirstBoot = "raspberrypi-sys-mods"
	case strings.Contains(cmdline, "init_resize"):
		o.FirstBoot = "raspi-config"
	default:
		o.FirstBoot = "none"
	}
}

// detectNetwork names the network configuration system.
func detectNetwork(root *ext4.FS, o *plan.OS) string {
	switch {
	case o.Family == "hypriotos":
		return "ifupdown"
	case o.Family == "armbian":
		if ents, err := root.ReadDir("/etc/netplan"); err == nil && len(ents) > 0 {
			return "netplan"
		}
		return "systemd-networkd"
	case o.Release == "trixie":
		return "netplan"
	case o.Release == "buster" || o.Release == "bullseye":
		return "dhcpcd"
	}
	if exists(root, "/etc/NetworkManager") {
		return "NetworkManager"
	}
	if exists(root, "/etc/dhcpcd.conf") {
		return "dhcpcd"
	}
	// A Debian-style base whose systemd-networkd is enabled (a minimal
	// image, a hand-made one).
	if _, err := root.Lstat("/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"); err == nil {
		return "systemd-networkd"
	}
	return "ifupdown"
}

// elfMachine maps an ELF e_machine value to a Debian architecture.
func elfMachine(m uint16) string {
	switch m {
	case 183:
		return "arm64"
	case 40:
		return "armhf"
	case 62:
		return "amd64"
	case 3:
		return "i386"
	case 243:
		return "riscv64"
	}
	return fmt.Sprintf("elf-machine-%d", m)
}

// detectArch reads the ELF headers of a few of the root's binaries and
// takes the majority.
func detectArch(root *ext4.FS) (string, error) {
	votes := map[string]int{}
	var tried []string
	for _, p := range []string{"/bin/sh", "/usr/bin/env", "/sbin/init", "/bin/ls", "/usr/bin/dpkg", "/bin/bash"} {
		f, err := root.Open(p)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				tried = append(tried, p+": "+err.Error())
			}
			continue
		}
		h := make([]byte, 20)
		_, err = f.ReadAt(h, 0)
		f.Close()
		if err != nil || !bytes.HasPrefix(h, []byte("\x7fELF")) {
			tried = append(tried, p+": not ELF")
			continue
		}
		var m uint16
		if h[5] == 2 {
			m = binary.BigEndian.Uint16(h[18:])
		} else {
			m = binary.LittleEndian.Uint16(h[18:])
		}
		votes[elfMachine(m)]++
	}
	if len(votes) == 0 {
		return "", fmt.Errorf("cannot tell the image's architecture: no ELF binary at /bin/sh, /usr/bin/env or /sbin/init (%s)", strings.Join(tried, "; "))
	}
	archs := make([]string, 0, len(votes))
	for a := range votes {
		archs = append(archs, a)
	}
	sort.Slice(archs, func(i, j int) bool {
		if votes[archs[i]] != votes[archs[j]] {
			return votes[archs[i]] > votes[archs[j]]
		}
		return archs[i] < archs[j]
	})
	if a := archs[0]; a != "arm64" && a != "armhf" {
		return "", fmt.Errorf("image binaries are %s, not arm64 or armhf: imgbake builds Raspberry Pi and ARM board images", a)
	}
	return archs[0], nil
}

// systemdVersion reads systemd's version from the name of its shared
// library (libsystemd-shared-241.so, libsystemd-shared-252.so); 0 when
// there is none.
func systemdVersion(root *ext4.FS) int {
	for _, dir := range []string{"/usr/lib/systemd", "/lib/systemd", "/usr/lib/arm-linux-gnueabihf/systemd", "/usr/lib/aarch64-linux-gnu/systemd"} {
		ents, err := root.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			v, ok := strings.CutPrefix(e.Name, "libsystemd-shared-")
			if !ok {
				continue
			}
			v, _, _ = strings.Cut(v, ".so")
			v, _, _ = strings.Cut(v, "-")
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	return 0
}

// cgroupV1 reports whether a base boots with cgroup v1 (legacy or hybrid).
// The kernel command line decides when it names the hierarchy; else
// systemd's default does: hybrid before systemd 243, unified since (and
// Debian builds 247 and newer unified).
func cgroupV1(systemd int, cmdline string) bool {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "systemd.unified_cgroup_hierarchy="); ok {
			switch v {
			case "0", "no", "false", "off":
				return true
			case "1", "yes", "true", "on":
				return false
			}
		}
	}
	return systemd > 0 && systemd < 243
}

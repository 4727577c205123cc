// Package plan is the contract between imgbake's policy and its image layer.
//
// Policy (package firstboot, with profiles and the cluster file) decides what a
// node image must contain and expresses it as a Plan: plain data that tests can
// diff. The image layer (package image) detects the base OS into an OS value and
// applies a Plan to the image's filesystems. Neither side knows the other's
// internals.
package plan

import "fmt"

// Part names the filesystem an entry belongs to.
type Part int

const (
	// Root is the ext4 root filesystem.
	Root Part = iota
	// Boot is the FAT boot partition (cmdline.txt, config.txt, cloud-init
	// seeds). Nothing secret is ever placed here.
	Boot
)

func (p Part) String() string {
	if p == Boot {
		return "boot"
	}
	return "root"
}

// MarshalText makes a Part read "root" or "boot" in JSON (imgbake inspect --json).
func (p Part) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads "root" or "boot".
func (p *Part) UnmarshalText(b []byte) error {
	switch string(b) {
	case "root":
		*p = Root
	case "boot":
		*p = Boot
	default:
		return fmt.Errorf("unknown partition %q: want root or boot", b)
	}
	return nil
}

// Kind is what an Entry creates.
type Kind int

const (
	File Kind = iota
	Dir
	Symlink
)

func (k Kind) String() string {
	switch k {
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	}
	return "file"
}

// Entry is a file, directory or symlink that the image must contain. An
// existing file at Path is replaced; missing parent directories are created
// (0755, root).
type Entry struct {
	Part Part
	// Path is absolute within the partition's filesystem: /etc/hostname on
	// Root, /cmdline.txt on Boot.
	Path string
	Kind Kind
	// Mode holds the permission bits including 04000 (setuid), 02000
	// (setgid) and 01000 (sticky). Ignored on Boot (FAT has none).
	Mode     uint16
	UID, GID uint32
	// Data is the content of a small file.
	Data []byte
	// Source, when set, is a local file streamed into the image instead of
	// Data (the k3s binary, an airgap images tarball).
	Source string
	// Target is the symlink target of a Symlink.
	Target string
	// Secret marks content (join token, node password) that must never be
	// logged, printed or put in the manifest; Secret entries are on Root
	// with Mode 0600 or tighter.
	Secret bool
}

// Edit changes an existing file in place (cmdline.txt, /etc/hosts,
// armbianEnv.txt, cloud-init seeds). Func receives the current content, or
// nil when the file does not exist, and returns the new content. Edits run
// after all Entries, in order.
type Edit struct {
	Part Part
	Path string
	// Desc says what the edit does, for the manifest: "add cgroup flags".
	Desc string
	Func func(old []byte) ([]byte, error) `json:"-"`
	// Mode, UID and GID apply when the file has to be created.
	Mode     uint16
	UID, GID uint32
}

// Plan is everything imgbake puts into one node image.
type Plan struct {
	Entries []Entry
	Edits   []Edit
	// Removes lists paths (on Root unless prefixed "boot:") that must not
	// exist in the output, e.g. a stale /etc/rancher/node/password.
	Removes []string
}

// OS is what the image layer detected in a base image. imgbake inspect
// prints it; policy reads it to decide file formats and locations.
type OS struct {
	// Family is "raspios", "armbian" or "hypriotos".
	Family string `json:"family"`
	// Release is the Debian codename: "buster", "bullseye", "bookworm",
	// "trixie".
	Release string `json:"release"`
	// Version is VERSION_ID from /etc/os-release, or the distribution's own
	// version (Armbian, HypriotOS image version).
	Version string `json:"version,omitempty"`
	// Arch is "arm64" or "armhf", read from the ELF headers of the root
	// filesystem's binaries.
	Arch string `json:"arch"`
	// BootMount is where the FAT boot partition is mounted, read from the
	// image's /etc/fstab: "/boot/firmware", "/boot", or "" when the image
	// has no separate boot partition (Armbian on most boards).
	BootMount string `json:"boot_mount"`
	// CmdlinePart and CmdlinePath locate the kernel command line the image
	// boots with: cmdline.txt on Boot, or /boot/armbianEnv.txt (extraargs)
	// on Root.
	CmdlinePart Part   `json:"cmdline_part"`
	CmdlinePath string `json:"cmdline_path"`
	// FirstBoot names the base's own first-boot mechanism:
	// "raspberrypi-sys-mods", "cloud-init", "armbian-firstrun",
	// "raspi-config" (older init_resize), or "none".
	FirstBoot string `json:"first_boot"`
	// CloudInit is true when cloud-init seeds (user-data, meta-data,
	// network-config) live on the FAT partition.
	CloudInit bool `json:"cloud_init"`
	// Network is the network configuration system the release uses:
	// "dhcpcd", "NetworkManager", "netplan", "systemd-networkd", "ifupdown".
	Network string `json:"network"`
	// Systemd is the base's systemd version (241 on Buster and HypriotOS
	// 1.12, 252 on Bookworm), read from the name of libsystemd-shared; 0
	// when it was not found.
	Systemd int `json:"systemd,omitempty"`
	// CgroupV1 is true when the base boots with cgroup v1 (legacy or
	// hybrid): systemd older than 243 without
	// systemd.unified_cgroup_hierarchy=1 on its command line, or any
	// systemd told systemd.unified_cgroup_hierarchy=0.
	CgroupV1 bool `json:"cgroup_v1"`
}

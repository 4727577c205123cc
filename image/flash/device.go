package flash

import (
	"fmt"
	"strings"

	"github.com/imgbake/imgbake/internal/progress"
)

// Device is a whole disk that could be a flash target.
type Device struct {
	// Path is the device node to write (/dev/sdb, /dev/mmcblk0, /dev/rdisk4).
	Path string `json:"path"`
	// Name is the kernel's name (sdb, mmcblk0, disk4).
	Name string `json:"name"`
	// Model is the vendor and model, as the device reports them.
	Model string `json:"model"`
	// Size is the capacity in bytes.
	Size int64 `json:"size"`
	// Removable is true for removable media, USB disks and SD cards.
	Removable bool `json:"removable"`
	// Bus is "usb", "sd" or "" when unknown or internal.
	Bus string `json:"bus,omitempty"`
	// ReadOnly is true when the device refuses writes (an SD card's
	// write-protect switch).
	ReadOnly bool `json:"read_only,omitempty"`
	// System explains why the device holds the running system ("/ is on
	// sda2"), empty when it does not.
	System string `json:"system,omitempty"`
	// Mounts are the device's mounted partitions.
	Mounts []Mount `json:"mounts,omitempty"`
	// Holders are partitions in use by the device mapper or RAID
	// ("sdb2 is held by dm-0").
	Holders []string `json:"holders,omitempty"`
	// BackingFile is the file a loop device reads and writes
	// (/sys/block/loopN/loop/backing_file), empty for other devices.
	BackingFile string `json:"backing_file,omitempty"`
	// UnmountHint is the command that unmounts the device's partitions.
	UnmountHint string `json:"-"`
}

// Mount is a mounted partition (or swap area) of a device.
type Mount struct {
	Device string `json:"device"` // /dev/sdb1
	Point  string `json:"point"`  // /media/pi/bootfs, or [swap]
}

// String describes the device for lists and confirmations:
// "/dev/sdb (Generic STORAGE DEVICE, 29.7 GiB, usb)".
func (d *Device) String() string {
	parts := []string{}
	if d.Model != "" {
		parts = append(parts, d.Model)
	}
	parts = append(parts, progress.Bytes(d.Size))
	if d.Bus != "" {
		parts = append(parts, d.Bus)
	}
	if !d.Removable {
		parts = append(parts, "NOT removable")
	}
	return fmt.Sprintf("%s (%s)", d.Path, strings.Join(parts, ", "))
}

// CheckOptions relax the safety rules.
type CheckOptions struct {
	// Force allows a disk that is not removable (an internal or
	// non-removable disk). Nothing allows the system disk or a mounted one.
	Force bool
}

// CheckDevice applies the safety rules to a flash target: it refuses the disk the
// system runs from, a disk with a mounted partition or a partition in use
// by the device mapper or RAID, a read-only device, a disk that is not
// removable (unless o.Force), and a disk smaller than the image.
func CheckDevice(d *Device, imageSize int64, o CheckOptions) error {
	if d.System != "" {
		return fmt.Errorf("refusing to write to %s: it holds the running system (%s)", d, d.System)
	}
	if len(d.Mounts) > 0 {
		var ms []string
		for _, m := range d.Mounts {
			ms = append(ms, m.Device+" on "+m.Point)
		}
		hint := d.UnmountHint
		if hint == "" {
			hint = "unmount them"
		}
		return fmt.Errorf("refusing to write to %s: it has mounted partitions (%s); unmount them first: %s",
			d, strings.Join(ms, ", "), hint)
	}
	if len(d.Holders) > 0 {
		return fmt.Errorf("refusing to write to %s: %s; close them first (vgchange -an, cryptsetup close, mdadm --stop)",
			d, strings.Join(d.Holders, ", "))
	}
	if d.ReadOnly {
		return fmt.Errorf("refusing to write to %s: it is read-only (is the SD card's write-protect switch on?)", d)
	}
	if !d.Removable && !o.Force {
		return fmt.Errorf("refusing to write to %s: it is not a removable disk; if it really is the card to erase, pass --force", d)
	}
	if imageSize > d.Size {
		return fmt.Errorf("refusing to write to %s: it is smaller than the image (%s); use a larger card",
			d, progress.Bytes(imageSize))
	}
	return nil
}

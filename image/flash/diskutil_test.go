package flash

import (
	"strings"
	"testing"
)

// Trimmed `diskutil info -plist disk4` of an SD card in a USB reader.
const diskutilInfoDisk4 = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>BusProtocol</key>
	<string>USB</string>
	<key>DeviceIdentifier</key>
	<string>disk4</string>
	<key>DeviceNode</key>
	<string>/dev/disk4</string>
	<key>Ejectable</key>
	<true/>
	<key>Internal</key>
	<false/>
	<key>IORegistryEntryName</key>
	<string>Generic STORAGE DEVICE Media</string>
	<key>MediaName</key>
	<string>STORAGE DEVICE</string>
	<key>ParentWholeDisk</key>
	<string>disk4</string>
	<key>RemovableMedia</key>
	<true/>
	<key>Size</key>
	<integer>31914983424</integer>
	<key>TotalSize</key>
	<integer>31914983424</integer>
	<key>VirtualOrPhysical</key>
	<string>Physical</string>
	<key>WholeDisk</key>
	<true/>
	<key>WritableMedia</key>
	<true/>
</dict>
</plist>`

// Trimmed `diskutil list -plist disk4`: bootfs mounted, rootfs not.
const diskutilListDisk4 = `<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0">
<dict>
	<key>AllDisks</key>
	<array><string>disk4</string><string>disk4s1</string><string>disk4s2</string></array>
	<key>AllDisksAndPartitions</key>
	<array>
		<dict>
			<key>Content</key>
			<string>FDisk_partition_scheme</string>
			<key>DeviceIdentifier</key>
			<string>disk4</string>
			<key>Partitions</key>
			<array>
				<dict>
					<key>Content</key>
					<string>Windows_FAT_32</string>
					<key>DeviceIdentifier</key>
					<string>disk4s1</string>
					<key>MountPoint</key>
					<string>/Volumes/bootfs</string>
					<key>Size</key>
					<integer>536870912</integer>
				</dict>
				<dict>
					<key>Content</key>
					<string>Linux</string>
					<key>DeviceIdentifier</key>
					<string>disk4s2</string>
					<key>Size</key>
					<integer>4294967296</integer>
				</dict>
			</array>
			<key>Size</key>
			<integer>31914983424</integer>
		</dict>
	</array>
	<key>WholeDisks</key>
	<array><string>disk4</string></array>
</dict>
</plist>`

// Trimmed `diskutil info -plist /` on an APFS Mac.
const diskutilInfoRoot = `<plist version="1.0"><dict>
	<key>APFSPhysicalStores</key>
	<array><dict><key>APFSPhysicalStore</key><string>disk0s2</string></dict></array>
	<key>DeviceIdentifier</key><string>disk3s1s1</string>
	<key>ParentWholeDisk</key><string>disk3</string>
	<key>WholeDisk</key><false/>
</dict></plist>`

func mustPlist(t *testing.T, s string) map[string]any {
	t.Helper()
	m, err := readPlistDict(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDarwinDevice(t *testing.T) {
	info, list, root := mustPlist(t, diskutilInfoDisk4), mustPlist(t, diskutilListDisk4), mustPlist(t, diskutilInfoRoot)
	sys := darwinSystemDisks(root)
	if strings.Join(sys, ",") != "disk3,disk0" {
		t.Errorf("system disks = %v, want disk3 and the APFS store's disk0", sys)
	}
	d, err := darwinDevice(info, list, sys)
	if err != nil {
		t.Fatal(err)
	}
	if d.Path != "/dev/rdisk4" || d.Size != 31914983424 || !d.Removable || d.Bus != "usb" || d.Model != "STORAGE DEVICE" {
		t.Errorf("device = %+v", d)
	}
	err = CheckDevice(d, 1<<30, CheckOptions{})
	if err == nil || !strings.Contains(err.Error(), "/dev/disk4s1 on /Volumes/bootfs") || !strings.Contains(err.Error(), "diskutil unmountDisk /dev/disk4") {
		t.Errorf("mounted card: err = %v, want the mount and diskutil unmountDisk", err)
	}
	d.Mounts = nil
	if err := CheckDevice(d, 1<<30, CheckOptions{}); err != nil {
		t.Errorf("unmounted card refused: %v", err)
	}
	d, _ = darwinDevice(info, list, []string{"disk4"})
	if err := CheckDevice(d, 1<<30, CheckOptions{Force: true}); err == nil || !strings.Contains(err.Error(), "running system") {
		t.Errorf("system disk: err = %v", err)
	}
	info["WholeDisk"] = false
	info["DeviceIdentifier"] = "disk4s1"
	if _, err := darwinDevice(info, list, nil); err == nil || !strings.Contains(err.Error(), "/dev/disk4") {
		t.Errorf("partition: err = %v, want the whole disk named", err)
	}
	if got := darwinWholeDisks(list); strings.Join(got, ",") != "disk4" {
		t.Errorf("WholeDisks = %v", got)
	}
}

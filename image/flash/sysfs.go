package flash

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Sysfs finds Linux disks from /sys/block, /proc/self/mountinfo,
// /proc/mounts, /proc/swaps and /proc/cmdline under Root ("/" on a running
// system; a fake tree in tests).
type Sysfs struct {
	Root string
}

// skipName reports kernel disk names that are never flash targets in a
// device list: virtual, optical and RAID devices, eMMC boot areas.
func skipName(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "dm-", "md", "sr", "nbd", "fd", "zd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return strings.HasPrefix(name, "mmcblk") && (strings.Contains(name, "boot") || strings.Contains(name, "rpmb"))
}

func (s Sysfs) path(p ...string) string {
	return filepath.Join(append([]string{s.Root}, p...)...)
}

func (s Sysfs) read(p ...string) string {
	b, err := os.ReadFile(s.path(p...))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Devices returns the whole disks that can be flash targets (not loop, RAM,
// device-mapper, RAID or optical devices), removable or not, in name order.
func (s Sysfs) Devices() ([]Device, error) {
	entries, err := os.ReadDir(s.path("sys", "block"))
	if err != nil {
		return nil, fmt.Errorf("listing disks: %w", err)
	}
	use, err := s.usage()
	if err != nil {
		return nil, err
	}
	var out []Device
	for _, e := range entries {
		if skipName(e.Name()) {
			continue
		}
		out = append(out, s.device(e.Name(), use))
	}
	return out, nil
}

// Device returns the whole disk named name (sdb, mmcblk0, loop3). A
// partition name gives an error naming its disk.
func (s Sysfs) Device(name string) (*Device, error) {
	if _, err := os.Stat(s.path("sys", "block", name)); err != nil {
		if disk := s.diskOf(name); disk != "" {
			return nil, fmt.Errorf("/dev/%s is a partition: give the whole disk, /dev/%s", name, disk)
		}
		return nil, fmt.Errorf("no disk named %s in /sys/block: see imgbake flash --list", name)
	}
	use, err := s.usage()
	if err != nil {
		return nil, err
	}
	d := s.device(name, use)
	return &d, nil
}

// ByDevNum returns the name of the disk or partition with the device
// number major:minor.
func (s Sysfs) ByDevNum(major, minor uint32) (string, error) {
	want := fmt.Sprintf("%d:%d", major, minor)
	disks, _ := os.ReadDir(s.path("sys", "block"))
	for _, d := range disks {
		if s.read("sys", "block", d.Name(), "dev") == want {
			return d.Name(), nil
		}
		for _, p := range s.partitions(d.Name()) {
			if s.read("sys", "block", d.Name(), p, "dev") == want {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no disk with device number %s in /sys/block", want)
}

func (s Sysfs) partitions(disk string) []string {
	entries, _ := os.ReadDir(s.path("sys", "block", disk))
	var out []string
	for _, e := range entries {
		if _, err := os.Stat(s.path("sys", "block", disk, e.Name(), "partition")); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// diskOf returns the disk a partition belongs to, or "".
func (s Sysfs) diskOf(part string) string {
	disks, _ := os.ReadDir(s.path("sys", "block"))
	for _, d := range disks {
		if slices.Contains(s.partitions(d.Name()), part) {
			return d.Name()
		}
	}
	return ""
}

func (s Sysfs) device(name string, use *usage) Device {
	d := Device{Path: "/dev/" + name, Name: name}
	sectors, _ := strconv.ParseInt(s.read("sys", "block", name, "size"), 10, 64)
	d.Size = sectors * 512 // /sys/block/*/size counts 512-byte sectors whatever the device's sector size
	d.Model = strings.Join(strings.Fields(s.read("sys", "block", name, "device", "vendor")+" "+s.read("sys", "block", name, "device", "model")), " ")
	d.ReadOnly = s.read("sys", "block", name, "ro") == "1"
	d.BackingFile = s.read("sys", "block", name, "loop", "backing_file")
	link, _ := os.Readlink(s.path("sys", "block", name))
	switch {
	case strings.Contains(link, "/usb"):
		d.Bus = "usb"
	case strings.HasPrefix(name, "mmcblk"):
		if typ := s.read("sys", "block", name, "device", "type"); typ == "SD" || typ == "" {
			d.Bus = "sd"
		}
	}
	d.Removable = s.read("sys", "block", name, "removable") == "1" || d.Bus != ""
	var devs []string
	for _, n := range append([]string{name}, s.partitions(name)...) {
		for _, m := range use.mounts[n] {
			d.Mounts = append(d.Mounts, Mount{Device: "/dev/" + n, Point: m})
			if !slices.Contains(devs, "/dev/"+n) {
				devs = append(devs, "/dev/"+n)
			}
		}
		holders, _ := os.ReadDir(s.path("sys", "block", name, n, "holders"))
		if n == name {
			holders, _ = os.ReadDir(s.path("sys", "block", name, "holders"))
		}
		for _, h := range holders {
			d.Holders = append(d.Holders, fmt.Sprintf("%s is held by %s", n, h.Name()))
		}
		if why, ok := use.system[n]; ok && (d.System == "" || strings.HasPrefix(why, "/ is")) {
			d.System = why
		}
	}
	if len(devs) > 0 {
		d.UnmountHint = "sudo umount " + strings.Join(devs, " ")
	}
	return d
}

// usage is what the running system uses: mounted and swap devices by
// kernel name, and the devices holding the system with the reason.
type usage struct {
	mounts map[string][]string
	system map[string]string
}

func (s Sysfs) usage() (*usage, error) {
	u := &usage{mounts: map[string][]string{}, system: map[string]string{}}
	mi, err := os.ReadFile(s.path("proc", "self", "mountinfo"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		point := unescapeMount(f[4])
		names := s.namesFor(f[sep+2])
		if maj, min, ok := parseDevNum(f[2]); ok && maj != 0 {
			if n, err := s.ByDevNum(maj, min); err == nil {
				names = append(names, n)
			}
		}
		s.addMount(u, names, point)
	}
	// /proc/mounts as well: it names the source device even where
	// mountinfo's device number is a virtual one (btrfs).
	pm, _ := os.ReadFile(s.path("proc", "mounts"))
	for _, line := range strings.Split(string(pm), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			s.addMount(u, s.namesFor(f[0]), unescapeMount(f[1]))
		}
	}
	sw, _ := os.ReadFile(s.path("proc", "swaps"))
	for _, line := range strings.Split(string(sw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] != "Filename" {
			s.addMount(u, s.namesFor(f[0]), "[swap]")
		}
	}
	if root := s.cmdlineRoot(); root != "" {
		for _, n := range s.namesFor(root) {
			s.markSystem(u, n, "the kernel command line has root="+root)
		}
	}
	return u, nil
}

func (s Sysfs) addMount(u *usage, names []string, point string) {
	for _, n := range dedupe(names) {
		for _, under := range s.underlying(n) {
			if !slices.Contains(u.mounts[under], point) {
				u.mounts[under] = append(u.mounts[under], point)
			}
			switch {
			case point == "[swap]":
				s.markSystem(u, under, "swap is on "+n)
			case systemMount(point):
				s.markSystem(u, under, point+" is mounted from "+n)
			}
		}
	}
}

func (s Sysfs) markSystem(u *usage, name, why string) {
	for _, under := range s.underlying(name) {
		if _, ok := u.system[under]; !ok || strings.HasPrefix(why, "/ is") {
			u.system[under] = why
		}
	}
}

// systemMount reports mount points the running system needs.
func systemMount(point string) bool {
	switch point {
	case "/", "/usr", "/boot", "/boot/efi", "/boot/firmware", "/var", "/etc":
		return true
	}
	return false
}

// underlying follows device-mapper and RAID slaves down to the partitions
// or disks they are built on; a plain partition is its own.
func (s Sysfs) underlying(name string) []string {
	out := []string{name}
	slaves, _ := os.ReadDir(s.path("sys", "block", name, "slaves"))
	for _, sl := range slaves {
		if sl.Name() != name {
			out = append(out, s.underlying(sl.Name())...)
		}
	}
	return out
}

// namesFor maps a mount source (/dev/sdb1, /dev/mapper/vg-root,
// /dev/disk/by-uuid/..., PARTUUID=..., UUID=...) to kernel device names.
func (s Sysfs) namesFor(src string) []string {
	switch {
	case strings.HasPrefix(src, "PARTUUID="):
		src = "/dev/disk/by-partuuid/" + strings.ToLower(strings.TrimPrefix(src, "PARTUUID="))
	case strings.HasPrefix(src, "UUID="):
		src = "/dev/disk/by-uuid/" + strings.TrimPrefix(src, "UUID=")
	case strings.HasPrefix(src, "LABEL="):
		src = "/dev/disk/by-label/" + strings.TrimPrefix(src, "LABEL=")
	}
	if !strings.HasPrefix(src, "/dev/") {
		return nil
	}
	if link, err := os.Readlink(s.path(src)); err == nil {
		return []string{filepath.Base(link)}
	}
	if mapped, ok := strings.CutPrefix(src, "/dev/mapper/"); ok {
		dms, _ := os.ReadDir(s.path("sys", "block"))
		for _, dm := range dms {
			if s.read("sys", "block", dm.Name(), "dm", "name") == mapped {
				return []string{dm.Name()}
			}
		}
		return nil
	}
	return []string{filepath.Base(src)}
}

// cmdlineRoot returns the root= argument of the kernel command line.
func (s Sysfs) cmdlineRoot() string {
	f, err := os.Open(s.path("proc", "cmdline"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Split(bufio.ScanWords)
	root := ""
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "root="); ok {
			root = v
		}
	}
	return root
}

func parseDevNum(s string) (uint32, uint32, bool) {
	a, b, ok := strings.Cut(s, ":")
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	return uint32(maj), uint32(min), ok && err1 == nil && err2 == nil
}

// unescapeMount decodes the octal escapes (\040 for a space) of mount
// points in /proc/mounts and mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func dedupe(xs []string) []string {
	var out []string
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

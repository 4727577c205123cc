package flash

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// TestLookupDeviceLoop looks up a real loop device through /dev and /sys.
func TestLookupDeviceLoop(t *testing.T) {
	target, isFile := randomTarget(t, t.TempDir(), 8<<20)
	if isFile {
		t.Skip("no loop device available (needs root and losetup)")
	}
	d, err := LookupDevice(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	if d.Path != target || d.Size != 8<<20 || d.Removable || d.System != "" || len(d.Mounts) != 0 {
		t.Errorf("LookupDevice(%s) = %+v, want a non-removable, unused 8 MiB disk", target, d)
	}
	if err := CheckDevice(d, 1<<20, CheckOptions{}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("CheckDevice(loop) without force = %v, want a refusal suggesting --force", err)
	}
	if err := CheckDevice(d, 1<<20, CheckOptions{Force: true}); err != nil {
		t.Errorf("CheckDevice(loop) with force: %v", err)
	}
	if _, err := LookupDevice(context.Background(), "/proc/self/status"); err == nil {
		t.Error("LookupDevice of a regular file succeeded")
	}
}

// TestSystemDiskRefused: the disk holding this machine's / is flagged.
func TestSystemDiskRefused(t *testing.T) {
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", "/").Output()
	src := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(src, "/dev/") {
		t.Skipf("root filesystem is not on a block device here (%q)", src)
	}
	if _, err := os.Stat(src); err != nil {
		t.Skipf("root device %s has no node in /dev", src)
	}
	d, err := LookupDevice(context.Background(), src)
	if err != nil && strings.Contains(err.Error(), "is a partition") {
		t.Logf("%v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckDevice(d, 0, CheckOptions{Force: true}); err == nil || !strings.Contains(err.Error(), "running system") {
		t.Errorf("CheckDevice(%s) = %v, want a refusal: it holds /", src, err)
	}
}

// TestMountedDeviceRefused mounts a filesystem on a loop device and checks
// that it is refused with the unmount command, and that the device cannot
// be opened for writing either (O_EXCL).
func TestMountedDeviceRefused(t *testing.T) {
	fixture.NeedTools(t, "mkfs.ext4", "mount", "umount")
	dir := t.TempDir()
	target, isFile := randomTarget(t, dir, 16<<20)
	if isFile {
		t.Skip("no loop device available (needs root and losetup)")
	}
	fixture.Run(t, "mkfs.ext4", "-q", target)
	mnt := dir + "/mnt point"
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", target, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount here: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	d, err := LookupDevice(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckDevice(d, 1<<20, CheckOptions{Force: true})
	want := target + " on " + mnt + "); unmount them first: sudo umount " + target
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("mounted device: err = %v, want it to contain %q", err, want)
	}
	if _, err := OpenTarget(target, TargetOptions{}); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("OpenTarget of a mounted device = %v, want a busy error", err)
	}
}

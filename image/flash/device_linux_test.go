package flash

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
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

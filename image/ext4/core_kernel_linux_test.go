package ext4

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// coreMount loop-mounts img at a fresh directory (in a private mount namespace:
// fixture.Mount); it skips when that is not possible (not root, no loop devices).
func coreMount(t *testing.T, img string, ro bool) (string, func()) {
	t.Helper()
	opts := "loop"
	if ro {
		opts += ",ro"
	}
	mnt, umount, err := fixture.Mount(t, img, "", opts)
	if err != nil {
		t.Skipf("cannot loop-mount (needs root and loop devices): %v", err)
	}
	return mnt, umount
}

// TestCoreKernelPopulated edits a filesystem the Linux kernel populated (its own htree
// directories, extent trees, unwritten extents from fallocate, hard links, xattrs), checks
// it with e2fsck and reads the result back through the kernel.
func TestCoreKernelPopulated(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	coreNeed(t, "mkfs.ext4", "e2fsck", "mount", "umount")
	for _, kind := range []string{"pigen", "raspbian-old", "1k"} {
		t.Run(kind, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "fs.img")
			args := append([]string{"-q", "-F"}, coreKinds[kind]...)
			if out, err := exec.Command("mkfs.ext4", append(args, img, "128M")...).CombinedOutput(); err != nil {
				t.Fatal(err, string(out))
			}
			mnt, umount := coreMount(t, img, false)
			must := func(err error) {
				t.Helper()
				if err != nil {
					umount()
					t.Fatal(err)
				}
			}
			must(os.MkdirAll(filepath.Join(mnt, "usr/bin"), 0o755))
			for i := 0; i < 2500; i++ {
				must(os.WriteFile(filepath.Join(mnt, "usr/bin", fmt.Sprintf("prog-%04d", i)), []byte(fmt.Sprint(i)), 0o755))
			}
			must(os.WriteFile(filepath.Join(mnt, "usr/bin/big"), bytes.Repeat([]byte("k"), 9<<20), 0o755))
			must(exec.Command("fallocate", "-l", "5M", filepath.Join(mnt, "prealloc")).Run())
			must(os.Link(filepath.Join(mnt, "usr/bin/prog-0001"), filepath.Join(mnt, "hardlink")))
			must(syscall.Setxattr(filepath.Join(mnt, "usr/bin/big"), "user.k", []byte("v"), 0))
			umount()

			f, fh := coreOpen(t, img)
			defer fh.Close()
			must(f.WriteFile("/usr/bin/prog-0001", []byte("replaced"), Attr{Mode: 0o700}))
			for i := 0; i < 2500; i += 3 {
				if i != 1 {
					must(f.Remove(fmt.Sprintf("/usr/bin/prog-%04d", i)))
				}
			}
			for i := 0; i < 1500; i++ {
				must(f.WriteFile(fmt.Sprintf("/usr/bin/new-%04d", i), []byte("n"), Attr{Mode: 0o644}))
			}
			must(f.Chmod("/usr/bin/big", 0o4711))
			must(f.SetXattr("/usr/bin/big", "security.capability", []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}))
			got, err := f.ReadFile("/prealloc")
			must(err)
			if len(got) != 5<<20 || !isZero(got) {
				t.Errorf("fallocated file: %d bytes, zero=%v", len(got), isZero(got))
			}
			must(f.Remove("/prealloc"))
			must(f.Close())
			coreFsck(t, img)

			mnt, umount = coreMount(t, img, true)
			defer umount()
			if b, _ := os.ReadFile(filepath.Join(mnt, "hardlink")); string(b) != "replaced" {
				t.Errorf("hard link reads %q", b)
			}
			ents, _ := os.ReadDir(filepath.Join(mnt, "usr/bin"))
			if want := 2500 - 834 + 1500 + 1; len(ents) != want {
				t.Errorf("kernel sees %d entries in /usr/bin, want %d", len(ents), want)
			}
			if b, _ := os.ReadFile(filepath.Join(mnt, "usr/bin/new-1499")); string(b) != "n" {
				t.Errorf("new-1499 = %q", b)
			}
			names := make([]byte, 4096)
			n, err := syscall.Listxattr(filepath.Join(mnt, "usr/bin/big"), names)
			if list := string(names[:max(n, 0)]); err != nil || !strings.Contains(list, "user.k") || !strings.Contains(list, "security.capability") {
				t.Errorf("xattrs through the kernel: %q %v", list, err)
			}
			if st, err := os.Stat(filepath.Join(mnt, "usr/bin/big")); err != nil || st.Mode()&os.ModeSetuid == 0 {
				t.Errorf("big mode: %v %v", st, err)
			}
		})
	}
}

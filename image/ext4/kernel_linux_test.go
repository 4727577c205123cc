package ext4_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/internal/fixture"
)

// The Linux kernel as the second opinion: it mounts what we wrote, reads it
// byte for byte, changes it (in htree directories, deep extent trees), and
// we read and change its result again. e2fsck -fn must be clean throughout.

// mountImage loop-mounts img read-write and returns the mount point; the
// unmount is registered with t.Cleanup and can be forced earlier with the
// returned function. The mount lives in a private mount namespace
// (fixture.Mount): after the unmount the image holds everything the kernel
// wrote, whatever other tests run meanwhile.
func mountImage(t *testing.T, img string) (string, func()) {
	t.Helper()
	dir, umount, err := fixture.Mount(t, img, "ext4", "loop,rw")
	if err != nil {
		t.Fatal(err)
	}
	return dir, umount
}

// requireLoopMount skips t unless this process can loop-mount ext4.
func requireLoopMount(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel tests need root for loop mounts; run as root to have the kernel check our writes")
	}
	requireTool(t, "mount")
	img := makeFixtureBytes(t, "tiny", 1<<20)
	_, umount, err := fixture.Mount(t, img, "ext4", "loop,ro")
	if err != nil {
		t.Skipf("loop mounts are not available here (%v); the kernel tests need them", err)
	}
	umount()
}

// kernelCompare checks the mounted tree at dir against m through the
// kernel: names, types, modes, owners, bytes, symlink targets, xattrs.
func kernelCompare(t *testing.T, dir string, m model) {
	t.Helper()
	errs := 0
	fail := func(format string, args ...any) {
		if errs++; errs <= 25 {
			t.Errorf(format, args...)
		}
	}
	seen := map[string]bool{}
	filepath.WalkDir(dir, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			fail("kernel walk: %v", err)
			return nil
		}
		p := strings.TrimPrefix(hp, dir)
		if p == "" {
			return nil
		}
		if p == "/lost+found" {
			return fs.SkipDir
		}
		seen[p] = true
		n := m[p]
		if n == nil {
			fail("%s: the kernel sees it, it was not written", p)
			return nil
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(hp, &st); err != nil || st.Mode != modeOf(n) || st.Uid != n.UID || st.Gid != n.GID {
			fail("%s: kernel says mode %o uid %d gid %d (%v), want %o %d %d", p, st.Mode, st.Uid, st.Gid, err, modeOf(n), n.UID, n.GID)
		}
		switch n.Type {
		case 'f':
			if b, err := os.ReadFile(hp); err != nil || !bytes.Equal(b, n.Data) {
				fail("%s: kernel reads %d bytes (%v), want the %d written", p, len(b), err, len(n.Data))
			}
		case 'l':
			if s, err := os.Readlink(hp); err != nil || s != n.Target {
				fail("%s: kernel reads link %q (%v), want %q", p, s, err, n.Target)
			}
			return nil
		}
		got := kernelXattrs(hp)
		if fmt.Sprint(got) != fmt.Sprint(n.Xattrs) {
			fail("%s: kernel xattrs %q, want %q", p, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(n.Xattrs)))
		}
		return nil
	})
	for p := range m {
		if !seen[p] {
			fail("%s: the kernel does not see it", p)
		}
	}
}

// kernelXattrs lists the xattrs of host path p through the kernel.
func kernelXattrs(p string) map[string][]byte {
	attrs := map[string][]byte{}
	buf := make([]byte, 64<<10)
	n, err := syscall.Listxattr(p, buf)
	if err != nil {
		return attrs
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, "system.") {
			continue
		}
		v := make([]byte, 64<<10)
		if vn, err := syscall.Getxattr(p, name, v); err == nil {
			attrs[name] = v[:vn]
		}
	}
	return attrs
}

// kernelEdits changes, through the mounted kernel filesystem at dir, the
// directories and files our writes made, and updates m to match.
func kernelEdits(t *testing.T, dir string, m model) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("kernel: %v", err)
		}
	}
	write := func(p string, data []byte, perm uint32) {
		t.Helper()
		must(os.WriteFile(dir+p, data, 0o600))
		must(syscall.Chmod(dir+p, perm))
		m[p] = &mNode{Type: 'f', Perm: perm, Data: data, Xattrs: map[string][]byte{}}
	}
	remove := func(p string) {
		t.Helper()
		must(os.Remove(dir + p))
		delete(m, p)
	}
	// Our htree directory and our large linear one.
	for i := range 300 {
		write(fmt.Sprintf("/usr/lib/x/kernel-made-%03d", i), fxBytes(fmt.Sprint("kx", i), i*13), 0o644)
	}
	for i := 1; i < 200; i += 4 {
		remove(fmt.Sprintf("/usr/lib/x/added-entry-with-a-longer-name-%03d.so", i))
	}
	for i := 0; i < 100; i++ {
		remove(fmt.Sprintf("/frag/keep-%05d", i*3))
		write(fmt.Sprintf("/frag/kernel-%03d", i), []byte("k"), 0o640)
	}
	// Our files: append, overwrite inside a deep extent tree, truncate.
	n := m["/usr/local/bin/k3s"]
	fh, err := os.OpenFile(dir+"/usr/local/bin/k3s", os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	tail := fxBytes("appended", 100000)
	_, err = fh.Write(tail)
	must(err)
	must(fh.Close())
	n.Data = append(bytes.Clone(n.Data), tail...)
	delete(n.Xattrs, "security.capability") // Linux drops file capabilities on write
	n = m["/frag/deep-kept"]
	fh, err = os.OpenFile(dir+"/frag/deep-kept", os.O_WRONLY, 0)
	must(err)
	patch := fxBytes("patch", 50000)
	_, err = fh.WriteAt(patch, int64(len(n.Data)/3))
	must(err)
	must(fh.Close())
	n.Data = bytes.Clone(n.Data)
	copy(n.Data[len(n.Data)/3:], patch)
	must(os.Truncate(dir+"/etc/passwd", 1000))
	m["/etc/passwd"].Data = m["/etc/passwd"].Data[:1000]
	// Our directories and attributes.
	must(os.Mkdir(dir+"/etc/rancher/k3s/kernel.d", 0o700))
	m["/etc/rancher/k3s/kernel.d"] = &mNode{Type: 'd', Perm: 0o700, Xattrs: map[string][]byte{}}
	write("/etc/rancher/k3s/kernel.d/a.yaml", []byte("a: 1\n"), 0o600)
	must(os.Rename(dir+"/etc/rancher/k3s/config.yaml", dir+"/usr/lib/x/config.yaml"))
	m["/usr/lib/x/config.yaml"] = m["/etc/rancher/k3s/config.yaml"]
	delete(m, "/etc/rancher/k3s/config.yaml")
	must(syscall.Setxattr(dir+"/etc/hostname", "user.kernel", []byte("set by Linux"), 0))
	m["/etc/hostname"].Xattrs["user.kernel"] = []byte("set by Linux")
	must(os.Remove(dir + "/usr/bin/link-59"))
	delete(m, "/usr/bin/link-59")
	must(os.Symlink("kernel-target", dir+"/var/tmp2/klink"))
	m["/var/tmp2/klink"] = &mNode{Type: 'l', Perm: 0o777, Target: "kernel-target", Xattrs: map[string][]byte{}}
}

// TestKernel has the kernel read and edit what we wrote, then edits the
// kernel's result with the package again. By default on three kinds that
// differ in checksums and block size; IMGBAKE_EXT4_ALL_KINDS=1 runs all.
func TestKernel(t *testing.T) {
	requireLoopMount(t)
	kinds := []string{"pigen", "armbian-old", "1k"}
	if os.Getenv("IMGBAKE_EXT4_ALL_KINDS") != "" {
		kinds = fxKinds
	}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			img := makeFixture(t, kind, 64)
			w := newWriter(t, img, kind)
			writeFeatures(t, w)
			w.close()
			e2fsckClean(t, img)

			dir, umount := mountImage(t, img)
			kernelCompare(t, dir, w.m)
			kernelEdits(t, dir, w.m)
			umount()
			verifyModel(t, img, w.m)

			// Our reader on the kernel's structures, then our writer again.
			w.f = openImage(t, img, false)
			verifyAPI(t, w.f, w.m)
			for i := range 100 {
				w.writeFile(fmt.Sprintf("/usr/lib/x/after-kernel-%03d", i), []byte("again\n"), ext4.Attr{Mode: 0o644})
				w.remove(fmt.Sprintf("/usr/lib/x/kernel-made-%03d", i*2))
			}
			w.remove("/etc/rancher/k3s/kernel.d/a.yaml")
			w.remove("/etc/rancher/k3s/kernel.d")
			w.writeFile("/frag/deep-kept", []byte("replaced after the kernel\n"), ext4.Attr{Mode: 0o644})
			w.close()
			verifyModel(t, img, w.m)

			dir, _ = mountImage(t, img)
			kernelCompare(t, dir, w.m)
			if t.Failed() {
				t.Logf("%s: the image is %s", kind, path.Base(img))
			}
		})
	}
}

// growKernelCheck mounts the grown filesystem (when loop mounts work):
// statfs must show the new size, the files written after the grow must
// read back, and the kernel must be able to use the new space.
func growKernelCheck(t *testing.T, img string, oldSize, newSize int64, m model) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: skipping the kernel's view of the grown filesystem")
		return
	}
	dir, umount := mountImage(t, img)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if total := int64(st.Blocks) * int64(st.Bsize); total <= oldSize || total > newSize || total < newSize*9/10 {
		t.Errorf("df after the grow: %d bytes, want about %d", total, newSize)
	}
	for _, p := range []string{"/after-grow/big", "/after-grow/small-07", "/before-grow"} {
		if b, err := os.ReadFile(dir + p); err != nil || !bytes.Equal(b, m[p].Data) {
			t.Errorf("kernel reads %s: %d bytes, %v", p, len(b), err)
		}
	}
	data := fxBytes("kernel after grow", 16<<20)
	if err := os.WriteFile(dir+"/after-grow/kernel", data, 0o644); err != nil {
		t.Errorf("kernel writing into the grown space: %v", err)
	}
	umount()
	e2fsckClean(t, img)
	if got := debugfsCat(t, img, "/after-grow/kernel"); !bytes.Equal(got, data) {
		t.Errorf("file written by the kernel after the grow reads back wrong")
	}
}

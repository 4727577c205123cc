package ext4

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func coreNeed(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install e2fsprogs)", tool)
		}
	}
}

func coreNow() time.Time { return time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC) }

// coreTree populates dir with a small root-like tree.
func coreTree(t testing.TB, dir string, bigDir int) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "etc/ssh"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "usr/bin"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "var/lib"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "etc/hostname"), []byte("raspberrypi\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "etc/ssh/sshd_config"), bytes.Repeat([]byte("Port 22\n"), 1000), 0o644))
	big := make([]byte, 3<<20+123)
	for i := range big {
		big[i] = byte(i*7 + i/4096)
	}
	must(os.WriteFile(filepath.Join(dir, "usr/bin/big"), big, 0o755))
	must(os.Symlink("/etc/hostname", filepath.Join(dir, "etc/fast")))
	must(os.Symlink(strings.Repeat("x/", 40)+"target", filepath.Join(dir, "etc/slow")))
	for i := 0; i < bigDir; i++ {
		must(os.WriteFile(filepath.Join(dir, "usr/bin", fmt.Sprintf("tool-%05d-with-a-longish-name", i)), []byte(fmt.Sprint(i)), 0o755))
	}
}

// coreMkfs makes an image of sizeMB with mkfs.ext4 -d and extra options.
func coreMkfs(t testing.TB, sizeMB int, bigDir int, opts ...string) string {
	t.Helper()
	coreNeed(t, "mkfs.ext4", "e2fsck", "debugfs")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	coreTree(t, root, bigDir)
	img := filepath.Join(dir, "fs.img")
	ext := "hash_seed=01234567-89ab-cdef-0123-456789abcdef"
	var rest []string
	hashAlg := ""
	for i := 0; i < len(opts); i++ {
		if h, ok := strings.CutPrefix(opts[i], "--hash="); ok {
			hashAlg = h
			continue
		}
		if opts[i] == "-E" && i+1 < len(opts) {
			ext += "," + opts[i+1]
			i++
			continue
		}
		rest = append(rest, opts[i])
	}
	args := append([]string{"-q", "-F", "-E", ext, "-U", "11111111-2222-3333-4444-555555555555"}, rest...)
	args = append(args, "-d", root, img, fmt.Sprintf("%dM", sizeMB))
	cmd := exec.Command("mkfs.ext4", args...)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %v: %v\n%s", args, err, out)
	}
	if hashAlg != "" {
		if out, err := exec.Command("tune2fs", "-E", "hash_alg="+hashAlg, img).CombinedOutput(); err != nil {
			t.Fatalf("tune2fs: %v\n%s", err, out)
		}
	}
	// mkfs -d writes linear directories; -D builds htree indexes like a used root fs has
	if out, err := exec.Command("e2fsck", "-fyD", img).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck -fyD: %v\n%s", err, out)
		}
	}
	return img
}

func coreOpen(t testing.TB, img string) (*FS, *os.File) {
	t.Helper()
	return coreOpenMode(t, img, false)
}

func coreOpenMode(t testing.TB, img string, ro bool) (*FS, *os.File) {
	t.Helper()
	flag := os.O_RDWR
	if ro {
		flag = os.O_RDONLY
	}
	fh, err := os.OpenFile(img, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := fh.Stat()
	f, err := Open(fh, 0, st.Size(), &Options{Now: coreNow, ReadOnly: ro})
	if err != nil {
		fh.Close()
		t.Fatal(err)
	}
	return f, fh
}

func coreFsck(t testing.TB, img string) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
}

func coreDebugfs(t testing.TB, img, cmd string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", cmd, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", cmd, err)
	}
	return string(out)
}

// corePattern checks that debugfs reads path in img as the n bytes
// patReader gives (streamed and hashed: the file may be large).
func corePattern(t testing.TB, img, path string, n int64) {
	t.Helper()
	want := sha256.New()
	io.Copy(want, &patReader{n: n})
	cmd := exec.Command("debugfs", "-R", "cat "+path, img)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	got := sha256.New()
	size, _ := io.Copy(got, out)
	cmd.Wait()
	if size != n || !bytes.Equal(want.Sum(nil), got.Sum(nil)) {
		t.Errorf("%s differs (debugfs read %d bytes, want %d)", path, size, n)
	}
}

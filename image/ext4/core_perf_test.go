package ext4

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// patReader yields a deterministic non-zero byte pattern without buffering it all.
type patReader struct{ n, i int64 }

func (r *patReader) Read(p []byte) (int, error) {
	if r.i >= r.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.n-r.i)
	for j := int64(0); j < k; j++ {
		p[j] = byte((r.i + j) * 31 / 7)
	}
	r.i += k
	return int(k), nil
}

// TestCoreSpeedVsDebugfs writes a 70 MiB file and 20 small files into a 2 GiB filesystem
// and compares with `debugfs -w` doing the same.
func TestCoreSpeedVsDebugfs(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	coreNeed(t, "mkfs.ext4", "debugfs", "e2fsck")
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	fh, _ := os.Create(src)
	if _, err := io.Copy(fh, &patReader{n: 70 << 20}); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	small := filepath.Join(dir, "small")
	os.WriteFile(small, []byte("hello\n"), 0o644)
	mk := func(name string) string {
		img := filepath.Join(dir, name)
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "^64bit,^huge_file", img, "2G").CombinedOutput(); err != nil {
			t.Fatal(err, string(out))
		}
		return img
	}
	a, b := mk("a.img"), mk("b.img")
	cmds := "write " + src + " big\n"
	for i := 0; i < 20; i++ {
		cmds += fmt.Sprintf("write %s s%d\n", small, i)
	}
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte(cmds), 0o644)
	t0 := time.Now()
	if out, err := exec.Command("debugfs", "-w", "-f", script, a).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	dDebugfs := time.Since(t0)
	t0 = time.Now()
	f, img := coreOpen(t, b)
	in, _ := os.Open(src)
	if err := f.CreateFile("/big", in, 70<<20, Attr{Mode: 0644}); err != nil {
		t.Fatal(err)
	}
	in.Close()
	for i := 0; i < 20; i++ {
		if err := f.WriteFile(fmt.Sprintf("/s%d", i), []byte("hello\n"), Attr{Mode: 0644}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	img.Close()
	dOurs := time.Since(t0)
	t.Logf("debugfs %v, ext4 %v, ratio %.2f", dDebugfs, dOurs, float64(dOurs)/float64(dDebugfs))
	coreFsck(t, b)
}

// TestCoreMemorySparse64G writes a 70 MiB file into a sparse 64 GiB filesystem in a child
// process (so other tests' allocations do not count) and checks its peak RSS.
func TestCoreMemorySparse64G(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	coreNeed(t, "mkfs.ext4", "e2fsck")
	if img := os.Getenv("EXT4_CORE_MEM_IMG"); img != "" {
		f, fh := coreOpen(t, img)
		defer fh.Close()
		if err := f.CreateFile("/airgap.tar", &patReader{n: 70 << 20}, 70<<20, Attr{Mode: 0644}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.AllocatedRanges(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// VmHWM is this process's own peak (rusage of an exec'd child also counts the
		// parent's peak from before the exec)
		st, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Skip("no /proc/self/status")
		}
		for _, line := range strings.Split(string(st), "\n") {
			if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				var n int64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), &n)
				fmt.Printf("peak RSS %d MiB\n", n>>10)
				if n>>10 > 150 {
					t.Errorf("peak RSS %d MiB > 150", n>>10)
				}
			}
		}
		return
	}
	img := filepath.Join(t.TempDir(), "big.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "64G").CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCoreMemorySparse64G$")
	cmd.Env = append(os.Environ(), "EXT4_CORE_MEM_IMG="+img)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "peak RSS") {
		t.Fatalf("child did not report its peak RSS:\n%s", out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	coreFsck(t, img)
	if st := coreDebugfs(t, img, "stat /airgap.tar"); !strings.Contains(st, "Size: 73400320") {
		t.Errorf("child did not write the file:\n%s", st)
	}
}

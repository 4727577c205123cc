package ext4

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCoreFragmentedAndLarge fills a filesystem with 4-block files, frees every other one
// and writes a file that can only go into the 4-block holes (an extent tree of depth >= 1,
// or double indirect blocks on ext2); then a file larger than one maximal extent (and
// through triple indirect blocks on ext2 with 1 KiB blocks) into a fresh filesystem.
func TestCoreFragmentedAndLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	for _, kind := range []string{"pigen", "1k", "ext2-1k"} {
		t.Run(kind, func(t *testing.T) {
			img := coreMkfs(t, 24, 10, append([]string{"-N", "8000"}, coreKinds[kind]...)...)
			f, fh := coreOpen(t, img)
			defer fh.Close()
			bs := f.BlockSize()
			if err := f.MkdirAll("/frag", Attr{Mode: 0755}); err != nil {
				t.Fatal(err)
			}
			n := 0
			for ; ; n++ {
				err := f.WriteFile(fmt.Sprintf("/frag/%d", n), bytes.Repeat([]byte{1}, 4*bs), Attr{Mode: 0644})
				if errors.Is(err, ErrNoSpace) || errors.Is(err, ErrNoInodes) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < n; i += 2 {
				if err := f.Remove(fmt.Sprintf("/frag/%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			size := f.FreeBytes() - 64*int64(bs)
			frag := bytes.Repeat([]byte("fragmented!"), int(size)/11)
			if err := f.WriteFile("/fragmented", frag, Attr{Mode: 0644}); err != nil {
				t.Fatal(err)
			}
			got, err := f.ReadFile("/fragmented")
			if err != nil || !bytes.Equal(got, frag) {
				t.Fatalf("reading back fragmented file: %v", err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			coreFsck(t, img)
			if st := coreDebugfs(t, img, "stat /fragmented"); !strings.Contains(st, "(1):") && !strings.Contains(st, "ETB") && !strings.Contains(st, "(DIND)") {
				t.Errorf("expected an extent tree of depth >= 1 or double indirect blocks:\n%.600s", st)
			}
			if got := coreDebugfs(t, img, "cat /fragmented"); got != string(frag) {
				t.Error("debugfs cat /fragmented differs")
			}

			img = coreMkfs(t, 400, 10, coreKinds[kind]...)
			f, fh2 := coreOpen(t, img)
			defer fh2.Close()
			const bigN = 300 << 20
			if err := f.CreateFile("/large", &patReader{n: bigN}, bigN, Attr{Mode: 0600}); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			coreFsck(t, img)
			corePattern(t, img, "/large", bigN)
			os.Remove(img)
		})
	}
}

// TestCoreOneGiB streams a 1 GiB file (a k3s airgap tarball's size) into a sparse 4 GiB
// filesystem, replaces it with a smaller one and checks content and consistency.
func TestCoreOneGiB(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	coreNeed(t, "mkfs.ext4", "e2fsck", "debugfs")
	img := t.TempDir() + "/fs.img"
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "^64bit,^huge_file", img, "4G").CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	const n = 1 << 30
	f, fh := coreOpen(t, img)
	defer fh.Close()
	if err := f.CreateFile("/airgap.tar", &patReader{n: n}, n, Attr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	free := f.FreeBytes()
	if err := f.CreateFile("/airgap.tar", &patReader{n: n / 2}, n/2, Attr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if d := f.FreeBytes() - free; d < n/2 {
		t.Errorf("replacing with half the size freed only %d bytes", d)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	coreFsck(t, img)
	corePattern(t, img, "/airgap.tar", n/2)
}

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

func TestCoreHtreeTwoLevels(t *testing.T) {
	img := coreMkfs(t, 64, 50, "-b", "1024")
	f, fh := coreOpen(t, img)
	defer fh.Close()
	long := strings.Repeat("n", 150)
	for i := 0; i < 6000; i++ {
		if err := f.WriteFile(fmt.Sprintf("/usr/bin/%s-%05d", long, i), nil, Attr{Mode: 0644}); err != nil {
			t.Fatal(i, err)
		}
	}
	for i := 0; i < 6000; i += 7 {
		if err := f.Remove(fmt.Sprintf("/usr/bin/%s-%05d", long, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	coreFsck(t, img)
	if out := coreDebugfs(t, img, "htree /usr/bin"); !strings.Contains(out, "Indirect levels: 1") {
		t.Errorf("expected a two-level htree:\n%.400s", out)
	}
	f2, fh2 := coreOpen(t, img)
	defer fh2.Close()
	ents, err := f2.ReadDir("/usr/bin")
	if err != nil || len(ents) != 51+6000-858 {
		t.Fatalf("ReadDir: %d entries (%v)", len(ents), err)
	}
}

func TestCoreUnsignedHash(t *testing.T) {
	img := coreMkfs(t, 32, 400)
	if out, err := exec.Command("debugfs", "-w", "-R", "ssv flags 2", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs ssv: %v %s", err, out)
	}
	if out, err := exec.Command("e2fsck", "-fyD", img).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck -fyD: %v\n%s", err, out)
		}
	}
	f, fh := coreOpen(t, img)
	defer fh.Close()
	if !f.unsigned {
		t.Fatal("unsigned hash flag not seen")
	}
	for i := 0; i < 1500; i++ {
		if err := f.WriteFile(fmt.Sprintf("/usr/bin/\xe9\xff-%d-caf\xe9", i), []byte("x"), Attr{Mode: 0644}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	coreFsck(t, img)
}

func TestCoreDeterministic(t *testing.T) {
	img := coreMkfs(t, 32, 100)
	img2 := img + ".2"
	if out, err := exec.Command("cp", img, img2).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	var sums [2][]byte
	for k, p := range []string{img, img2} {
		f, fh := coreOpen(t, p)
		for i := 0; i < 50; i++ {
			if err := f.MkdirAll(fmt.Sprintf("/d%d/e", i%7), Attr{Mode: 0755}); err != nil {
				t.Fatal(err)
			}
			if err := f.WriteFile(fmt.Sprintf("/d%d/e/f%d", i%7, i), bytes.Repeat([]byte{byte(i)}, i*1000), Attr{Mode: 0640, UID: uint32(i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.SetXattr("/d1/e/f1", "security.capability", []byte("cap")); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		sums[k], _ = os.ReadFile(p)
	}
	if !bytes.Equal(sums[0], sums[1]) {
		t.Fatal("same operations gave different images")
	}
	coreFsck(t, img)
}

func TestCoreNoSpaceStaysConsistent(t *testing.T) {
	img := coreMkfs(t, 16, 10, "-N", "200")
	f, fh := coreOpen(t, img)
	defer fh.Close()
	err := f.WriteFile("/huge", make([]byte, 20<<20), Attr{Mode: 0644})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("want ErrNoSpace, got %v", err)
	}
	var last error
	for i := 0; i < 1000 && last == nil; i++ {
		last = f.WriteFile(fmt.Sprintf("/f%d", i), []byte("x"), Attr{Mode: 0644})
	}
	if !errors.Is(last, ErrNoInodes) {
		t.Fatalf("want ErrNoInodes, got %v", last)
	}
	if err := f.Remove("/f3"); err != nil {
		t.Fatal(err)
	}
	free := f.FreeBytes()
	err = f.WriteFile("/f3", make([]byte, free), Attr{Mode: 0644})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("want ErrNoSpace for %d bytes, got %v", free, err)
	}
	if err := f.WriteFile("/f3", make([]byte, free-8*int64(f.BlockSize())), Attr{Mode: 0644}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	coreFsck(t, img)
}

func TestCoreRefusals(t *testing.T) {
	for _, c := range []struct{ cmd, want string }{
		{"feature needs_recovery", "recovery"},
		{"ssv state 0", "cleanly"},
		{"feature inline_data", "not supported"},
	} {
		img := coreMkfs(t, 16, 0)
		if out, err := exec.Command("debugfs", "-w", "-R", c.cmd, img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs %s: %v %s", c.cmd, err, out)
		}
		fh, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Open(fh, 0, 16<<20, &Options{})
		fh.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want error mentioning %q", c.cmd, err, c.want)
		}
	}
}

// TestCoreOffset edits a filesystem that starts 1 MiB into a disk image, as a partition does.
func TestCoreOffset(t *testing.T) {
	img := coreMkfs(t, 32, 50, coreKinds["pigen"]...)
	fsb, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	disk := &memDev{b: append(append(bytes.Repeat([]byte{0xAA}, 1<<20), fsb...), bytes.Repeat([]byte{0xBB}, 4096)...)}
	f, err := Open(disk, 1<<20, int64(len(fsb)), &Options{Now: coreNow})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFile("/etc/hostname", []byte("offset\n"), Attr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk.b[:1<<20], bytes.Repeat([]byte{0xAA}, 1<<20)) || !bytes.Equal(disk.b[len(disk.b)-4096:], bytes.Repeat([]byte{0xBB}, 4096)) {
		t.Fatal("bytes outside the partition changed")
	}
	if err := os.WriteFile(img, disk.b[1<<20:len(disk.b)-4096], 0o644); err != nil {
		t.Fatal(err)
	}
	coreFsck(t, img)
	if got := coreDebugfs(t, img, "cat /etc/hostname"); got != "offset\n" {
		t.Errorf("hostname = %q", got)
	}
}

// TestCoreMetaBg edits a filesystem with the meta_bg descriptor layout.
func TestCoreMetaBg(t *testing.T) {
	for _, opts := range [][]string{{"-T", "default", "-O", "^resize_inode,meta_bg"}, {"-T", "small", "-O", "^resize_inode,meta_bg,^metadata_csum"}} {
		img := coreMkfs(t, 300, 200, opts...)
		f, fh := coreOpen(t, img)
		if !f.metaBg() {
			t.Fatal("meta_bg not set")
		}
		big := bytes.Repeat([]byte("meta"), 60<<20/4)
		if err := f.WriteFile("/big", big, Attr{Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 300; i++ {
			if err := f.WriteFile(fmt.Sprintf("/usr/bin/m%d", i), []byte("x"), Attr{Mode: 0o644}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.AllocatedRanges(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		coreFsck(t, img)
		if got := coreDebugfs(t, img, "cat /big"); got != string(big) {
			t.Errorf("%v: /big differs", opts)
		}
	}
}

// TestCoreUseAfterClose: every method fails cleanly on a closed filesystem.
func TestCoreUseAfterClose(t *testing.T) {
	img := coreMkfs(t, 16, 0)
	f, fh := coreOpen(t, img)
	defer fh.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Stat("/etc/hostname"); err == nil {
		t.Error("Stat after Close succeeded")
	}
	if err := f.WriteFile("/x", nil, Attr{}); err == nil {
		t.Error("WriteFile after Close succeeded")
	}
	if _, err := f.AllocatedRanges(); err == nil {
		t.Error("AllocatedRanges after Close succeeded")
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

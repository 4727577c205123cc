package initramfs

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/internal/fixture"
)

func cpioList(t *testing.T, archive []byte, verbose bool) string {
	t.Helper()
	args := []string{"-t", "--quiet"}
	if verbose {
		args = append(args, "-v")
	}
	cmd := exec.Command("cpio", args...)
	cmd.Stdin = bytes.NewReader(archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	return string(out)
}

func TestAdditionWithCpio(t *testing.T) {
	fixture.NeedTools(t, "cpio")
	mods := map[string][]Module{
		"6.6.51+rpt-rpi-v8":   {{"nbd", []byte("nbd v8")}},
		"6.6.51+rpt-rpi-2712": {{"libfoo", []byte("dep")}, {"nbd", []byte("nbd 2712")}},
	}
	add, err := Addition([]byte("\x7fELF init"), mods)
	if err != nil {
		t.Fatal(err)
	}
	if len(add)%512 != 0 {
		t.Errorf("archive is %d bytes, not a multiple of 512", len(add))
	}
	got := strings.Fields(cpioList(t, add, false))
	want := []string{"dev", "dev/console", "proc", "sys", "run", "imgbake", "imgbake/modules",
		"imgbake/modules/6.6.51+rpt-rpi-2712", "imgbake/modules/6.6.51+rpt-rpi-2712/00-libfoo.ko",
		"imgbake/modules/6.6.51+rpt-rpi-2712/01-nbd.ko", "imgbake/modules/6.6.51+rpt-rpi-v8",
		"imgbake/modules/6.6.51+rpt-rpi-v8/00-nbd.ko", "init"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cpio -t (-want +got):\n%s", diff)
	}
	long := cpioList(t, add, true)
	for _, w := range []string{"crw-------", "-rwxr-xr-x"} {
		if !strings.Contains(long, w) {
			t.Errorf("cpio -tv lacks %s:\n%s", w, long)
		}
	}
	// Extract with the real tool and compare contents.
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/console")
	cmd.Dir, cmd.Stdin = dir, bytes.NewReader(add)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "init")); string(b) != "\x7fELF init" {
		t.Errorf("init = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "imgbake/modules/6.6.51+rpt-rpi-2712/01-nbd.ko")); string(b) != "nbd 2712" {
		t.Errorf("module = %q", b)
	}
	if _, err := Addition(nil, nil); err == nil {
		t.Error("Addition without init accepted")
	}
	if _, err := Addition([]byte("x"), map[string][]Module{"../x": nil}); err == nil {
		t.Error("Addition accepted a release with a slash")
	}
}

// kernelUnpack follows the kernel's rules for an initramfs made of several
// archives (init/initramfs.c unpack_to_rootfs): zero bytes are skipped, an
// uncompressed archive starts with "070701" at a 4-byte aligned offset,
// anything else must be a compressed archive. It returns the final files
// (later entries replace earlier ones) and where each archive started.
func kernelUnpack(t *testing.T, b []byte) (map[string]string, []int) {
	t.Helper()
	files := map[string]string{}
	var starts []int
	for off := 0; off < len(b); {
		switch {
		case b[off] == 0:
			off++
		case bytes.HasPrefix(b[off:], []byte("070701")):
			if off%4 != 0 {
				t.Fatalf("uncompressed archive at offset %d is not 4-byte aligned: the kernel would reject it", off)
			}
			starts = append(starts, off)
			off += parseNewc(t, b[off:], files)
		case bytes.HasPrefix(b[off:], []byte{0x1f, 0x8b}):
			starts = append(starts, off)
			r := bytes.NewReader(b[off:])
			zr, err := gzip.NewReader(r)
			if err != nil {
				t.Fatal(err)
			}
			zr.Multistream(false)
			data, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			parseNewc(t, data, files)
			off += len(b[off:]) - r.Len()
		default:
			t.Fatalf("junk at offset %d: %q", off, b[off:min(off+8, len(b))])
		}
	}
	return files, starts
}

// parseNewc reads one newc archive up to its trailer and returns its
// length (without the trailing padding).
func parseNewc(t *testing.T, b []byte, files map[string]string) int {
	t.Helper()
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if len(b) < off+110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad cpio header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		data := align(off + 110 + namesize)
		end := align(data + size)
		if name == "TRAILER!!!" {
			return end
		}
		if mode&0o170000 == modeReg {
			files[name] = string(b[data : data+size])
		}
		off = end
	}
}

func TestConcatFollowsKernelRules(t *testing.T) {
	fixture.NeedTools(t, "cpio", "gzip")
	// The node's own initramfs, as update-initramfs makes it: a gzip'd
	// newc archive with its own /init.
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "init"), []byte("#!/bin/sh\n# initramfs-tools init\n"), 0o755)
	os.MkdirAll(filepath.Join(src, "scripts"), 0o755)
	os.WriteFile(filepath.Join(src, "scripts/local"), []byte("local"), 0o644)
	cmd := exec.Command("sh", "-c", "find . | sort | cpio -o -H newc --quiet | gzip -9n")
	cmd.Dir = src
	node, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	add, err := Addition([]byte("imgbake init"), map[string][]Module{"6.1.0-v8": {{"nbd", []byte("ko")}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, extra := range []int{0, 1, 2, 3} { // every alignment of the node's file
		orig := append(append([]byte(nil), node...), make([]byte, extra)...)
		c := NewConcat(bytes.NewReader(orig), int64(len(orig)), add)
		all, err := c.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(all)) != c.Size() || !bytes.Equal(all[:len(orig)], orig) {
			t.Fatalf("concat does not start with the node's initramfs")
		}
		files, starts := kernelUnpack(t, all)
		if len(starts) != 2 || starts[1]%4 != 0 {
			t.Errorf("archives at %v", starts)
		}
		if files["init"] != "imgbake init" {
			t.Errorf("/init is %q; the addition must replace the node's", files["init"])
		}
		if files["scripts/local"] != "local" || files["imgbake/modules/6.1.0-v8/00-nbd.ko"] != "ko" {
			t.Errorf("files %v", files)
		}
		// The real cpio reads our part.
		if list := cpioList(t, all[starts[1]:], false); !strings.Contains(list, "init\n") {
			t.Errorf("cpio -t of the appended archive: %s", list)
		}
		// Reads at odd offsets match.
		p := make([]byte, 7)
		for _, off := range []int64{0, int64(len(orig)) - 3, int64(len(orig)), c.Size() - 7} {
			if n, err := c.ReadAt(p, off); n != 7 || err != nil || !bytes.Equal(p, all[off:off+7]) {
				t.Errorf("ReadAt(%d) = %d, %v", off, n, err)
			}
		}
		if n, err := c.ReadAt(p, c.Size()-3); n != 3 || err != io.EOF {
			t.Errorf("ReadAt past the end = %d, %v", n, err)
		}
	}
	// No initramfs of its own: the addition alone.
	c := NewConcat(nil, 0, add)
	all, _ := c.Bytes()
	if files, _ := kernelUnpack(t, all); files["init"] != "imgbake init" {
		t.Error("addition alone has no /init")
	}
}

func TestNodeModules(t *testing.T) {
	fixture.NeedTools(t, "mkfs.ext4", "xz", "zstd")
	src := t.TempDir()
	write := func(p, data string) {
		os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(src, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v8 := "lib/modules/6.6.51+rpt-rpi-v8/"
	write(v8+"kernel/drivers/block/nbd.ko", "nbd v8 module")
	write(v8+"kernel/lib/libcrc.ko", "crc")
	write(v8+"kernel/lib/libbase.ko", "base")
	write(v8+"modules.dep", "kernel/drivers/block/nbd.ko: kernel/lib/libcrc.ko kernel/lib/libbase.ko\nkernel/lib/libcrc.ko: kernel/lib/libbase.ko\nkernel/lib/libbase.ko:\n")
	k2712 := "lib/modules/6.6.51+rpt-rpi-2712/"
	write(k2712+"kernel/drivers/block/nbd.ko", "nbd 2712 module")
	write(k2712+"modules.dep", "kernel/drivers/block/nbd.ko.xz:\n")
	deb := "lib/modules/6.1.0-28-arm64/"
	write(deb+"kernel/drivers/block/nbd.ko", "nbd debian module")
	write(deb+"modules.dep", "kernel/drivers/block/nbd.ko.zst:\n")
	write("lib/modules/6.1.0-nodep/x", "no modules.dep here")
	write("lib/modules/6.1.0-builtin/modules.dep", "kernel/fs/ext4/ext4.ko:\n")
	for _, c := range [][]string{{"xz", k2712 + "kernel/drivers/block/nbd.ko"}, {"zstd", "--rm", "-q", deb + "kernel/drivers/block/nbd.ko"}} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	img := filepath.Join(t.TempDir(), "root.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-d", src, img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	root, err := ext4.Open(f, 0, fi.Size(), &ext4.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := NodeModules(root, "nbd")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]Module{
		"6.6.51+rpt-rpi-v8":   {{"libbase", []byte("base")}, {"libcrc", []byte("crc")}, {"nbd", []byte("nbd v8 module")}},
		"6.6.51+rpt-rpi-2712": {{"nbd", []byte("nbd 2712 module")}},
		"6.1.0-28-arm64":      {{"nbd", []byte("nbd debian module")}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NodeModules (-want +got):\n%s", diff)
	}
}

func TestInitMissing(t *testing.T) {
	if _, err := Init("amd64"); err == nil {
		t.Error("Init(amd64) succeeded")
	}
	// Whether or not go generate ran, the answer is either the program or
	// an error saying how to build it.
	data, err := Init("arm64")
	if err != nil && !strings.Contains(err.Error(), "make build") {
		t.Errorf("Init error does not say what to do: %v", err)
	}
	if err == nil && !bytes.HasPrefix(data, []byte("\x7fELF")) {
		t.Error("embedded init is not an ELF program")
	}
}

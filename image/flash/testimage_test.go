package flash

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/internal/fixture"
)

// testDisk is a small Raspberry Pi style disk image: MBR, p1 FAT, p2 ext4,
// both with files, and its .bmap from the filesystems' allocation maps.
type testDisk struct {
	path  string
	size  int64
	parts [2]bmap.ByteRange
	m     *bmap.Map
}

// makeTestDisk builds the image in dir. dataMiB is roughly how much file
// data goes into the ext4 partition.
func makeTestDisk(t testing.TB, dir string, sizeMiB, dataMiB int) *testDisk {
	t.Helper()
	fixture.NeedTools(t, "sfdisk", "mkfs.vfat", "mcopy", "mkfs.ext4", "dumpe2fs")
	d := &testDisk{path: filepath.Join(dir, "disk.img"), size: int64(sizeMiB) << 20}
	d.parts[0] = bmap.ByteRange{Offset: 1 << 20, Length: 16 << 20}
	d.parts[1] = bmap.ByteRange{Offset: 17 << 20, Length: d.size - 17<<20}
	if err := os.WriteFile(d.path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(d.path, d.size); err != nil {
		t.Fatal(err)
	}
	table := "label: dos\nstart=2048, size=32768, type=c\nstart=34816, type=83\n"
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", d.path)
	cmd.Stdin = strings.NewReader(table)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}

	fat := filepath.Join(dir, "fat.img")
	fixture.Run(t, "mkfs.vfat", "-n", "BOOTFS", "-C", fat, strconv.FormatInt(d.parts[0].Length>>10, 10))
	files := filepath.Join(dir, "files")
	os.MkdirAll(filepath.Join(files, "etc", "rancher"), 0o755)
	writeRandom(t, filepath.Join(files, "config.txt"), 3000)
	writeRandom(t, filepath.Join(files, "kernel8.img"), 1<<20+123)
	fixture.Run(t, "mcopy", "-i", fat, filepath.Join(files, "config.txt"), filepath.Join(files, "kernel8.img"), "::")
	for i := range dataMiB {
		writeRandom(t, filepath.Join(files, "etc", "rancher", fmt.Sprintf("blob%d", i)), 1<<20-(i%128)*4096)
	}
	os.WriteFile(filepath.Join(files, "etc", "hostname"), []byte("k5\n"), 0o644)
	ext := filepath.Join(dir, "ext.img")
	fixture.Run(t, "mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", files, ext, strconv.FormatInt(d.parts[1].Length>>10, 10)+"k")

	var ranges []bmap.ByteRange
	ranges = append(ranges, bmap.ByteRange{Offset: 0, Length: 512})
	ranges = append(ranges, shift(fatAllocated(t, fat), d.parts[0].Offset)...)
	ranges = append(ranges, shift(extAllocated(t, ext), d.parts[1].Offset)...)
	copyInto(t, d.path, fat, d.parts[0].Offset)
	copyInto(t, d.path, ext, d.parts[1].Offset)

	f, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if d.m, err = bmap.FromRanges(f, d.size, 0, ranges); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	d.m.WriteTo(&buf)
	if err := os.WriteFile(d.path+".bmap", buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func writeRandom(t testing.TB, path string, n int) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func shift(rs []bmap.ByteRange, by int64) []bmap.ByteRange {
	for i := range rs {
		rs[i].Offset += by
	}
	return rs
}

func copyInto(t testing.TB, dst, src string, off int64) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// fatAllocated returns the FAT filesystem's metadata (boot sector,
// reserved sectors, every FAT, the FAT12/16 root directory: all of it,
// free entries included) and its allocated clusters.
func fatAllocated(t testing.TB, path string) []bmap.ByteRange {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bps := int64(binary.LittleEndian.Uint16(img[11:]))
	spc := int64(img[13])
	reserved := int64(binary.LittleEndian.Uint16(img[14:]))
	nfats := int64(img[16])
	rootEntries := int64(binary.LittleEndian.Uint16(img[17:]))
	fatSectors := int64(binary.LittleEndian.Uint16(img[22:]))
	fat32 := fatSectors == 0
	if fat32 {
		fatSectors = int64(binary.LittleEndian.Uint32(img[36:]))
	}
	fatStart := reserved * bps
	dataStart := fatStart + nfats*fatSectors*bps + (rootEntries*32+bps-1)/bps*bps
	out := []bmap.ByteRange{{Offset: 0, Length: dataStart}}
	clusters := (int64(len(img)) - dataStart) / (spc * bps)
	for c := int64(2); c < clusters+2; c++ {
		var v uint32
		if fat32 {
			v = binary.LittleEndian.Uint32(img[fatStart+4*c:]) & 0x0fffffff
		} else {
			v = uint32(binary.LittleEndian.Uint16(img[fatStart+2*c:]))
		}
		if v != 0 {
			out = append(out, bmap.ByteRange{Offset: dataStart + (c-2)*spc*bps, Length: spc * bps})
		}
	}
	return out
}

// extAllocated returns the ext4 filesystem's in-use blocks (everything but
// the free blocks dumpe2fs lists per group; inode tables, bitmaps and
// journal count as used).
func extAllocated(t testing.TB, path string) []bmap.ByteRange {
	t.Helper()
	out := fixture.Run(t, "dumpe2fs", path)
	var bs, count int64
	free := regexp.MustCompile(`^\s+Free blocks: (.*)$`)
	var freeRanges [][2]int64
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Block size:"); ok {
			bs, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "Block count:"); ok {
			count, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
		m := free.FindStringSubmatch(line)
		if m == nil || strings.TrimSpace(m[1]) == "" {
			continue
		}
		for _, r := range strings.Split(m[1], ",") {
			a, b, ok := strings.Cut(strings.TrimSpace(r), "-")
			lo, _ := strconv.ParseInt(a, 10, 64)
			hi := lo
			if ok {
				hi, _ = strconv.ParseInt(b, 10, 64)
			}
			freeRanges = append(freeRanges, [2]int64{lo, hi})
		}
	}
	if bs == 0 || count == 0 {
		t.Fatalf("dumpe2fs %s: no block size or count in:\n%s", path, out)
	}
	var used []bmap.ByteRange
	next := int64(0)
	for _, fr := range freeRanges {
		if fr[0] > next {
			used = append(used, bmap.ByteRange{Offset: next * bs, Length: (fr[0] - next) * bs})
		}
		next = fr[1] + 1
	}
	if next < count {
		used = append(used, bmap.ByteRange{Offset: next * bs, Length: (count - next) * bs})
	}
	return used
}

// randomTarget returns a target of size bytes full of random bytes: a loop
// device when the machine allows one (root, losetup), else a regular file.
// isFile tells which.
func randomTarget(t testing.TB, dir string, size int64) (path string, isFile bool) {
	t.Helper()
	file := filepath.Join(dir, "target.bin")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	// ChaCha8 is several times faster than crypto/rand for hundreds of MiB.
	var seed [32]byte
	rand.Read(seed[:])
	if _, err := io.CopyN(f, mrand.NewChaCha8(seed), size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		return file, true
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return file, true
	}
	out, err := exec.Command("losetup", "-f", "--show", "-P", file).Output()
	if err != nil {
		t.Logf("losetup refused (%v): using a regular file", err)
		return file, true
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	return loop, false
}

// checkFilesystems extracts the two partitions from the target and runs
// fsck.vfat -n and e2fsck -fn on them.
func checkFilesystems(t testing.TB, target string, d *testDisk) {
	t.Helper()
	fixture.NeedTools(t, "fsck.vfat", "e2fsck")
	f, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	for i, p := range d.parts {
		path := partitionView(t, f, target, p, filepath.Join(dir, fmt.Sprintf("p%d", i+1)))
		tool := []string{"fsck.vfat", "-n", path}
		if i == 1 {
			tool = []string{"e2fsck", "-fn", path}
		}
		if out, err := exec.Command(tool[0], tool[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s on partition %d of the target: %v\n%s", tool[0], i+1, err, out)
		}
	}
}

// equalRanges reports whether a and b hold the same bytes in checks.
func equalRanges(t testing.TB, a, b string, checks []Check) bool {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	for _, c := range checks {
		x, y := make([]byte, c.Length), make([]byte, c.Length)
		if _, err := fa.ReadAt(x, c.Offset); err != nil {
			t.Fatal(err)
		}
		if _, err := fb.ReadAt(y, c.Offset); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			return false
		}
	}
	return true
}

// partitionView returns a path holding partition p of target: a read-only
// loop device at its offset when the machine allows one, else a copy.
func partitionView(t testing.TB, f *os.File, target string, p bmap.ByteRange, copyPath string) string {
	t.Helper()
	if os.Geteuid() == 0 {
		out, err := exec.Command("losetup", "-r", "-f", "--show", "-o", fmt.Sprint(p.Offset),
			"--sizelimit", fmt.Sprint(p.Length), target).Output()
		if err == nil {
			loop := strings.TrimSpace(string(out))
			t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
			return loop
		}
	}
	data := make([]byte, p.Length)
	if _, err := f.ReadAt(data, p.Offset); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return copyPath
}

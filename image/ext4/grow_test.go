package ext4_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/imgbake/imgbake/image/ext4"
)

// Space: Grow (like resize2fs, offline) and AllocatedRanges (what a flash
// or bmap must write).

// growCase is one growth of a fixture kind.
type growCase struct {
	kind    string
	newSize int64
}

// growCases returns the growths to test: 64 MiB -> 300 MiB on every kind,
// and growths that need more group descriptor blocks (taken from the
// reserved GDT blocks) on kinds with 32-byte, 64-byte descriptors and 1 KiB
// blocks (all kinds with IMGBAKE_EXT4_ALL_KINDS=1).
func growCases() []growCase {
	var cs []growCase
	for _, k := range fxKinds {
		cs = append(cs, growCase{k, 300 << 20})
	}
	big := map[string]int64{"pigen": 20 << 30, "default": 10 << 30, "1k": 2 << 30}
	if os.Getenv("IMGBAKE_EXT4_ALL_KINDS") != "" {
		big = map[string]int64{"pigen": 20 << 30, "raspbian-old": 20 << 30, "armbian": 10 << 30,
			"armbian-old": 20 << 30, "default": 10 << 30, "1k": 2 << 30}
	}
	for _, k := range fxKinds {
		if s, ok := big[k]; ok {
			cs = append(cs, growCase{k, s})
		}
	}
	return cs
}

// superField returns a numeric field of dumpe2fs -h ("Block count").
func superField(t testing.TB, img, field string) int64 {
	t.Helper()
	requireTool(t, "dumpe2fs")
	out, err := exec.Command("dumpe2fs", "-h", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs -h: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(field) + `:\s+(\d+)`).FindSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

func TestGrow(t *testing.T) {
	for _, c := range growCases() {
		t.Run(fmt.Sprintf("%s/%dMiB", c.kind, c.newSize>>20), func(t *testing.T) {
			t.Parallel()
			img := makeFixture(t, c.kind, 64)
			oldSize := int64(64 << 20)
			oldGDT := superField(t, img, "Reserved GDT blocks")
			w := newWriter(t, img, c.kind)
			bs := int64(w.f.BlockSize())
			oldBlocks := oldSize / bs
			// Fill the old groups, so what is written after the grow can
			// only go into the new ones.
			const margin = 16
			w.createFile("/before-grow", fxBytes("before", int(w.f.FreeBytes()-margin*bs)), ext4.Attr{Mode: 0o644})
			freeBefore := w.f.FreeBytes()
			if err := os.Truncate(img, c.newSize); err != nil {
				t.Fatal(err)
			}
			w.check("Grow", w.f.Grow(c.newSize))
			if w.f.Size() != c.newSize {
				t.Errorf("Size after Grow: %d, want %d", w.f.Size(), c.newSize)
			}
			if gained := w.f.FreeBytes() - freeBefore; gained < (c.newSize-oldSize)*9/10 || gained > c.newSize-oldSize {
				t.Errorf("Grow gained %d free bytes for %d more bytes", gained, c.newSize-oldSize)
			}
			w.mkdirAll("/after-grow", ext4.Attr{Mode: 0o755})
			w.createFile("/after-grow/big", fxBytes("after", 8<<20+3), ext4.Attr{Mode: 0o644})
			for i := range 20 {
				w.writeFile(fmt.Sprintf("/after-grow/small-%02d", i), fxBytes(fmt.Sprint("s", i), i*300), ext4.Attr{Mode: 0o600})
			}
			w.close()
			if got := superField(t, img, "Block count"); got != c.newSize/bs {
				t.Errorf("Block count %d, want %d", got, c.newSize/bs)
			}
			t.Logf("reserved GDT blocks %d -> %d", oldGDT, superField(t, img, "Reserved GDT blocks"))
			verifyModel(t, img, w.m)
			inOld := 0
			for _, b := range debugfsBlocks(t, img, "/after-grow/big") {
				if int64(b) < oldBlocks {
					inOld++
				}
			}
			if inOld > margin {
				t.Errorf("/after-grow/big: %d blocks in the old groups, which had %d free", inOld, margin)
			}
			growKernelCheck(t, img, oldSize, c.newSize, w.m)
		})
	}
}

// TestAllocatedRanges copies only the ranges AllocatedRanges names into an
// empty image, as a flash or bmap copy does: the copy must be e2fsck-clean
// and hold exactly the same tree.
func TestAllocatedRanges(t *testing.T) {
	for _, kind := range []string{"pigen", "1k", "default"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			img := makeFixture(t, kind, 64)
			w := newWriter(t, img, kind)
			writeHtreeChanges(t, w)
			w.createFile("/opt/new.bin", fxBytes("new", 7<<20), ext4.Attr{Mode: 0o644})
			w.remove("/usr/lib/firmware/blob.bin")
			w.check("Sync", w.f.Sync())
			ranges, err := w.f.AllocatedRanges()
			w.check("AllocatedRanges", err)
			size := w.f.Size()
			w.close()
			src, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			dst := make([]byte, len(src))
			var used, last int64
			for i, r := range ranges {
				if r.Len <= 0 || r.Off < last || (i > 0 && r.Off == last) || r.Off+r.Len > size {
					t.Fatalf("range %d %+v: not sorted, merged and inside the %d-byte filesystem", i, r, size)
				}
				copy(dst[r.Off:r.Off+r.Len], src[r.Off:r.Off+r.Len])
				used += r.Len
				last = r.Off + r.Len
			}
			copyImg := img + ".ranges"
			if err := os.WriteFile(copyImg, dst, 0o644); err != nil {
				t.Fatal(err)
			}
			verifyModel(t, copyImg, w.m)
			free := superField(t, img, "Free blocks") * int64(w.f.BlockSize())
			t.Logf("%d ranges, %d bytes of %d; %d free", len(ranges), used, size, free)
			if used+free > size+size/50 {
				t.Errorf("ranges cover %d bytes but %d of %d are free: free blocks are being copied", used, free, size)
			}
		})
	}
}

// TestGrowBeyondReserved grows a pi-gen filesystem (3 reserved GDT blocks,
// enough for 64 GiB) to 100 GiB: Grow must either do it correctly or refuse
// and leave the filesystem as it was.
func TestGrowBeyondReserved(t *testing.T) {
	img := makeFixture(t, "pigen", 64)
	w := newWriter(t, img, "pigen")
	const newSize = 100 << 30
	if err := os.Truncate(img, newSize); err != nil {
		t.Fatal(err)
	}
	err := w.f.Grow(newSize)
	t.Logf("Grow to 100 GiB: %v", err)
	if err == nil && w.f.Size() != newSize {
		t.Errorf("Size %d after a successful Grow to %d", w.f.Size(), int64(newSize))
	}
	if err != nil && w.f.Size() != 64<<20 {
		t.Errorf("Size %d after a failed Grow", w.f.Size())
	}
	w.writeFile("/etc/after", []byte("written after the grow attempt\n"), ext4.Attr{Mode: 0o644})
	w.close()
	want := int64(newSize)
	if err != nil {
		want = 64 << 20
	}
	if got := superField(t, img, "Block count") * 4096; got != want {
		t.Errorf("filesystem is %d bytes, want %d", got, want)
	}
	verifyModel(t, img, w.m)
}

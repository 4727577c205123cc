package ext4

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestCoreGrowAndRanges(t *testing.T) {
	for kind, opts := range coreKinds {
		t.Run(kind, func(t *testing.T) {
			img := coreMkfs(t, 40, 100, opts...)
			if err := os.Truncate(img, 300<<20+12345); err != nil {
				t.Fatal(err)
			}
			f, fh := coreOpen(t, img)
			defer fh.Close()
			if err := f.Grow(300<<20 + 12345); err != nil {
				t.Fatal(err)
			}
			big := bytes.Repeat([]byte("grow"), 60<<20/4)
			if err := f.WriteFile("/big", big, Attr{Mode: 0644}); err != nil {
				t.Fatal(err)
			}
			rs, err := f.AllocatedRanges()
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			coreFsck(t, img)
			if got := coreDebugfs(t, img, "cat /big"); got != string(big) {
				t.Errorf("/big differs after grow")
			}
			// every byte outside the ranges must be zero in a fresh sparse image
			data, _ := os.ReadFile(img)
			var total int64
			prev := int64(0)
			for _, r := range rs {
				if r.Off < prev {
					t.Fatalf("ranges not sorted/merged at %d", r.Off)
				}
				if !isZero(data[prev:r.Off]) {
					t.Errorf("non-zero data in unallocated %d..%d", prev, r.Off)
				}
				prev = r.Off + r.Len
				total += r.Len
			}
			sb := coreDebugfs(t, img, "stats")
			if !strings.Contains(sb, "Block count:") {
				t.Fatal(sb)
			}
			t.Logf("%s: %d ranges, %d MiB allocated", kind, len(rs), total>>20)
		})
	}
}

// TestCoreGrowGDT grows a 4 KiB-block filesystem far enough that the descriptor table takes
// reserved GDT blocks (32- and 64-byte descriptors, with and without checksums).
func TestCoreGrowGDT(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	for _, kind := range []string{"pigen", "default", "nocsum"} {
		t.Run(kind, func(t *testing.T) {
			img := coreMkfs(t, 100, 10, coreKinds[kind]...)
			const size = 24 << 30
			if err := os.Truncate(img, size); err != nil {
				t.Fatal(err)
			}
			f, fh := coreOpen(t, img)
			defer fh.Close()
			before := f.descBlks
			if err := f.Grow(size); err != nil {
				t.Fatal(err)
			}
			if f.descBlks <= before {
				t.Fatalf("descriptor blocks %d -> %d: GDT did not grow", before, f.descBlks)
			}
			if err := f.WriteFile("/after", []byte("grown"), Attr{Mode: 0644}); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			coreFsck(t, img)
			if got := coreDebugfs(t, img, "cat /after"); got != "grown" {
				t.Errorf("cat /after = %q", got)
			}
		})
	}
}

// TestCoreGrowOverGarbage grows into space that holds old bytes (not zeros), then uses
// inodes and blocks of the new groups: nothing may depend on the new space being zero.
func TestCoreGrowOverGarbage(t *testing.T) {
	for _, kind := range []string{"pigen", "nocsum", "1k"} {
		t.Run(kind, func(t *testing.T) {
			img := coreMkfs(t, 48, 10, append([]string{"-N", "64"}, coreKinds[kind]...)...)
			fh, err := os.OpenFile(img, os.O_RDWR|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fh.Write(bytes.Repeat([]byte{0x5A}, 200<<20)); err != nil {
				t.Fatal(err)
			}
			fh.Close()
			f, fh := coreOpen(t, img)
			defer fh.Close()
			if err := f.Grow(248 << 20); err != nil {
				t.Fatal(err)
			}
			n := 0
			for ; n < 300; n++ {
				err := f.WriteFile("/f"+strconv.Itoa(n), bytes.Repeat([]byte{byte(n)}, 70000), Attr{Mode: 0o644})
				if errors.Is(err, ErrNoInodes) {
					break
				}
				if err != nil {
					t.Fatal(n, err)
				}
			}
			if n < 80 {
				t.Fatalf("only %d files: the new groups' inodes were not used", n)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			coreFsck(t, img)
			last := n - 1
			if got := coreDebugfs(t, img, "cat /f"+strconv.Itoa(last)); got != string(bytes.Repeat([]byte{byte(last)}, 70000)) {
				t.Errorf("/f%d differs", last)
			}
		})
	}
}

package image

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/internal/fixture"
)

// BenchmarkCheckAllocation measures the once-per-base block bitmap cross
// check against the reference, e2fsck -fn on the same partition (which
// checks much more; the ratio says what the check costs a first build).
// IMGBAKE_BENCH_BASE names a raw base image (e.g. one made by
// e2e/mkbase.sh); default the Raspberry Pi OS fixture.
func BenchmarkCheckAllocation(b *testing.B) {
	fixture.RequireTools(b, "e2fsck")
	img := os.Getenv("IMGBAKE_BENCH_BASE")
	if img == "" {
		img = fixture.Cached(b, fixture.RaspiOSBookwormArm64)
	}
	info, err := Inspect(img)
	if err != nil {
		b.Fatal(err)
	}
	rp, _ := info.Partition(info.RootPartition)
	b.Run("imgbake", func(b *testing.B) {
		f, err := os.Open(img)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		for b.Loop() {
			root, err := ext4.Open(f, rp.Start, rp.Size, &ext4.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			if err := root.CheckAllocation(context.Background()); err != nil {
				b.Fatal(err)
			}
			root.Close()
		}
	})
	b.Run("e2fsck-fn", func(b *testing.B) {
		for b.Loop() {
			if out, err := exec.Command("e2fsck", "-fn", partDev(img, rp)).CombinedOutput(); err != nil {
				b.Fatalf("e2fsck: %v\n%s", err, out)
			}
		}
	})
}

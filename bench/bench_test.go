// Package bench measures imgbake's build speed. bench/build.sh drives the
// real binary; the Go benchmark below measures the image layer in-process.
package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/fixture"
)

// TestMakeBase exports a fixture base image for bench/build.sh: with
// IMGBAKE_BENCH_BASE=path it writes the Raspberry Pi OS Bookworm arm64
// fixture to path, grown (partition and root filesystem) to
// IMGBAKE_BENCH_SIZE bytes when that is set, and a stand-in arm64 k3s
// binary to path.k3s.
func TestMakeBase(t *testing.T) {
	out := os.Getenv("IMGBAKE_BENCH_BASE")
	if out == "" {
		t.Skip("set IMGBAKE_BENCH_BASE to export a base image (bench/build.sh does)")
	}
	img := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	if size, _ := strconv.ParseInt(os.Getenv("IMGBAKE_BENCH_SIZE"), 10, 64); size > 0 {
		base, err := image.PrepareBase(context.Background(), img, "", image.PrepareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := image.Build(context.Background(), image.BuildOptions{Base: base, Plan: &plan.Plan{}, Size: size,
			Output: filepath.Join(t.TempDir(), "grown.img"), Epoch: time.Unix(1700000000, 0)})
		if err != nil {
			t.Fatal(err)
		}
		img = res.Image
	}
	if b, err := exec.Command("cp", "--sparse=always", img, out).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if b, err := exec.Command("cp", fixture.Binary(t, "arm64"), out+".k3s").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if err := os.Chmod(out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkBuild builds nodes from one .xz base in-process: the first
// iteration decompresses into an empty cache, the rest reuse it. It
// reports the first node's time and the mean of the others next to `xz
// -dc` of the base and `cp --sparse=always` of the decompressed image.
func BenchmarkBuild(b *testing.B) {
	fixture.RequireTools(b, "xz")
	xz := fixture.Compress(b, fixture.Cached(b, fixture.RaspiOSBookwormArm64), "xz")
	dir := b.TempDir()
	xzStart := time.Now()
	if out, err := exec.Command("sh", "-c", `xz -dc "$1" > "$2"`, "sh", xz, filepath.Join(dir, "xzdc.img")).CombinedOutput(); err != nil {
		b.Fatalf("xz -dc: %v\n%s", err, out)
	}
	xzTime := time.Since(xzStart)
	k3s := fixture.Binary(b, "arm64")
	p := &plan.Plan{Entries: []plan.Entry{
		{Part: plan.Root, Path: "/usr/local/bin/k3s", Kind: plan.File, Mode: 0o755, Source: k3s},
		{Part: plan.Root, Path: "/etc/hostname", Kind: plan.File, Mode: 0o644, Data: []byte("k5\n")},
		{Part: plan.Boot, Path: "/imgbake.txt", Kind: plan.File, Data: []byte("k5\n")},
	}}
	cache := filepath.Join(dir, "cache")
	var first, rest time.Duration
	var base *image.Base
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		var err error
		base, err = image.PrepareBase(context.Background(), xz, cache, image.PrepareOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := image.Build(context.Background(), image.BuildOptions{Base: base, Plan: p,
			Output: filepath.Join(dir, "out", "k"+strconv.Itoa(i)+".img"), Epoch: time.Unix(1700000000, 0)}); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			first = time.Since(start)
		} else {
			rest += time.Since(start)
		}
	}
	b.StopTimer()
	cpStart := time.Now()
	if out, err := exec.Command("cp", "--sparse=always", base.Path, filepath.Join(dir, "cp.img")).CombinedOutput(); err != nil {
		b.Fatalf("cp: %v\n%s", err, out)
	}
	cpTime := time.Since(cpStart)
	b.ReportMetric(first.Seconds()/xzTime.Seconds(), "first/xz-dc")
	if b.N > 1 {
		b.ReportMetric(rest.Seconds()/float64(b.N-1)/cpTime.Seconds(), "extra/cp")
	}
}

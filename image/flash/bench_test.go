package flash

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/internal/fixture"
)

// BenchmarkFlash flashes a 2 GiB image holding about 600 MiB of data onto
// a loop device (a preallocated file without root) with `dd bs=4M
// conv=fsync`, `bmaptool copy` and Write (with and without reading back),
// and reports the times and ratios. Run it alone:
//
//	go test ./image/flash -run '^$' -bench Flash -benchtime 1x
//
// The goal is imgbake <= 0.5x dd and <= 1.0x bmaptool.
func BenchmarkFlash(b *testing.B) {
	fixture.NeedTools(b, "dd", "bmaptool", "fallocate")
	dir := b.TempDir()
	d := benchDisk(b, dir)
	b.Logf("image: %d MiB, %d MiB mapped in %d ranges", d.size>>20, d.m.MappedBytes()>>20, len(d.m.Ranges))
	tf := filepath.Join(dir, "target")
	fixture.Run(b, "fallocate", "-l", fmt.Sprint(d.size), tf)
	target, isFile := tf, true
	if os.Geteuid() == 0 {
		if out, err := exec.Command("losetup", "-f", "--show", tf).Output(); err == nil {
			target, isFile = strings.TrimSpace(string(out)), false
			b.Cleanup(func() { exec.Command("losetup", "-d", target).Run() })
		}
	}
	b.Logf("target: %s", target)
	fixture.Run(b, "cat", d.path) // warm the page cache for every contender alike
	flashOnce := func(noVerify bool) {
		src, err := OpenSource(d.path)
		if err != nil {
			b.Fatal(err)
		}
		defer src.Close()
		dst, err := OpenTarget(target, TargetOptions{AllowFile: isFile})
		if err != nil {
			b.Fatal(err)
		}
		defer dst.Close()
		if _, err := Write(context.Background(), src, dst, Options{Map: d.m, NoVerify: noVerify}); err != nil {
			b.Fatal(err)
		}
	}
	contenders := []func(){
		func() { fixture.Run(b, "dd", "if="+d.path, "of="+target, "bs=4M", "conv=fsync,notrunc", "status=none") },
		func() { fixture.Run(b, "bmaptool", "-q", "copy", "--bmap", d.path+".bmap", d.path, target) },
		func() { flashOnce(false) },
		func() { flashOnce(true) },
	}
	for i := 0; i < b.N; i++ {
		// Rounds interleave the contenders so that load from other
		// processes hits them alike; each keeps its best time.
		best := make([]time.Duration, len(contenders))
		for round := range 3 {
			for j, f := range contenders {
				start := time.Now()
				f()
				if t := time.Since(start); round == 0 || t < best[j] {
					best[j] = t
				}
			}
		}
		dd, bt, ours, oursNoVerify := best[0], best[1], best[2], best[3]
		b.ReportMetric(dd.Seconds(), "dd-s")
		b.ReportMetric(bt.Seconds(), "bmaptool-s")
		b.ReportMetric(ours.Seconds(), "imgbake-s")
		b.ReportMetric(oursNoVerify.Seconds(), "imgbake-noverify-s")
		b.ReportMetric(ours.Seconds()/dd.Seconds(), "x-dd")
		b.ReportMetric(ours.Seconds()/bt.Seconds(), "x-bmaptool")
		b.Logf("dd %v, bmaptool copy %v, imgbake %v (%v without read-back): %.2fx dd, %.2fx bmaptool",
			dd, bt, ours, oursNoVerify, ours.Seconds()/dd.Seconds(), ours.Seconds()/bt.Seconds())
	}
	checkFilesystems(b, target, d)
}

// benchDisk builds the benchmark image, or reuses the one in
// $IMGBAKE_BENCH_CACHE (a directory) from an earlier run.
func benchDisk(b *testing.B, dir string) *testDisk {
	cache := os.Getenv("IMGBAKE_BENCH_CACHE")
	if cache == "" {
		return makeTestDisk(b, dir, 2048, 600)
	}
	img := filepath.Join(cache, "disk.img")
	if _, err := os.Stat(img + ".bmap"); err != nil {
		os.MkdirAll(cache, 0o755)
		return makeTestDisk(b, cache, 2048, 600)
	}
	f, err := os.Open(img + ".bmap")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	m, err := bmap.Parse(f)
	if err != nil {
		b.Fatal(err)
	}
	d := &testDisk{path: img, size: m.ImageSize, m: m}
	d.parts[0] = bmap.ByteRange{Offset: 1 << 20, Length: 16 << 20}
	d.parts[1] = bmap.ByteRange{Offset: 17 << 20, Length: d.size - 17<<20}
	return d
}
